import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oodgen.features.gradients_fast import trace_layers
from oodgen.models.glow import ActNorm, GlowModel, flatten_latents
from oodgen.sharding import example_keys

# One image shape and batch for most tests: eager ops compile once per shape and are then reused.
SHAPE = (8, 8, 1)
TINY = dict(image_shape=SHAPE, num_levels=2, depth=2, hidden_channels=8)


def _images(shape, n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, *shape)), jnp.uint8)


def _perturbed(params, seed, scale=0.1):
    """Every parameter plus N(0, scale²) noise: zero-initialised layers become non-trivial."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                        for x, k in zip(leaves, keys)])


def _float64(tree):
    return jax.tree.map(lambda p: p.astype(jnp.float64), tree)


def _keys(n, seed=0):
    return example_keys(jax.random.key(seed), jnp.arange(n))


def _std_normal_log_prob(zs):
    """Σ log N(z; 0, 1) over every latent entry, computed in numpy float64: [B]."""
    flat = np.asarray(flatten_latents(zs), np.float64)
    return np.sum(-0.5 * flat**2 - 0.5 * math.log(2 * math.pi), axis=-1)


@pytest.fixture(scope="module")
def images():
    return _images(SHAPE, 16)


@pytest.fixture(scope="module")
def model():
    return GlowModel(**TINY)


@pytest.fixture(scope="module")
def params(model, images):
    return model.init(jax.random.key(0), images)


@pytest.mark.parametrize("coupling", ["affine", "additive"])
@pytest.mark.parametrize("lu", [True, False])
def test_inverse_inverts_forward(coupling, lu, images):
    model = GlowModel(**TINY, coupling=coupling, lu_decomposition=lu)
    params = _perturbed(model.init(jax.random.key(0), images), seed=1)
    x = model.dequantize(jax.random.key(2), images)[0]
    zs, logdet = model.forward(params, x)
    assert [z.shape[1:] for z in zs] == list(model.latent_shapes)
    assert flatten_latents(zs).shape == (16, model.num_dims)
    # The perturbed flow is far from a reshuffle of x.
    assert not np.allclose(np.sort(np.asarray(flatten_latents(zs)), axis=-1),
                           np.sort(np.asarray(x.reshape(16, -1)), axis=-1), atol=1e-2)
    np.testing.assert_allclose(model.inverse(params, zs), x, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("coupling,lu", [("affine", True), ("affine", False), ("additive", True)])
def test_logdet_is_log_abs_det_of_the_jacobian_and_float64_inverse_is_exact(coupling, lu, images):
    model = GlowModel(**TINY, coupling=coupling, lu_decomposition=lu)
    params = _perturbed(model.init(jax.random.key(0), images), seed=5, scale=0.2)
    with jax.enable_x64(True):
        params = _float64(params)
        x = model.dequantize(jax.random.key(1), images[:3])[0].astype(jnp.float64)
        zs, logdet = model.forward(params, x)
        assert zs[0].dtype == jnp.float64 and logdet.dtype == jnp.float64
        np.testing.assert_allclose(model.inverse(params, zs), x, rtol=1e-11, atol=1e-12)

        def flat_forward(xi):  # one example [H, W, C] -> [D]
            return flatten_latents(model.forward(params, xi[None])[0])[0]

        jacobians = jax.jit(jax.vmap(jax.jacfwd(flat_forward)))(x).reshape(3, model.num_dims, model.num_dims)
        signs, expected = (np.asarray(a) for a in jnp.linalg.slogdet(jacobians))
        logdet = np.asarray(logdet)
    assert np.all(signs != 0)
    np.testing.assert_allclose(logdet, expected, rtol=1e-10, atol=1e-9)
    if coupling == "affine":  # not a constant Jacobian: the log-determinant differs between examples
        assert np.ptp(logdet) > 1e-3


def test_actnorm_data_dependent_init_standardises_its_batch():
    x = 3.0 + 2.5 * jax.random.normal(jax.random.key(0), (10, 5, 5, 3)) * jnp.array([1.0, 0.1, 4.0])
    variables = ActNorm().init(jax.random.key(1), x)
    y, logdet = ActNorm().apply(variables, x)
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, rtol=1e-4)
    expected = 25 * np.sum(-np.log(np.std(np.asarray(x, np.float64), axis=(0, 1, 2))))
    np.testing.assert_allclose(logdet, np.full(10, expected), rtol=1e-5)
    back, neg = ActNorm().apply(variables, y, reverse=True)
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(neg, -logdet)


def test_every_actnorm_of_the_model_is_standardised_on_the_init_batch(model, params, images):
    x = model.dequantize(jax.random.fold_in(jax.random.key(0), 1), images)[0]  # what init used
    _, state = model.net.apply({"params": params}, x, capture_intermediates=lambda m, _: isinstance(m, ActNorm),
                               mutable=["intermediates"])
    steps = [name for name in params if name.startswith("steps_")]
    assert len(steps) == model.num_levels * model.depth
    for name in steps:
        (y, _), = state["intermediates"][name]["actnorm"]["__call__"]
        np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(jnp.std(y, axis=(0, 1, 2)), 1.0, rtol=1e-3, err_msg=name)


def test_one_level_log_prob_is_gaussian_prior_plus_logdet_minus_bin_volume(images):
    model = GlowModel(**{**TINY, "num_levels": 1})
    params = _perturbed(model.init(jax.random.key(0), images), seed=7, scale=0.3)
    keys = _keys(16, seed=8)
    x = model.dequantize(keys, images)[0]
    # The dequantised input lies in its own sub-pixel's bin.
    offset = np.asarray((x + 0.5) * 256, np.float64) - np.asarray(images, np.float64)
    assert offset.min() >= 0 and offset.max() < 1 and offset.std() > 0.2
    (z,), logdet = model.forward(params, x)
    mean = np.asarray(params["top_prior"]["mean"], np.float64)
    log_scale = np.asarray(params["top_prior"]["log_scale"], np.float64)
    assert np.ptp(mean) > 0 and np.ptp(log_scale) > 0
    standard = (np.asarray(z, np.float64) - mean) / np.exp(log_scale)
    log_pz = np.sum(-0.5 * standard**2 - 0.5 * math.log(2 * math.pi) - log_scale, axis=(1, 2, 3))
    expected = log_pz + np.asarray(logdet, np.float64) - model.num_dims * math.log(256)
    np.testing.assert_allclose(model.log_prob(params, images, keys), expected, rtol=1e-5)


def test_multi_level_log_prob_is_ancestral_prior_plus_logdet(model, params, images):
    params = _perturbed(params, seed=9, scale=0.2)
    keys = _keys(16, seed=10)
    x = model.dequantize(keys, images)[0]
    zs, logdet = model.forward(params, x)
    log_pz = model.prior_log_prob(params, zs)  # split priors evaluated on the backward (sampling) pass
    assert not np.allclose(log_pz, _std_normal_log_prob(zs), rtol=1e-3)  # the priors are not N(0, 1) here
    expected = log_pz + logdet - model.num_dims * math.log(256)
    np.testing.assert_allclose(model.log_prob(params, images, keys), expected, rtol=1e-5)


def test_priors_at_init_are_standard_normal(model, params, images):
    noise = tuple(jax.random.normal(jax.random.key(i), (16, *s)) for i, s in enumerate(model.latent_shapes))
    np.testing.assert_allclose(model.prior_log_prob(params, noise), _std_normal_log_prob(noise), rtol=1e-5)
    x = model.dequantize(jax.random.key(11), images)[0]
    zs, _, log_pz = model.encode(params, x)
    np.testing.assert_allclose(log_pz, _std_normal_log_prob(zs), rtol=1e-5)


def test_density_integrates_to_one():
    """E_q[p(x) / q(x)] = 1 for any proposal q: here a Gaussian fitted to flowed-back normal noise.

    4x4x1 with two levels (D = 16) exercises the split prior; the proposal is independent of the
    model's density code, so a wrong log-determinant or an unnormalised prior shows up here.
    """
    model = GlowModel(**{**TINY, "image_shape": (4, 4, 1)})
    params = _perturbed(model.init(jax.random.key(0), _images(model.image_shape, 64, seed=12)), seed=13, scale=0.05)
    # Priors visibly wider than N(0, 1), so that their normalising constants matter.
    params["top_prior"]["log_scale"] = params["top_prior"]["log_scale"] + 0.3
    params["split_priors_0"]["Conv_0"]["bias"] = params["split_priors_0"]["Conv_0"]["bias"] + 0.2
    with jax.enable_x64(True):
        params = _float64(params)
        noise = tuple(1.35 * jax.random.normal(jax.random.key(i), (20_000, *s), jnp.float64)
                      for i, s in enumerate(model.latent_shapes))
        fit = np.asarray(jax.jit(model.inverse)(params, noise)).reshape(20_000, -1)
        mean, cov = fit.mean(0), 1.5 * np.cov(fit, rowvar=False)
        chol = np.linalg.cholesky(cov)
        n, d = 200_000, model.num_dims
        eps = np.random.default_rng(16).standard_normal((n, d))
        xs = mean + eps @ chol.T
        log_q = (-0.5 * np.sum(eps**2, axis=1) - 0.5 * d * math.log(2 * math.pi)
                 - np.sum(np.log(np.diag(chol))))
        log_p = jax.jit(model.continuous_log_prob)(params, jnp.asarray(xs.reshape(n, *model.image_shape)))
        weights = np.exp(np.asarray(log_p) - log_q)
    estimate, stderr = weights.mean(), weights.std() / math.sqrt(n)
    assert stderr < 0.01
    assert abs(estimate - 1.0) < max(4 * stderr, 0.02), (estimate, stderr)


def test_more_dequantisation_samples_tighten_the_bound(model, params):
    # A sharp density (first actnorm scaled up e^2 times), so log p varies by ~1 nat within a bin.
    sharp = jax.tree.map(lambda p: p, params)
    sharp["steps_0_0"]["actnorm"]["log_scale"] = sharp["steps_0_0"]["actnorm"]["log_scale"] + 2.0
    n = 256
    images = _images(SHAPE, n, seed=18)
    bound = jax.jit(lambda s: model.log_prob(sharp, images, _keys(n, 19), s), static_argnums=0)
    one, eight = np.asarray(bound(1)), np.asarray(bound(8))
    assert np.all(np.isfinite(one)) and np.all(np.isfinite(eight))
    gap = eight - one
    assert gap.mean() > 3 * gap.std() / math.sqrt(n), (gap.mean(), gap.std())
    # Each S=8 bound is at least the mean of its own 8 single-draw terms (Jensen), exactly.
    x = model.dequantize(_keys(n, 19), images, 8)
    per_draw = jax.jit(model.continuous_log_prob)(sharp, x.reshape(-1, *SHAPE)).reshape(8, n)
    np.testing.assert_array_less(per_draw.mean(0) - model.num_dims * math.log(256), eight + 1e-3)


def test_log_prob_of_an_example_does_not_depend_on_its_batch(model, params, images):
    params = _perturbed(params, seed=20)
    keys = _keys(16, seed=21)
    full = model.log_prob(params, images, keys)
    assert np.all(np.isfinite(full))
    # Half of the examples (with their keys) in another order, beside other images and keys.
    order = np.random.default_rng(22).permutation(16)
    kept = order < 8
    mixed_images = jnp.where(kept[:, None, None, None], images[order], _images(SHAPE, 16, seed=23))
    mixed_keys = jnp.where(kept, keys[order], _keys(16, seed=24))
    mixed = model.log_prob(params, mixed_images, mixed_keys)
    np.testing.assert_allclose(mixed[kept], full[order[kept]], rtol=1e-5)


def test_uniform_noise_bits_per_dim_is_finite_and_near_eight(model, params):
    noise = _images(SHAPE, 16, seed=25)
    bpd = -model.log_prob(params, noise, jax.random.key(26)) / (model.num_dims * math.log(2))
    assert np.all(np.isfinite(bpd)) and 6.0 < float(bpd.mean()) < 11.0, bpd


def test_a_few_adam_steps_reduce_the_loss(model):
    base = np.linspace(40, 220, 64).reshape(1, *SHAPE)
    images = jnp.asarray(np.clip(base + np.random.default_rng(27).normal(0, 8, (16, *SHAPE)), 0, 255), jnp.uint8)
    params = model.init(jax.random.key(0), images)
    optimizer = optax.adam(3e-3)
    state = optimizer.init(params)
    mean_loss = lambda p, k: jnp.mean(model.loss(p, images, k))  # noqa: E731

    @jax.jit
    def step(p, s, k):
        loss, grads = jax.value_and_grad(mean_loss)(p, k)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    before = float(mean_loss(params, jax.random.key(99)))
    for i in range(30):
        params, state, _ = step(params, state, jax.random.key(i))
    after = float(mean_loss(params, jax.random.key(99)))
    assert np.isfinite(after) and after < before - 0.05 * model.num_dims, (before, after)


def test_sample_is_deterministic_and_uint8(model, params):
    params = _perturbed(params, seed=28)
    a = model.sample(params, jax.random.key(29), 3, temperature=0.7)
    b = model.sample(params, jax.random.key(29), 3, temperature=0.7)
    assert a.shape == (3, *SHAPE) and a.dtype == jnp.uint8
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.asarray(a))) > 10


def test_coupling_and_prior_convs_take_the_fast_gradient_path(model, params, images):
    calls = trace_layers(model.loss, params, images, _keys(16))
    convs = [c for c in calls if c.kind == "conv"]
    assert len(convs) == 3 * model.num_levels * model.depth + (model.num_levels - 1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_shape=(28, 28, 1), num_levels=3), "divisible"),
    (dict(coupling="volume"), "unknown coupling"),
    (dict(depth=0), "depth"),
    (dict(image_shape=(28, 28)), "image_shape"),
])
def test_bad_hyper_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlowModel(**kwargs)


def test_wrong_image_shape_raises(model, params):
    with pytest.raises(ValueError, match="expects"):
        model.log_prob(params, _images((4, 4, 1), 2), jax.random.key(0))
