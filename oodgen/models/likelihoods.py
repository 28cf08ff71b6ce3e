"""Pixel likelihoods for 8-bit images: pure, batch-polymorphic, in nats.

Every function returns log-probabilities *per element* (the same leading shape as the data), so a
caller can sum them per example (`sum_per_example`) or keep a per-pixel map. Plus the one model-level
unit everything reports: a model's negative log-likelihood (bound) in bits per dimension.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp

NUM_LEVELS = 256
_HALF_BIN = 1.0 / (NUM_LEVELS - 1)  # half the width of one 8-bit level on the [-1, 1] scale


def sum_per_example(values: jax.Array) -> jax.Array:
    """f[B, ...] -> f[B]: sum over every axis but the first."""
    return values.reshape(values.shape[0], -1).sum(axis=-1)


def bits_per_dim(nats: jax.Array, num_dims: int) -> jax.Array:
    """Converts a negative log-likelihood in nats per example into bits per dimension."""
    return nats / (num_dims * math.log(2.0))


def to_unit_interval(images: jax.Array) -> jax.Array:
    """uint8 in [0, 255] -> f32 in [0, 1]."""
    return images.astype(jnp.float32) / (NUM_LEVELS - 1)


def to_symmetric_interval(images: jax.Array) -> jax.Array:
    """uint8 in [0, 255] -> f32 in [-1, 1], the scale the discretised logistic works on."""
    return images.astype(jnp.float32) * (2.0 / (NUM_LEVELS - 1)) - 1.0


def dynamic_binarize(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Samples x_bin ~ Bernoulli(images / 255) elementwise; uint8 [...] -> f32 {0, 1} [...]."""
    return jax.random.bernoulli(rng, to_unit_interval(images)).astype(jnp.float32)


def bernoulli_log_prob(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log Bernoulli(targets | sigmoid(logits)) elementwise; targets in {0, 1}. Shapes broadcast."""
    return targets * jax.nn.log_sigmoid(logits) + (1.0 - targets) * jax.nn.log_sigmoid(-logits)


def discretized_logistic_log_prob(images: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """log P(images) under a logistic(mean, exp(log_scale)) discretised into 256 bins on [-1, 1].

    `images` are uint8 [...]; `mean` and `log_scale` broadcast against them (on the [-1, 1] scale).
    The edge bins take the tails: P(0) = CDF(-1 + h), P(255) = 1 - CDF(1 - h). Exactly normalised
    over the 256 values, computed stably in log space.
    """
    x = to_symmetric_interval(images)
    inv_scale = jnp.exp(-log_scale)
    upper = (x - mean + _HALF_BIN) * inv_scale
    lower = (x - mean - _HALF_BIN) * inv_scale
    # log(sigmoid(u) - sigmoid(l)) = log_sigmoid(u) + log_sigmoid(-l) + log(1 - exp(l - u)), u > l.
    log_bin_mass = (jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower)
                    + jnp.log(-jnp.expm1(lower - upper)))
    log_cdf_upper = jax.nn.log_sigmoid(upper)
    log_survival_lower = jax.nn.log_sigmoid(-lower)
    return jnp.where(images == 0, log_cdf_upper,
                     jnp.where(images == NUM_LEVELS - 1, log_survival_lower, log_bin_mass))


def categorical_log_prob(images: jax.Array, logits: jax.Array) -> jax.Array:
    """log P(images) under a 256-way categorical over the 8-bit values: log_softmax(logits)[value].

    `images` are uint8 [...]; `logits` f32 [..., 256] (one logit per value, the last axis), their leading
    axes broadcasting against the images'. Exactly normalised over the 256 values, in nats.
    """
    if logits.shape[-1] != NUM_LEVELS:
        raise ValueError(f"a categorical over 8-bit values needs {NUM_LEVELS} logits on the last axis; "
                         f"got shape {logits.shape}")
    # logit[value] − logsumexp(logits): the same as log_softmax(logits)[value], without a second [..., 256] array
    lead = jnp.broadcast_shapes(images.shape, logits.shape[:-1])
    logits = jnp.broadcast_to(logits, (*lead, NUM_LEVELS))
    index = jnp.broadcast_to(images.astype(jnp.int32), lead)[..., None]
    return jnp.take_along_axis(logits, index, axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)


def num_mixture_params(num_mixtures: int, channels: int) -> int:
    """Channels of a network output that parameterises `discretized_logistic_mixture_log_prob`."""
    num_coeffs = channels * (channels - 1) // 2
    return num_mixtures * (1 + 2 * channels + num_coeffs)


def discretized_logistic_mixture_log_prob(images: jax.Array, params: jax.Array,
                                          num_mixtures: int) -> jax.Array:
    """PixelCNN++-style mixture of discretised logistics with linear channel dependence.

    Args:
      images: uint8 [..., C].
      params: f32 [..., num_mixture_params(K, C)] laid out as K mixture logits, then K·C means,
        K·C log-scales, K·C(C-1)/2 coefficients. Channel c's mean in component k is
        mean_{c,k} + Σ_{j<c} coeff_{c,j,k} · x_j (x_j on [-1, 1]).
    Returns:
      f32 [...]: log P(pixel), all C channels jointly, in nats.
    """
    channels = images.shape[-1]
    k = num_mixtures
    num_coeffs = channels * (channels - 1) // 2
    lead = jnp.broadcast_shapes(images.shape[:-1], params.shape[:-1])
    params = jnp.broadcast_to(params, (*lead, params.shape[-1]))
    logits = params[..., :k]
    means, log_scales, coeffs = jnp.split(
        params[..., k:].reshape(*lead, 2 * channels + num_coeffs, k), [channels, 2 * channels], axis=-2)
    log_scales = jnp.maximum(log_scales, -7.0)
    coeffs = jnp.tanh(coeffs)

    x = to_symmetric_interval(images)[..., None]  # [..., C, 1]
    adjusted = []
    pair = 0
    for c in range(channels):
        shift = 0.0
        for j in range(c):
            shift = shift + coeffs[..., pair, :] * x[..., j, :]
            pair += 1
        adjusted.append(means[..., c, :] + shift)
    means = jnp.stack(adjusted, axis=-2)  # [..., C, K]

    per_channel = discretized_logistic_log_prob(images[..., None], means, log_scales)  # [..., C, K]
    log_weights = jax.nn.log_softmax(logits, axis=-1)
    return jax.nn.logsumexp(log_weights + per_channel.sum(axis=-2), axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def negative_log_likelihood_bpd(model, num_samples: int, params: chex.ArrayTree, images: jax.Array,
                                keys: jax.Array) -> jax.Array:
    """−(importance-weighted bound) in bits per dimension: uint8 [B, H, W, C] -> f32[B]."""
    nll = -model.log_prob(params, images, keys, num_samples)
    return bits_per_dim(nll, model.num_dims)
