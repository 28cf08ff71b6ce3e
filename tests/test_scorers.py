import jax
import numpy as np
import pytest

from oodgen.errors import OodgenError
from oodgen.likelihoods import bits_per_dim
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
