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
