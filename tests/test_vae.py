import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen.models.vae import VAEModel
from oodgen.sharding import example_keys

MODEL = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,))


def _bounds(model, params, images, num_samples, num_seeds):
    """log_prob for seeds 0..num_seeds-1 in one compiled call: f32[num_seeds, B]."""
    fn = jax.jit(jax.vmap(lambda seed: model.log_prob(params, images, jax.random.key(seed), num_samples)))
    return fn(jnp.arange(num_seeds))


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1)), jnp.uint8)


@pytest.fixture(scope="module")
def constant_decoder_params(images):
    """Decoder outputs logits 0 whatever z is, so p(x|z) = 2^-D and log p(x) = -D log 2 exactly.

    The encoder is scaled up so q(z|x) is far from the prior and the bounds are visibly loose.
    """
    params = MODEL.init(jax.random.key(0), images)
    params = jax.tree.map(lambda x: x, params)
    params["decoder"] = jax.tree.map(jnp.zeros_like, params["decoder"])
    params["encoder"]["Dense_0"]["kernel"] = params["encoder"]["Dense_0"]["kernel"] * 20
    return params


def _analytic_kl(params, images):
    """KL(q(z|x) || N(0, I)) in closed form, from the encoder's Gaussian: f32[B]."""
    target = MODEL.preprocess(jax.random.key(0), images)  # encoder input; binarisation noise is
    mean, log_std = MODEL.net.apply({"params": params}, target, method=MODEL.net.encode)
    return 0.5 * jnp.sum(mean**2 + jnp.exp(2 * log_std) - 1 - 2 * log_std, axis=-1), target


def test_elbo_matches_closed_form_with_constant_decoder(images, constant_decoder_params):
    params = constant_decoder_params
    log_px = -MODEL.num_dims * math.log(2.0)
    # Fixed binarisation: feed images already 0/255 so preprocessing is deterministic.
    binary = (images > 127).astype(jnp.uint8) * 255
    kl, _ = _analytic_kl(params, binary)
    elbo = _bounds(MODEL, params, binary, 1, 400)
    np.testing.assert_allclose(elbo.mean(0), log_px - kl, atol=4 * float(elbo.std(0).max()) / 20 + 1e-3)


def test_iwae_tightens_with_samples_towards_exact_log_likelihood(images, constant_decoder_params):
    params = constant_decoder_params
    binary = (images > 127).astype(jnp.uint8) * 255
    exact = -MODEL.num_dims * math.log(2.0)
    bounds = []
    for s in (1, 4, 16, 128):
        values = _bounds(MODEL, params, binary, s, 50)
        bounds.append(float(values.mean()))
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] <= exact + 1e-3
    assert exact - bounds[-1] < 0.5 * (exact - bounds[0])


def test_iwae_is_at_least_elbo_on_average_for_a_random_model(images):
    params = MODEL.init(jax.random.key(1), images)
    elbo = _bounds(MODEL, params, images, 1, 30).mean()
    iwae = _bounds(MODEL, params, images, 32, 30).mean()
    assert iwae >= elbo


def test_score_of_an_example_does_not_depend_on_its_batch(images):
    params = MODEL.init(jax.random.key(1), images)
    keys = example_keys(jax.random.key(3), jnp.arange(images.shape[0]))
    batch = MODEL.log_prob(params, images, keys, 8)
    alone = jnp.concatenate([MODEL.log_prob(params, images[i:i + 1], keys[i:i + 1], 8) for i in range(6)])
    np.testing.assert_allclose(batch, alone, rtol=1e-5)


def test_discretized_logistic_vae_on_colour_images():
    model = VAEModel(image_shape=(8, 8, 3), latent_dim=3, channels=(4,),
                     likelihood="discretized_logistic_mixture", num_mixtures=2)
    x = jnp.asarray(np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3)), jnp.uint8)
    params = model.init(jax.random.key(0), x)
    log_p = model.log_prob(params, x, jax.random.key(0), 4)
    assert log_p.shape == (3,) and bool(jnp.all(jnp.isfinite(log_p)))
    # A bound on a normalised discrete likelihood is <= 0.
    assert bool(jnp.all(log_p < 0))


def test_bad_model_configs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        VAEModel(image_shape=(10, 10, 1), channels=(4, 4))
    with pytest.raises(ValueError, match="1-channel"):
        VAEModel(image_shape=(8, 8, 3))
