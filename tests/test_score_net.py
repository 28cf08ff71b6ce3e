import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oodgen.models.score_net import ScoreNetModel, dsm_loss, optimal_gaussian_score
from oodgen.sharding import example_keys

MODEL = ScoreNetModel(image_shape=(8, 8, 1), num_filters=4, num_sigmas=4, sigma_max=0.5, sigma_min=0.05)
MU, SIGMA_DATA = 0.5, 0.1


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1)), jnp.uint8)


@pytest.fixture(scope="module")
def params(images):
    # an "rbg" key: initialising ~20 kernels compiles several times faster than with threefry
    return jax.jit(MODEL.init)(jax.random.key(0, impl="rbg"), images)


@pytest.fixture(scope="module")
def gaussian_batch():
    """Clean x ~ N(μ, σ_d² I) f32[N, 16], σ drawn from the ladder per example, z ~ N(0, I); fixed seeds."""
    rng = np.random.default_rng(1)
    n, d = 4000, 16
    x = MU + SIGMA_DATA * rng.standard_normal((n, d))
    sigma = np.asarray(MODEL.sigmas)[rng.integers(0, MODEL.num_sigmas, n)]
    z = rng.standard_normal((n, d))
    return [jnp.asarray(a, jnp.float32) for a in (x, sigma, z)]


def test_dsm_loss_matches_numpy():
    rng = np.random.default_rng(2)
    x, z = rng.standard_normal((2, 5, 3, 4))
    sigma = rng.uniform(0.1, 1.0, 5)
    w = rng.standard_normal((3, 4))

    def score_fn(y, s):
        return jnp.tanh(y * w) / s[:, None, None] - y

    got = dsm_loss(score_fn, jnp.asarray(x), jnp.asarray(sigma), jnp.asarray(z))
    noisy = x + sigma[:, None, None] * z
    s = np.tanh(noisy * w) / sigma[:, None, None] - noisy
    want = 0.5 * sigma**2 * np.sum((s + z / sigma[:, None, None]) ** 2, axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_optimal_gaussian_score_is_gradient_of_smoothed_log_density():
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (3, 4)), jnp.float32)
    sigma = jnp.asarray([0.05, 0.2, 1.0])

    def log_density(xi, si):  # log N(x; μ, (σ² + σ_d²) I), up to a constant
        return -0.5 * jnp.sum((xi - MU) ** 2) / (si**2 + SIGMA_DATA**2)

    want = jax.vmap(jax.grad(log_density))(x, sigma)
    np.testing.assert_allclose(optimal_gaussian_score(x, sigma, MU, SIGMA_DATA), want, rtol=1e-5)


@pytest.mark.parametrize("name, perturbed", [
    ("scaled up", lambda y, s: 1.2 * optimal_gaussian_score(y, s, MU, SIGMA_DATA)),
    ("scaled down", lambda y, s: 0.8 * optimal_gaussian_score(y, s, MU, SIGMA_DATA)),
    ("wrong mean", lambda y, s: optimal_gaussian_score(y, s, MU + 0.05, SIGMA_DATA)),
    ("wrong data scale", lambda y, s: optimal_gaussian_score(y, s, MU, 2 * SIGMA_DATA)),
    ("unsmoothed score", lambda y, s: -(y - MU) / SIGMA_DATA**2),
    ("naive denoiser", lambda y, s: jnp.zeros_like(y)),
])
def test_dsm_loss_is_minimised_by_the_true_score(gaussian_batch, name, perturbed):
    x, sigma, z = gaussian_batch
    best = jnp.mean(dsm_loss(lambda y, s: optimal_gaussian_score(y, s, MU, SIGMA_DATA), x, sigma, z))
    worse = jnp.mean(dsm_loss(perturbed, x, sigma, z))
    assert worse > best * 1.01, name


def test_dsm_loss_minimiser_over_a_scale_is_one(gaussian_batch):
    """The Monte-Carlo loss of a·s* is quadratic in a; its minimiser is 1 up to sampling error."""
    x, sigma, z = gaussian_batch
    scales = jnp.asarray([0.9, 1.0, 1.1])
    losses = np.asarray([jnp.mean(dsm_loss(lambda y, s: a * optimal_gaussian_score(y, s, MU, SIGMA_DATA),
                                           x, sigma, z)) for a in scales])
    c2, c1, _ = np.polyfit(np.asarray(scales), losses, 2)
    assert c2 > 0
    assert abs(-c1 / (2 * c2) - 1.0) < 0.03


def test_sigmas_geometric_with_endpoints():
    model = ScoreNetModel()
    sigmas = np.asarray(model.sigmas)
    assert sigmas.shape == (10,) and sigmas.dtype == np.float32
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [1.0, 0.01], rtol=1e-6)
    ratios = sigmas[1:] / sigmas[:-1]
    np.testing.assert_allclose(ratios, np.full(9, 0.01 ** (1 / 9)), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(image_shape=(7, 8, 1)), dict(image_shape=(8, 8)), dict(num_filters=0), dict(num_sigmas=1),
    dict(sigma_min=0.0), dict(sigma_min=1.0, sigma_max=0.5), dict(sigma_max=float("inf")),
])
def test_bad_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        ScoreNetModel(**kwargs)


def test_wrong_image_shape_raises(params):
    with pytest.raises(ValueError, match="expected images"):
        MODEL.msma_features(params, jnp.zeros((2, 8, 8, 3), jnp.uint8))


def test_score_shape_and_scalar_sigma(params, images):
    x = MODEL.preprocess(images)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    score = jax.jit(MODEL.score)
    s = score(params, x, 0.1)
    assert s.shape == images.shape and s.dtype == jnp.float32
    np.testing.assert_allclose(s, score(params, x, jnp.full((6,), 0.1)), rtol=1e-6)
    assert not np.allclose(s, score(params, x, 0.3))  # conditioned on σ


def test_msma_features_equal_a_python_loop(params, images):
    feats = jax.jit(MODEL.msma_features)(params, images)
    assert feats.shape == (6, MODEL.num_sigmas)
    assert np.all(np.asarray(feats) >= 0)
    x = MODEL.preprocess(images)
    score = jax.jit(MODEL.score)
    loop = np.stack([np.linalg.norm((float(s) * np.asarray(score(params, x, s))).reshape(6, -1), axis=1)
                     for s in MODEL.sigmas], axis=1)
    np.testing.assert_allclose(feats, loop, rtol=1e-5)


def test_loss_is_per_example(params, images):
    """An example's loss depends only on its image and key: not on its neighbours or its position."""
    keys = example_keys(jax.random.key(4), jnp.arange(6))
    both = jax.jit(lambda im, k: (MODEL.loss(params, im, k), MODEL.denoising_loss(params, im, k)))
    full, denoising = both(images, keys)
    assert full.shape == (6,) and np.all(np.isfinite(full))
    other = jnp.concatenate([images[:3], 255 - images[3:]])
    np.testing.assert_allclose(both(other, keys)[0][:3], full[:3], rtol=1e-5)
    np.testing.assert_allclose(both(images[::-1], keys[::-1])[0], full[::-1], rtol=1e-5)
    np.testing.assert_array_equal(denoising, full)


def test_is_not_a_likelihood_model():
    """The score net declares a denoising surrogate, not a likelihood, and has no log_prob to misuse."""
    from oodgen.models import capabilities as caps
    assert caps.likelihood_kind(MODEL.capabilities) is None
    assert {caps.DENOISING_SURROGATE, caps.SCORE_FUNCTION} <= MODEL.capabilities
    assert not hasattr(MODEL, "log_prob")


def test_training_moves_the_score_towards_the_closed_form(params):
    """100 Adam steps (batch 32) from the shared init on Gaussian pixels N(0.5, 0.1²): σ·s_θ at clean data nears σ·s* for every level."""
    rng = np.random.default_rng(5)
    data = jnp.asarray(np.clip(np.round(255 * (MU + SIGMA_DATA * rng.standard_normal((256, 8, 8, 1)))), 0, 255),
                       jnp.uint8)
    probe = data[:32]
    x = MODEL.preprocess(probe)
    optimizer = optax.adam(3e-3)

    def error(p):  # mean over levels and examples of ‖σ (s_θ − s*)‖² at the clean data
        def at(sigma):
            diff = sigma * (MODEL.score(p, x, sigma) - optimal_gaussian_score(x, sigma, MU, SIGMA_DATA))
            return jnp.mean(jnp.sum(diff.reshape(32, -1) ** 2, axis=-1))
        return jnp.mean(jax.vmap(at)(MODEL.sigmas))

    @jax.jit
    def train(params, key):
        def step(carry, i):
            p, opt_state = carry
            batch = jax.lax.dynamic_slice_in_dim(data, (i % 8) * 32, 32)
            loss, grads = jax.value_and_grad(lambda q: jnp.mean(MODEL.loss(q, batch, jax.random.fold_in(key, i))))(p)
            updates, opt_state = optimizer.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss
        (p, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(100))
        return losses, error(params), error(p)

    losses, before, after = train(params, jax.random.key(7))
    before, after = float(before), float(after)
    assert np.all(np.isfinite(losses))
    assert after < 0.5 * before, (before, after)


def _standardised(x_fit: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    return (x_fit - mean) / std, (x - mean) / std


def test_msma_density_options_reach_the_densities(params):
    """The paper's defaults (GMM 2..20 components by 10-fold CV, 5-NN) and command-line overrides reach the
    fitted auxiliary models: CV candidates and values, and kNN distances, against scikit-learn directly."""
    import ml_collections
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import KFold
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    from oodgen.config import load_config_file, parse_overrides
    from oodgen.errors import OodgenError
    from oodgen.scorers import build_scorer
    from oodgen.scorers.score_matching import MSMAScorer

    rng = np.random.default_rng(5)
    fit = rng.integers(0, 256, (40, 8, 8, 1)).astype(np.uint8)
    test = rng.integers(0, 256, (7, 8, 8, 1)).astype(np.uint8)
    features = jax.jit(MODEL.msma_features)
    z_fit, z_test = _standardised(np.asarray(features(params, fit), np.float64),
                                  np.asarray(features(params, test), np.float64))
    config = load_config_file("configs/score_net_fashion_mnist.py")
    paper = {"n_components": list(range(2, 21)), "folds": 10}
    assert {k: config.eval.msma.density_options.gmm[k] for k in paper} == paper
    assert config.eval.msma.density_options.knn.k == 5
    with threadpool_limits(1):
        for scorer in (MSMAScorer(MODEL, batch_size=16), build_scorer("msma", MODEL, config.eval)):
            state = scorer.fit(params, fit)
            assert sorted(state.densities["gmm"].cv_log_likelihood) == list(range(2, 21))
            knn5 = scorer.score_all(state, test)["msma_knn"]
            expected = NearestNeighbors(n_neighbors=5).fit(z_fit).kneighbors(z_test)[0][:, -1]
            np.testing.assert_allclose(knn5, expected, rtol=1e-4, atol=1e-5)

        config = parse_overrides(config, ["--config.eval.msma.density_options.gmm.folds=3",
                                          "--config.eval.msma.density_options.gmm.n_components=[1,2]",
                                          "--config.eval.msma.density_options.knn.k=3"])
        scorer = build_scorer("msma", MODEL, config.eval)
        state = scorer.fit(params, fit)
        splits = list(KFold(3, shuffle=True, random_state=0).split(z_fit))
        mixture = lambda k: GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=0)  # noqa: E731
        cv = {k: np.mean(np.concatenate([mixture(k).fit(z_fit[a]).score_samples(z_fit[b]) for a, b in splits]))
              for k in (1, 2)}
        got = state.densities["gmm"].cv_log_likelihood
        assert sorted(got) == [1, 2]
        np.testing.assert_allclose([got[1], got[2]], [cv[1], cv[2]], rtol=1e-4, atol=1e-4)
        knn3 = scorer.score_all(state, test)["msma_knn"]
        expected = NearestNeighbors(n_neighbors=3).fit(z_fit).kneighbors(z_test)[0][:, -1]
        np.testing.assert_allclose(knn3, expected, rtol=1e-4, atol=1e-5)
        assert not np.allclose(knn3, knn5)

    def eval_config(**options):
        return ml_collections.ConfigDict(dict(num_samples=1, batch_size=8, seed=0, msma=dict(density_options=options)))
    for options, match in (({"gmm": {"fold": 3}}, r"config.eval.msma.density_options.gmm: unknown option\(s\) "
                                                  r"\['fold'\]; its options are \['n_components', 'folds'"),
                           ({"flow": {}}, r"config.eval.msma.density_options: unknown density 'flow'; choose from"),
                           ({"knn": {"k": -1}}, r"config.eval.msma.density_options.knn: k must be a positive int")):
        with pytest.raises(OodgenError, match=match) as e:
            build_scorer("msma", MODEL, eval_config(**options))
        assert "\n" not in str(e.value)


def test_msma_defaults_fit_a_small_set_dropping_oversized_candidates():
    """15 fit images: 10-fold training folds hold 13, so candidates 14..20 are dropped with a warning."""
    from threadpoolctl import threadpool_limits

    from oodgen.scorers.score_matching import MSMAScorer

    params = jax.jit(MODEL.init)(jax.random.key(0, impl="rbg"), jnp.zeros((2, 8, 8, 1), jnp.uint8))
    fit = np.random.default_rng(6).integers(0, 256, (15, 8, 8, 1)).astype(np.uint8)
    with threadpool_limits(1), pytest.warns(UserWarning, match=r"dropped candidate n_components \[14, .*20\]"):
        state = MSMAScorer(MODEL, batch_size=16, densities=("gmm",)).fit(params, fit)
    assert sorted(state.densities["gmm"].cv_log_likelihood) == list(range(2, 14))


def test_conditional_instance_norm_plus_matches_a_float64_formula():
    """NCSN's InstanceNorm++: γ (h − μ)/s + β + α (μ − mean μ)/std μ, with γ, β, α from the σ-embedding."""
    from oodgen.models.score_net import ConditionalInstanceNormPlus

    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 5, 4, 6)).astype(np.float32) * 2 + rng.normal(size=(3, 1, 1, 6)).astype(np.float32)
    emb = rng.normal(size=(3, 7)).astype(np.float32)
    module = ConditionalInstanceNormPlus()
    params = module.init(jax.random.PRNGKey(1), h, emb)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    got = np.asarray(module.apply(params, h, emb), np.float64)

    dense = params["params"]["Dense_0"]
    coeffs = emb.astype(np.float64) @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"], np.float64)
    gamma, beta, alpha = np.split(coeffs, 3, axis=-1)
    x = h.astype(np.float64)
    expected = np.empty_like(x)
    for b in range(x.shape[0]):
        mu = np.array([x[b, :, :, c].mean() for c in range(x.shape[-1])])
        s = np.array([np.sqrt(x[b, :, :, c].var() + 1e-5) for c in range(x.shape[-1])])
        m, v = mu.mean(), np.sqrt(mu.var() + 1e-5)
        for c in range(x.shape[-1]):
            expected[b, :, :, c] = ((1 + gamma[b, c]) * (x[b, :, :, c] - mu[c]) / s[c] + beta[b, c]
                                    + alpha[b, c] * (mu[c] - m) / v)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_norm_setting_reaches_the_network_and_unknown_is_refused():
    images = np.random.default_rng(3).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    plain, normed = ScoreNetModel(num_filters=4), ScoreNetModel(num_filters=4, norm="instance_plus")
    assert not any("ConditionalInstanceNormPlus" in str(k) for k in jax.tree_util.tree_flatten_with_path(
        plain.init(jax.random.PRNGKey(0), images))[0])
    assert any("ConditionalInstanceNormPlus" in str(k) for k in jax.tree_util.tree_flatten_with_path(
        normed.init(jax.random.PRNGKey(0), images))[0])
    with pytest.raises(ValueError, match="norm must be one of"):
        ScoreNetModel(norm="batch")
