import jax
import numpy as np
import pytest

from oodgen.errors import OodgenError
from oodgen.models.likelihoods import bits_per_dim
from oodgen.models.vae import VAEModel
from oodgen.scorers import build_scorer
from oodgen.scorers.likelihood import LikelihoodScorer
from oodgen.sharding import example_keys

MODEL = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,))


@pytest.fixture(scope="module")
def params():
    return MODEL.init(jax.random.key(0), np.zeros((2, 8, 8, 1), np.uint8))


def test_likelihood_score_is_negative_bound_in_bits_per_dim(params):
    images = np.random.default_rng(0).integers(0, 256, (11, 8, 8, 1)).astype(np.uint8)
    scorer = LikelihoodScorer(MODEL, num_samples=4, batch_size=4, seed=7)
    scores = scorer.score(scorer.fit(params, images), images)
    keys = example_keys(jax.random.key(7), np.arange(11))
    expected = bits_per_dim(-MODEL.log_prob(params, images, keys, 4), 64)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


@pytest.mark.parametrize("images,match", [
    (np.full((2, 8, 8, 1), np.nan), "NaN"),
    (np.zeros((2, 8, 8, 3), np.uint8), "expects"),
    (np.zeros((0, 8, 8, 1), np.uint8), "empty"),
])
def test_scorer_refuses_bad_images(params, images, match):
    with pytest.raises(OodgenError, match=match):
        LikelihoodScorer(MODEL).score(params, images)


def test_unknown_scorer_name():
    with pytest.raises(OodgenError, match="unknown scorer"):
        build_scorer("nope", MODEL, None)


def test_gradient_norm_scorer_features_groups_and_densities(params):
    from oodgen.features.gradients import group_grad_sq_norms
    from oodgen.scorers.gradients import GradientNormScorer

    rng = np.random.default_rng(1)
    fit_images = rng.integers(0, 256, (24, 8, 8, 1)).astype(np.uint8)
    test_images = rng.integers(0, 256, (7, 8, 8, 1)).astype(np.uint8)
    scorer = GradientNormScorer(MODEL, batch_size=4, seed=3, densities=("gaussian_log", "chi_square", "gmm"))
    features = scorer.features(params, test_images)
    keys = example_keys(jax.random.key(3), np.arange(7))
    direct = group_grad_sq_norms(MODEL.loss, params, jax.numpy.asarray(test_images), keys)
    np.testing.assert_allclose(features, direct, rtol=2e-4, atol=1e-9)
    state = scorer.fit(params, fit_images)
    scores = scorer.score_all(state, test_images)
    assert sorted(scores) == ["grad_chi_square", "grad_gaussian_log", "grad_gmm"]
    assert all(v.shape == (7,) and np.all(np.isfinite(v)) for v in scores.values())

    grouped = GradientNormScorer(MODEL, batch_size=4, seed=3, group_size=2, densities=("gaussian_log",))
    group_features = grouped.features(params, test_images)   # 7 images, shuffled by seed 3: the last group is one image twice
    order = np.random.default_rng(3).permutation(7)
    padded = np.concatenate([test_images[order], test_images[order[-1:]]])
    keys8 = example_keys(jax.random.key(3), np.arange(8))
    rows = np.repeat(group_grad_sq_norms(MODEL.loss, params, jax.numpy.asarray(padded), keys8, 2), 2, axis=0)[:7]
    expected = np.empty_like(rows)
    expected[order] = rows
    np.testing.assert_allclose(group_features, expected, rtol=2e-4, atol=1e-9)
    with pytest.raises(OodgenError, match="group_size"):
        GradientNormScorer(MODEL, batch_size=5, group_size=2)
    with pytest.raises(OodgenError, match="kernel 'fastest'"):
        GradientNormScorer(MODEL, kernel="fastest")
