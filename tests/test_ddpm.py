import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen.models.ddpm import DDPMModel
from oodgen.scorers.diffusion import zscore_mean
from oodgen.sharding import split_keys

MODEL = DDPMModel(image_shape=(8, 8, 1), num_filters=4, num_timesteps=20)
NUM_SAMPLING_STEPS = 10
START_STEPS = (0, 1, 3, 10)
LOSS = jax.jit(MODEL.loss)
EPS = jax.jit(MODEL.eps)


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)), jnp.uint8)


@pytest.fixture(scope="module")
def params(images):
    return jax.jit(MODEL.init)(jax.random.key(0), images)


@pytest.fixture(scope="module")
def reconstruct(params):
    """All start steps in one compiled call: (images, rng) -> f32[S, B, H, W, C]."""
    fn = functools.partial(MODEL.reconstruct, start_steps=START_STEPS,
                           num_sampling_steps=NUM_SAMPLING_STEPS)
    return jax.jit(lambda images, rng: fn(params, images, rng))


def _numpy_alphas_cumprod(schedule, num_timesteps):
    if schedule == "linear":
        betas = np.linspace(1e-4, 0.02, num_timesteps)
    else:
        t = np.arange(num_timesteps + 1) / num_timesteps
        f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    return np.cumprod(1 - betas)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alphas_cumprod_matches_float64(schedule):
    model = DDPMModel(num_timesteps=1000, beta_schedule=schedule)
    abar = np.asarray(model.alphas_cumprod)
    assert abar.shape == (1000,) and abar.dtype == np.float32
    np.testing.assert_allclose(abar, _numpy_alphas_cumprod(schedule, 1000), rtol=1e-5, atol=1e-12)
    assert np.all(np.diff(abar) < 0) and 0 < abar[-1] < abar[0] < 1
    if schedule == "cosine":  # unclipped part: ᾱ_t = f(t + 1) / f(0) in closed form
        f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
        t = np.arange(900)
        np.testing.assert_allclose(abar[:900], f(t + 1) / f(0), rtol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_marginal(schedule):
    model = DDPMModel(image_shape=(8, 8, 1), num_timesteps=50, beta_schedule=schedule)
    n = 4000
    x0 = jnp.linspace(-1, 1, 64).reshape(1, 8, 8, 1)
    abar = np.asarray(model.alphas_cumprod, np.float64)
    for t in (0, 20, 49):
        noise = jax.random.normal(jax.random.key(t), (n, 8, 8, 1))
        x_t = np.asarray(model.q_sample(jnp.broadcast_to(x0, (n, 8, 8, 1)), jnp.full(n, t), noise),
                         np.float64)
        var = 1 - abar[t]
        # 5 standard errors of the Monte-Carlo mean and variance, per pixel
        np.testing.assert_allclose(x_t.mean(0), np.sqrt(abar[t]) * np.asarray(x0[0]),
                                   atol=5 * np.sqrt(var / n) + 1e-6)
        np.testing.assert_allclose(x_t.var(0), var, atol=5 * var * np.sqrt(2 / n) + 1e-6)


def test_reconstruct_start_zero_is_identity(images, reconstruct):
    recon = reconstruct(images, jax.random.key(1))
    assert recon.shape == (len(START_STEPS), *images.shape) and recon.dtype == jnp.float32
    np.testing.assert_allclose(recon[0], np.asarray(images) / 255.0, atol=1e-6)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    # a later start step really changes the image
    assert float(jnp.abs(recon[-1] - images / 255.0).max()) > 1e-2


def test_reconstruct_is_deterministic_given_seed(images, reconstruct):
    a = reconstruct(images, jax.random.key(1))
    b = reconstruct(images, jax.random.key(1))
    c = reconstruct(images, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], c[0])            # no noise at start step 0
    assert float(jnp.abs(a[-1] - c[-1]).max()) > 1e-3    # different noise at the last start step


def _loop_reconstruct(params, images, rng, start, num_sampling_steps):
    """Straightforward DDIM: noise to τ_{start-1}, then one Python iteration per step."""
    abar = np.asarray(MODEL.alphas_cumprod)
    k = MODEL.num_timesteps // num_sampling_steps
    taus = [j * k for j in range(num_sampling_steps)]
    noise = jax.vmap(lambda key: jax.random.normal(key, MODEL.image_shape))(split_keys(rng, images.shape[0]))
    x = images.astype(jnp.float32) / 127.5 - 1
    if start > 0:
        a = abar[taus[start - 1]]
        x = np.sqrt(a) * x + np.sqrt(1 - a) * noise
    for j in reversed(range(start)):
        a_t = abar[taus[j]]
        a_prev = abar[taus[j - 1]] if j > 0 else 1.0
        e = EPS(params, jnp.asarray(x, jnp.float32), jnp.full(images.shape[0], taus[j]))
        x0_pred = (x - np.sqrt(1 - a_t) * e) / np.sqrt(a_t)
        x = np.sqrt(a_prev) * x0_pred + np.sqrt(1 - a_prev) * e
    return np.clip((np.asarray(x) + 1) / 2, 0, 1)


def test_scan_matches_python_loop(params, images, reconstruct):
    rng = jax.random.key(3)
    recon = np.asarray(reconstruct(images, rng))
    for i, start in enumerate(START_STEPS):
        expected = _loop_reconstruct(params, images, rng, start, NUM_SAMPLING_STEPS)
        np.testing.assert_allclose(recon[i], expected, rtol=1e-5, atol=1e-6)


def test_reconstruction_errors(params, images, reconstruct):
    rng = jax.random.key(1)
    errors = jax.jit(functools.partial(MODEL.reconstruction_errors, start_steps=START_STEPS,
                                       num_sampling_steps=NUM_SAMPLING_STEPS))(params, images, rng)
    assert errors.shape == (images.shape[0], len(START_STEPS))
    recon = np.asarray(reconstruct(images, rng))
    expected = ((recon - np.asarray(images)[None] / 255.0) ** 2).mean(axis=(2, 3, 4)).T
    np.testing.assert_allclose(errors, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(errors[:, 0], 0.0, atol=1e-12)


def test_zscore_mean_uses_validation_statistics_only():
    rng = np.random.default_rng(0)
    val = rng.gamma(2.0, size=(50, 4)) * np.array([1, 2, 3, 4])
    errors = rng.gamma(2.0, size=(7, 4)) * 10
    extra = rng.gamma(2.0, size=(30, 4)) * 100
    expected = ((errors - val.mean(0)) / val.std(0)).mean(1)
    np.testing.assert_allclose(zscore_mean(errors, val), expected, rtol=1e-5)
    both = zscore_mean(np.concatenate([errors, extra]), val)
    np.testing.assert_allclose(both[:7], expected, rtol=1e-5)   # scored data leaves the scale alone
    assert abs(float(jnp.mean(zscore_mean(val, val)))) < 1e-5
    with pytest.raises(ValueError):
        zscore_mean(errors, val[:, :3])


def test_loss_is_per_example(params, images):
    loss = LOSS
    keys = jax.random.split(jax.random.key(5), images.shape[0])
    full = loss(params, images, keys)
    assert full.shape == (images.shape[0],)
    np.testing.assert_allclose(loss(params, images[::-1], keys[::-1]), full[::-1], rtol=1e-5)
    other = images.at[0].set(255 - images[0])               # change example 0 only
    changed = loss(params, other, keys)
    np.testing.assert_allclose(changed[1:], full[1:], rtol=1e-5)
    assert abs(float(changed[0] - full[0])) > 1e-3


def test_loss_is_epsilon_mse_when_network_outputs_zero(params, images):
    zero = jax.tree.map(jnp.zeros_like, params)  # ε_θ = 0, so the loss is ‖ε‖² of the drawn noise
    keys = jax.random.split(jax.random.key(6), images.shape[0])
    _, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    noise = jax.vmap(lambda k: jax.random.normal(k, MODEL.image_shape))(noise_keys)
    np.testing.assert_allclose(LOSS(zero, images, keys), jnp.sum(noise**2, axis=(1, 2, 3)),
                               rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta_schedule="quadratic"), "beta_schedule"), (dict(num_timesteps=0), "num_timesteps"),
    (dict(num_timesteps=2.5), "num_timesteps"), (dict(num_filters=0), "num_filters"),
    (dict(image_shape=(7, 8, 1)), "divisible by 2"), (dict(image_shape=(8, 8)), r"\(H, W, C\)")])
def test_bad_hyper_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPMModel(**kwargs)


def test_bad_start_steps_raise(params, images):
    with pytest.raises(ValueError):
        MODEL.reconstruct(params, images, jax.random.key(0), (11,), num_sampling_steps=10)
    with pytest.raises(ValueError):
        MODEL.reconstruct(params, images, jax.random.key(0), (1,), num_sampling_steps=21)
