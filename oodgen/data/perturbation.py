"""Input perturbation for background models (Ren et al. 2019): each sub-pixel is replaced, with
probability μ, by a uniform random value in {0, …, 255}, so the model learns population-level
background statistics rather than the semantics of the in-distribution data."""

import jax
import jax.numpy as jnp

from oodgen.sharding import split_keys


def _perturb_one(key: jax.Array, image: jax.Array, rate: float) -> jax.Array:
    replace_key, value_key = jax.random.split(key)
    replace = jax.random.bernoulli(replace_key, rate, image.shape)
    values = jax.random.randint(value_key, image.shape, 0, 256, dtype=jnp.int32).astype(image.dtype)
    return jnp.where(replace, values, image)


def perturb(rng: jax.Array, images: jax.Array, rate: float) -> jax.Array:
    """uint8 [B, H, W, C] -> uint8 [B, H, W, C] with a `rate` (μ) fraction of sub-pixels resampled
    uniformly; `rng` is one key or one key per example (key[B])."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"perturbation rate μ={rate} must be in [0, 1]")
    return jax.vmap(_perturb_one, in_axes=(0, 0, None))(split_keys(rng, images.shape[0]), images, rate)
