"""A convolutional VAE with an importance-weighted log-likelihood bound.

`VAEModel` holds the hyper-parameters and exposes pure functions of `(params, images, rng)`;
`VAENet` is the flax module behind it. Images go in as uint8 [B, H, W, C]; the model owns its
preprocessing (dynamic binarisation for a Bernoulli likelihood, [-1, 1] scaling for the
discretised logistic mixture).
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from oodgen.models.inputs import checks_inputs
from oodgen.models.pixels import PixelModelMixin
from oodgen.sharding import split_keys


class Encoder(nn.Module):
    """x f32[B, H, W, C] -> (mean f32[B, Z], log_std f32[B, Z]); each stride-2 conv halves H and W."""
    channels: Sequence[int]
    latent_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        for width in self.channels:
            x = nn.swish(nn.Conv(width, (4, 4), strides=(2, 2))(x))
        x = x.reshape(x.shape[0], -1)
        mean, log_std = jnp.split(nn.Dense(2 * self.latent_dim)(x), 2, axis=-1)
        return mean, log_std


def depth_to_space(x: jax.Array) -> jax.Array:
    """f32[B, H, W, 4C] -> f32[B, 2H, 2W, C] (pixel shuffle)."""
    b, h, w, c4 = x.shape
    c = c4 // 4
    return x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)


class Decoder(nn.Module):
    """z f32[B, Z] -> per-pixel likelihood parameters f32[B, H, W, out_features].

    Upsampling is a 3x3 conv to 4x the channels and a pixel shuffle: on CPU it is an order of
    magnitude faster than a transposed convolution of the same receptive field.
    """
    channels: Sequence[int]
    image_shape: tuple[int, int, int]
    out_features: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        height, width, _ = self.image_shape
        scale = 2 ** len(self.channels)
        base = (height // scale, width // scale, self.channels[-1])
        x = nn.swish(nn.Dense(math.prod(base))(z)).reshape(z.shape[0], *base)
        widths = [*reversed(self.channels[:-1]), self.out_features]
        for i, width_ in enumerate(widths):
            x = depth_to_space(nn.Conv(4 * width_, (3, 3))(x))
            if i < len(widths) - 1:
                x = nn.swish(x)
        return x


class VAENet(nn.Module):
    """Encoder and decoder under one parameter tree; `__call__` only exists to initialise both."""
    channels: Sequence[int]
    latent_dim: int
    image_shape: tuple[int, int, int]
    out_features: int

    def setup(self):
        self.encoder = Encoder(self.channels, self.latent_dim)
        self.decoder = Decoder(self.channels, self.image_shape, self.out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        mean, _ = self.encoder(x)
        return self.decoder(mean)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x f32[B, H, W, C] -> (mean, log_std) f32[B, Z] of q(z | x)."""
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """z f32[B, Z] -> likelihood parameters f32[B, H, W, out_features]."""
        return self.decoder(z)


def _std_normal_log_prob(x: jax.Array) -> jax.Array:
    """Sum over the last axis of log N(x; 0, 1)."""
    return -0.5 * jnp.sum(x**2 + math.log(2 * math.pi), axis=-1)


@dataclasses.dataclass(frozen=True)
class VAEModel(PixelModelMixin):
    """A VAE on uint8 images of `image_shape`, with a Bernoulli or discretised logistic likelihood.

    Every public function is pure; `rng` is one key or one key per example (key[B]).
    """
    kind: ClassVar[str] = "vae"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    latent_dim: int = 16
    channels: tuple[int, ...] = (32, 64)
    likelihood: str = "bernoulli"
    num_mixtures: int = 5

    def __post_init__(self):
        self.pixels  # validates the likelihood
        self.check_divisible(2 ** len(self.channels), "2 ** number of conv stages")

    @property
    def net(self) -> VAENet:
        return VAENet(self.channels, self.latent_dim, self.image_shape, self.pixels.out_features)

    def _log_px(self, params: chex.ArrayTree, z: jax.Array, target: jax.Array,
                images: jax.Array) -> jax.Array:
        """log p(x | z) in nats: z f32[B, Z] -> f32[B]."""
        out = self.net.apply({"params": params}, z, method=VAENet.decode)
        return self.pixels.log_prob(out, target, images)

    @checks_inputs(keys="rng")
    def log_weights(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
                    num_samples: int = 1) -> jax.Array:
        """log p(x, z_s) - log q(z_s | x) for S posterior samples per example: f32[B, S], nats."""
        keys = split_keys(rng, images.shape[0])
        data_keys, latent_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        target = self.preprocess(data_keys, images)
        mean, log_std = self.net.apply({"params": params}, target, method=VAENet.encode)
        eps = jax.vmap(lambda k: jax.random.normal(k, (num_samples, self.latent_dim)))(latent_keys)
        z = mean[:, None] + jnp.exp(log_std)[:, None] * eps                   # [B, S, Z]
        log_q = _std_normal_log_prob(eps) - jnp.sum(log_std, axis=-1)[:, None]  # [B, S]
        log_prior = _std_normal_log_prob(z)                                    # [B, S]
        if num_samples == 1:  # the training loss: no inner vmap, so layer-wise gradient norms take the fast path
            log_px = self._log_px(params, z[:, 0], target, images)[:, None]
        else:
            log_px = jax.vmap(self._log_px, in_axes=(None, 1, None, None), out_axes=1)(
                params, z, target, images)                                     # [B, S]
        chex.assert_equal_shape([log_px, log_q, log_prior])
        return log_px + log_prior - log_q

    @checks_inputs(keys="rng")
    def log_prob(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
                 num_samples: int = 1) -> jax.Array:
        """Importance-weighted bound on log p(x) with S samples (S=1: the ELBO): f32[B], nats."""
        log_w = self.log_weights(params, images, rng, num_samples)
        return jax.nn.logsumexp(log_w, axis=1) - math.log(num_samples)

    @checks_inputs(keys="rng")
    def loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Per-example training loss, the negative ELBO: f32[B], nats."""
        return -self.log_prob(params, images, rng, num_samples=1)
