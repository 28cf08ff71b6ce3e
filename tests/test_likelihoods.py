import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from oodgen.models import likelihoods

LEVELS = jnp.arange(256, dtype=jnp.uint8)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -2.0), (0.7, -4.0), (-1.3, -1.0), (0.2, -7.0), (1.5, 1.0)])
def test_discretized_logistic_sums_to_one_and_matches_scipy(mean, log_scale):
    log_p = likelihoods.discretized_logistic_log_prob(LEVELS, mean, log_scale)
    assert np.isclose(np.exp(np.asarray(log_p, np.float64)).sum(), 1.0, atol=1e-5)
    # Independent float64 computation with scipy's logistic CDF on the bin edges.
    centres = np.arange(256) * 2 / 255 - 1
    upper = np.where(np.arange(256) == 255, np.inf, centres + 1 / 255)
    lower = np.where(np.arange(256) == 0, -np.inf, centres - 1 / 255)
    dist = stats.logistic(loc=mean, scale=math.exp(log_scale))
    expected = dist.cdf(upper) - dist.cdf(lower)
    mask = expected > 1e-30
    np.testing.assert_allclose(np.exp(np.asarray(log_p, np.float64))[mask], expected[mask], rtol=2e-4, atol=1e-7)


def _grid(channels):
    return np.array(list(itertools.product(range(256), repeat=channels)), dtype=np.uint8)


@pytest.mark.parametrize("channels,num_mixtures", [(1, 3), (2, 2), (3, 2)])
def test_mixture_sums_to_one_over_all_pixel_values(channels, num_mixtures):
    rng = np.random.default_rng(channels)
    params = rng.normal(size=likelihoods.num_mixture_params(num_mixtures, channels)).astype(np.float32)
    log_prob = jax.jit(lambda x: likelihoods.discretized_logistic_mixture_log_prob(x, params, num_mixtures))
    if channels < 3:
        total = np.exp(np.asarray(log_prob(_grid(channels)), np.float64)).sum()
    else:  # 256^3 values, one first-channel value at a time
        rest = _grid(2)
        total = sum(np.exp(np.asarray(log_prob(np.concatenate([np.full((len(rest), 1), v, np.uint8), rest], 1)),
                                      np.float64)).sum() for v in range(256))
    assert abs(total - 1.0) < 1e-4


def test_mixture_with_one_component_equals_single_logistic():
    params = jnp.array([0.3, 0.25, -3.0])  # logit, mean, log-scale
    x = jnp.arange(256, dtype=jnp.uint8)[:, None]
    mix = likelihoods.discretized_logistic_mixture_log_prob(x, params, 1)
    single = likelihoods.discretized_logistic_log_prob(x[:, 0], 0.25, -3.0)
    np.testing.assert_allclose(mix, single, rtol=1e-6)


def test_bernoulli_matches_naive_float64():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5)) * 3
    targets = rng.integers(0, 2, size=(4, 5)).astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    expected = targets * np.log(p) + (1 - targets) * np.log(1 - p)
    np.testing.assert_allclose(likelihoods.bernoulli_log_prob(jnp.asarray(logits, jnp.float32),
                                                              jnp.asarray(targets, jnp.float32)),
                               expected, rtol=1e-5)


def test_dynamic_binarization_has_the_pixel_intensity_as_mean():
    images = jnp.broadcast_to(jnp.array([0, 51, 128, 255], jnp.uint8), (20000, 4))
    samples = likelihoods.dynamic_binarize(jax.random.key(0), images)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    np.testing.assert_allclose(samples.mean(0), [0, 0.2, 128 / 255, 1], atol=0.012)


def test_bits_per_dim_of_uniform_8_bit_data_is_8():
    dims = 28 * 28
    nats = jnp.array([dims * math.log(256.0)])
    np.testing.assert_allclose(likelihoods.bits_per_dim(nats, dims), [8.0], rtol=1e-6)


# --- the 256-way categorical (Xiao et al. 2020's VAE decoder) ----------------------------------------------

def _log_softmax_loop(logits: np.ndarray, images: np.ndarray) -> np.ndarray:
    """log softmax(logits)[value] per sub-pixel, one element at a time in float64: the reference to check."""
    flat_logits, flat_images = logits.reshape(-1, 256).astype(np.float64), images.reshape(-1)
    out = np.empty(flat_images.shape, np.float64)
    for i, (row, value) in enumerate(zip(flat_logits, flat_images)):
        top = row.max()
        out[i] = row[value] - top - math.log(sum(math.exp(v - top) for v in row))
    return out.reshape(images.shape)


def test_categorical_matches_scipy_log_softmax_and_a_float64_loop():
    from scipy import special

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    logits = (rng.normal(size=(3, 4, 5, 256)) * 4).astype(np.float32)
    got = np.asarray(likelihoods.categorical_log_prob(jnp.asarray(images), jnp.asarray(logits)), np.float64)
    expected = np.take_along_axis(special.log_softmax(logits.astype(np.float64), axis=-1),
                                  images[..., None].astype(np.int64), axis=-1)[..., 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, _log_softmax_loop(logits, images), rtol=1e-5, atol=1e-5)
    # Normalised over the 256 values, and the logits broadcast against the images' leading axes.
    total = np.exp(np.asarray(likelihoods.categorical_log_prob(LEVELS, jnp.asarray(logits[0, 0, 0])), np.float64))
    assert abs(total.sum() - 1.0) < 1e-5
    with pytest.raises(ValueError, match="256 logits"):
        likelihoods.categorical_log_prob(jnp.asarray(images), jnp.zeros((3, 4, 5, 10)))


@pytest.mark.parametrize("channels", [1, 3])
def test_categorical_pixel_likelihood_sums_every_sub_pixel_in_nats(channels):
    """256·C decoder channels, channel c's logits at [256c, 256(c+1)); inputs on [0, 1], not binarised."""
    from oodgen.models.pixels import PixelLikelihood

    pixels = PixelLikelihood("categorical", (4, 3, channels))
    assert pixels.out_features == 256 * channels
    rng = np.random.default_rng(channels)
    images = rng.integers(0, 256, (2, 4, 3, channels), dtype=np.uint8)
    out = (rng.normal(size=(2, 4, 3, 256 * channels)) * 3).astype(np.float32)
    x = pixels.preprocess(jax.random.key(0), jnp.asarray(images))
    np.testing.assert_array_equal(x, pixels.preprocess(jax.random.key(1), jnp.asarray(images)))  # no noise
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    got = np.asarray(pixels.log_prob(jnp.asarray(out), x, jnp.asarray(images)), np.float64)
    per_channel = _log_softmax_loop(out.reshape(2, 4, 3, channels, 256), images)
    np.testing.assert_allclose(got, per_channel.reshape(2, -1).sum(axis=1), rtol=1e-5)


def test_categorical_vae_offers_an_8_bit_likelihood_and_trains(tmp_path):
    """As the logistic mixture does: input complexity and the 8-bit-only scorers accept it; with a zero decoder
    the ELBO is −D log 256 − KL exactly; a tiny config trains a few steps to finite held-out bits/dim."""
    import json

    import ml_collections

    from oodgen.config import load_config_file
    from oodgen.models import capabilities as caps
    from oodgen.models.vae import VAEModel
    from oodgen.scorers import build_scorer
    from oodgen.training.loop import train

    model = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,), likelihood="categorical")
    logistic = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,), likelihood="discretized_logistic_mixture")
    assert model.capabilities == logistic.capabilities and caps.PIXEL_LIKELIHOOD in model.capabilities
    assert model.summary == "vae models 8-bit pixels (model.likelihood=categorical)"
    eval_config = ml_collections.ConfigDict(dict(num_samples=2, batch_size=8, seed=0))
    for scorer in ("input_complexity", "likelihood_regret", "log_likelihood", "typicality"):
        assert build_scorer(scorer, model, eval_config).name

    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)), jnp.uint8)
    params = model.init(jax.random.key(0), images)
    params["decoder"] = jax.tree.map(jnp.zeros_like, params["decoder"])    # every logit 0: uniform over 256
    mean, log_std = model.net.apply({"params": params}, model.preprocess(jax.random.key(0), images),
                                    method=model.net.encode)
    kl = 0.5 * jnp.sum(mean**2 + jnp.exp(2 * log_std) - 1 - 2 * log_std, axis=-1)
    elbo = jax.vmap(lambda seed: model.log_prob(params, images, jax.random.key(seed), 1))(jnp.arange(200))
    np.testing.assert_allclose(elbo.mean(0), -64 * math.log(256.0) - kl,
                               atol=4 * float(elbo.std(0).max()) / math.sqrt(200) + 1e-3)

    config = load_config_file("configs/vae_fashion_mnist.py:tiny")
    config.model.likelihood = "categorical"
    state = train(config, tmp_path)
    assert int(state.step) == config.train.steps
    logged = [json.loads(line) for line in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
    held_out = [row["val_bits_per_dim"] for row in logged if "val_bits_per_dim" in row]
    assert held_out and all(0 < v < 20 for v in held_out)
