"""Feature composition (`composed`): concatenated scorer features under one density, by config alone.

Every expected value is computed independently: features from each scorer (or the model) separately,
np.concatenate, then the density fitted with scikit-learn / scipy / numpy directly.
"""

import json
import warnings

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from oodgen.config import load_config_file
from oodgen.errors import OodgenError
from oodgen.evaluation.harness import evaluate
from oodgen.models.likelihoods import bits_per_dim
from oodgen.models.hvae import HVAEModel
from oodgen.models.vae import VAEModel
from oodgen.scorers import build_scorer
from oodgen.scorers.composed import FEATURES, drop_unusable
from oodgen.scorers.gradients import FEATURE_FLOOR, GradientNormScorer
from oodgen.scorers.hierarchical import KLPerLevelScorer
from oodgen.sharding import example_keys
from oodgen.training.loop import train

VAE = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,))
HVAE = HVAEModel(image_shape=(8, 8, 1), width=8, dense_width=16, latent_channels=(2,), latent_units=(4, 3))
SEED, SAMPLES = 3, 2


@pytest.fixture(autouse=True)
def _single_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (48, 8, 8, 1)).astype(np.uint8), rng.integers(0, 256, (9, 8, 8, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def vae_params():
    return jax.jit(VAE.init)(jax.random.key(0), np.zeros((2, 8, 8, 1), np.uint8))


def one_at_a_time(fn, images: np.ndarray) -> np.ndarray:
    """fn(one image [1, H, W, C], its key [1]) for each image i, keyed by fold_in(key(SEED), i), stacked."""
    fn = jax.jit(fn)
    keys = example_keys(jax.random.key(SEED), np.arange(len(images)))
    return np.concatenate([np.asarray(fn(images[i:i + 1], keys[i:i + 1]), np.float64) for i in range(len(images))])


def eval_config(**composed) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        num_samples=SAMPLES, batch_size=8, seed=SEED, composed=composed,
        grad_norms=dict(densities=("gaussian_log",), method="vmap", chunk_size=8)))


def composed_scores(params, fit, test, **composed) -> tuple[str, np.ndarray]:
    scorer = build_scorer("composed", VAE, eval_config(**composed))
    return scorer.name, scorer.score(scorer.fit(params, fit), test)


def nll_bpd(params, images: np.ndarray) -> np.ndarray:
    """−log p / (D ln 2) straight from the model, example i keyed by fold_in(key(SEED), i): f64[N]."""
    return bits_per_dim(-one_at_a_time(lambda x, k: VAE.log_prob(params, x, k, SAMPLES), images), 64)


def grad_features(params, images: np.ndarray) -> np.ndarray:
    """The grad_norms scorer's features on their own, floored as its densities see them: f64[N, T]."""
    scorer = GradientNormScorer(VAE, batch_size=8, seed=SEED, method="vmap", densities=("gaussian_log",))
    return np.maximum(scorer.features(params, images), FEATURE_FLOOR).astype(np.float64)


def test_likelihood_and_gradient_norms_under_gmm_knn_and_chi_square(vae_params, images):
    fit, test = images
    x_fit = np.concatenate([nll_bpd(vae_params, fit)[:, None], grad_features(vae_params, fit)], axis=1)
    x_test = np.concatenate([nll_bpd(vae_params, test)[:, None], grad_features(vae_params, test)], axis=1)
    assert np.all(x_fit.std(axis=0) > 0)  # nothing to drop here
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    z_fit, z_test = (x_fit - mean) / std, (x_test - mean) / std

    # gmm: components (1, 2, 4, 8) by 5-fold cross-validated likelihood (seed 0, ties to fewer), then refit
    splits = list(KFold(5, shuffle=True, random_state=0).split(z_fit))
    mixture = lambda k: GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=0)  # noqa: E731
    cv = {k: np.mean(np.concatenate([mixture(k).fit(z_fit[a]).score_samples(z_fit[b]) for a, b in splits]))
          for k in (1, 2, 4, 8)}
    best = max(cv, key=lambda k: (cv[k], -k))
    expected = -(mixture(best).fit(z_fit).score_samples(z_test) - np.log(std).sum())
    name, scores = composed_scores(vae_params, fit, test, features=("log_likelihood", "grad_norms"), density="gmm")
    assert name == "composed_gmm_log_likelihood+grad_norms" and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=2e-4, atol=2e-3)

    # knn (k = 5) on the standardised features (standardised by the composition first: a no-op for knn);
    # the column order follows `features`, which does not change distances
    expected = NearestNeighbors(n_neighbors=5).fit(z_fit).kneighbors(z_test)[0][:, -1]
    name, scores = composed_scores(vae_params, fit, test, features=("grad_norms", "log_likelihood"), density="knn",
                                   standardize=True, name="mine")
    assert name == "mine"
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)

    # chi_square: f_l ≈ s_l χ²_{k_l}, k_l = the tensor's size, s_l = mean / k_l, for the gradient norms
    sizes = np.array([leaf.size for leaf in jax.tree.leaves(vae_params)], np.float64)
    g_fit, g_test = x_fit[:, 1:], x_test[:, 1:]
    expected = -sum(stats.chi2(df=k, scale=s).logpdf(g_test[:, l])
                    for l, (k, s) in enumerate(zip(sizes, g_fit.mean(axis=0) / sizes)))
    _, scores = composed_scores(vae_params, fit, test, features=("grad_norms",), density="chi_square")
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


def test_one_feature_log_likelihood_under_gaussian_log_is_a_z_score(vae_params, images):
    fit, test = images
    log_fit, log_test = np.log(nll_bpd(vae_params, fit)), np.log(nll_bpd(vae_params, test))
    mu, sigma = log_fit.mean(), log_fit.std()
    expected = 0.5 * ((log_test - mu) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
    name, scores = composed_scores(vae_params, fit, test, features="log_likelihood", density="gaussian_log")
    assert name == "composed_gaussian_log_log_likelihood"
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_hvae_kl_features_equal_elbo_terms(images):
    fit, test = images
    shapes = jax.eval_shape(HVAE.init, jax.random.key(1), fit[:2])   # random parameters: compiling init takes ~13 s
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda leaf: (0.3 * rng.standard_normal(leaf.shape)).astype(leaf.dtype), shapes)
    kl_of = lambda x: one_at_a_time(lambda y, k: HVAE.elbo_terms(params, y, k)[1].T, x)  # noqa: E731
    scorer = KLPerLevelScorer(HVAE, num_samples=SAMPLES, batch_size=8, seed=SEED)
    kl = scorer.features(params, test)   # 9 images in batches of 8: a padded last batch
    np.testing.assert_allclose(kl, kl_of(test), rtol=1e-5, atol=1e-6)
    assert kl.shape == (9, 3) and np.all(kl >= 0) and scorer.feature_names(params) == ("z1", "z2", "z3")
    scores = scorer.score_all(params, test)
    assert sorted(scores) == ["kl_z1", "kl_z2", "kl_z3"]
    np.testing.assert_allclose(scores["kl_z2"], kl_of(test)[:, 1], rtol=1e-5, atol=1e-6)

    # per-level KLs alone under knn: the distance to the 5th neighbour among the standardised fit KLs
    composed = build_scorer("composed", HVAE, eval_config(features=("kl_per_level",), density="knn"))
    state = composed.fit(params, fit)
    assert state.feature_names == ("kl_per_level/z1", "kl_per_level/z2", "kl_per_level/z3")
    kl_fit, kl_test = np.maximum(kl_of(fit), FEATURE_FLOOR), np.maximum(kl_of(test), FEATURE_FLOOR)
    np.testing.assert_allclose(composed.features_of(state, test), kl_test, rtol=1e-5, atol=1e-6)
    mean, std = kl_fit.mean(axis=0), kl_fit.std(axis=0)
    expected = NearestNeighbors(n_neighbors=5).fit((kl_fit - mean) / std).kneighbors((kl_test - mean) / std)[0][:, -1]
    np.testing.assert_allclose(composed.score(state, test), expected, rtol=1e-3, atol=1e-4)  # f32 KLs, small std


def test_unusable_features_are_dropped_with_a_warning_naming_them():
    x = np.stack([np.arange(6.0), np.full(6, 2.0), np.arange(6.0) - 3.0, [1, 2, np.nan, 4, 5, 6]], axis=1)
    names = ["a/0", "a/const", "b/signed", "c/nan"]
    with pytest.warns(UserWarning, match=r"1 with non-finite values \[c/nan\]; 1 with zero variance \[a/const\]"):
        assert list(drop_unusable(x, names, "composed", positive=False)) == [0, 2]
    with pytest.warns(UserWarning, match=r"1 with values <= 0 \[b/signed\]; 1 with zero variance \[a/const\]"):
        assert list(drop_unusable(x + np.array([1, 0, 0, 0]), names, "composed", positive=True)) == [0]
    with pytest.raises(OodgenError, match="no usable feature"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drop_unusable(x[:, [1, 3]], names[1::2], "composed", positive=False)


@pytest.mark.parametrize("composed,match", [
    (dict(features=()), r"features is empty.*\['background_ratio'"),
    (dict(features=("kl_per_level", "nope")), r"unknown feature 'nope'.*choose from \['background_ratio'"),
    (dict(features=("composed",)), r"scorer 'composed' has no features to compose.*'grad_norms'"),
    (dict(features=("grad_norms", "grad_norms")), "lists a feature twice"),
    (dict(features=("grad_norms",), density="gauss"), r"unknown density 'gauss'.*\['chi_square', 'gaussian_log', "
                                                       r"'gmm', 'knn'\]"),
    (dict(features=("log_likelihood",), density="chi_square"), "needs degrees of freedom.*'log_likelihood'"),
    (dict(features=("log_likelihood",), density="gaussian_log", standardize=True), "needs positive"),
    (dict(features=("kl_per_level",)), "composed feature 'kl_per_level'.*kl_per_level needs per-level latent terms and L\^\{>k\} bounds \(a hierarchical VAE\); this vae"),
    (dict(features=("grad_norms",), colour="red"), "bad settings in config.eval.composed"),
    (dict(features=("grad_norms",), density_options={"gmm": {"fold": 3}}),
     r"config.eval.composed.density_options.gmm: unknown option\(s\) \['fold'\]; its options are \['n_components'"),
    (dict(features=("grad_norms",), density_options={"mixture": {}}),
     r"config.eval.composed.density_options: unknown density 'mixture'; choose from \['chi_square'"),
    (dict(features=("grad_norms",), density="chi_square", density_options={"chi_square": {"dofs": [3]}}),
     r"density_options.chi_square: option\(s\) \['dofs'\] are set by the scorer itself"),
    (dict(features=("grad_norms",), density="knn", density_options={"knn": {"k": 0}}),
     r"density_options.knn: k must be a positive int"),
])
def test_bad_config_is_a_one_line_error_before_any_work(composed, match):
    with pytest.raises(OodgenError, match=match) as info:
        build_scorer("composed", VAE, eval_config(**composed))   # the VAE: no per-level KLs
    assert "\n" not in str(info.value)


def test_evaluate_writes_the_composed_score_and_bad_config_writes_nothing(tmp_path):
    config = load_config_file("configs/vae_fashion_mnist.py:tiny")
    config.eval.scorers = ["composed"]
    config.eval.composed.features = ("log_likelihood", "typicality")  # typicality is fitted (its Ĥ) first
    config.eval.composed.density = "gmm"
    train(config, tmp_path / "run")
    results, report = evaluate(config, tmp_path / "run", outdir=tmp_path / "eval")
    name = "composed_gmm_log_likelihood+typicality"
    assert sorted(results[name]) == sorted(config.eval.ood) and f"| {name} | noise |" in report
    scores = np.load(tmp_path / "eval" / "scores.npz")
    for spec in (config.data.test, *config.eval.ood):
        assert scores[f"{name}/{spec}"].shape == (config.eval.max_examples,)
        assert np.all(np.isfinite(scores[f"{name}/{spec}"]))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert sorted(metrics[name]) == sorted(config.eval.ood) and 0.0 <= metrics[name]["noise"]["auroc"] <= 1.0
    assert (tmp_path / "eval" / "plots" / f"roc_{name}.png").is_file()

    config.eval.composed.name = "nll_knn"   # a second composition, under its own name
    config.eval.composed.features = ("log_likelihood",)
    config.eval.composed.density = "knn"
    results, _ = evaluate(config, tmp_path / "run", outdir=tmp_path / "eval2")
    assert "nll_knn" in results and np.load(tmp_path / "eval2" / "scores.npz")["nll_knn/noise"].shape == (48,)

    config.eval.composed.features = ("log_likelihood", "typo")
    with pytest.raises(OodgenError, match="unknown feature 'typo'"):
        evaluate(config, tmp_path / "run", outdir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_every_feature_names_a_registered_scorer():
    from oodgen.scorers import SCORERS
    assert {source.scorer for source in FEATURES.values()} <= set(SCORERS) - {"composed"}


def test_parts_and_density_fit_on_disjoint_halves(vae_params, images):
    """Typicality's Ĥ comes from the first half of the held-out images, the density from the other half."""
    fit, test = images
    half = len(fit) // 2
    h_hat = nll_bpd(vae_params, fit[:half])[:half // 2].mean()   # typicality: Ĥ from the first half of its images
    features = lambda x: np.stack([nll_bpd(vae_params, x), np.abs(nll_bpd(vae_params, x) - h_hat)], axis=1)  # noqa: E731
    x_density, x_test = features(fit[half:]), features(test)
    mean, std = x_density.mean(axis=0), x_density.std(axis=0)
    expected = NearestNeighbors(n_neighbors=5).fit((x_density - mean) / std).kneighbors((x_test - mean) / std)[0][:, -1]
    scorer = build_scorer("composed", VAE, eval_config(features=("log_likelihood", "typicality"), density="knn"))
    assert scorer.fit_split(len(fit)) == (slice(0, half), slice(half, len(fit)))
    state = scorer.fit(vae_params, fit)
    assert state.states["typicality"].h_hat == pytest.approx(h_hat, rel=1e-5)
    np.testing.assert_allclose(scorer.score(state, test), expected, rtol=1e-4, atol=1e-5)
    # with no part that estimates anything from data, the density takes every held-out image
    only_likelihood = build_scorer("composed", VAE, eval_config(features=("log_likelihood",), density="knn"))
    assert only_likelihood.fit_split(len(fit)) == (slice(0, 0), slice(0, len(fit)))


def test_density_options_reach_the_composed_density(vae_params, images):
    fit, _ = images
    config = load_config_file("configs/vae_fashion_mnist.py")
    assert config.eval.composed.density_options.gmm.n_components == [1, 2, 4, 8]
    options = {"gmm": {"n_components": [1, 3], "folds": 4}, "knn": {"k": 2}}
    gmm = build_scorer("composed", VAE, eval_config(features=("log_likelihood",), density="gmm",
                                                    density_options=ml_collections.ConfigDict(options)))
    assert sorted(gmm.fit(vae_params, fit).fitted.cv_log_likelihood) == [1, 3]
    knn = build_scorer("composed", VAE, eval_config(features=("log_likelihood",), density="knn",
                                                    density_options=options))
    assert knn.fit(vae_params, fit).fitted.k == 2
