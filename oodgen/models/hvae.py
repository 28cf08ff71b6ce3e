"""A hierarchical VAE with top-down (ladder) inference, and the L^{>k} bounds of Havtorn et al. 2021.

Levels are numbered from the bottom: level 1 is the latent closest to the pixels, level L the top.
Convolutional latents come first (each at half the resolution of the one below), then dense ones.

Inference runs a deterministic bottom-up pass once, h_1 ... h_L, then a top-down pass: level i has a
conditional prior p(z_i | z_{>i}) and a posterior q(z_i | z_{>i}, x) computed from the top-down state
and h_i. For L^{>k} the k lowest levels are not inferred: they are the mode (default, as in the
reference) or a sample of their conditional prior, and they contribute no KL term.

`bounds` evaluates every k = 0 .. L-1 and every importance sample in one compiled call: the k and the
sample are vmapped axes of the top-down pass, the bottom-up pass runs once, and the noise is shared
across k so that the likelihood ratios L - L^{>k} compare like with like.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from oodgen.models import likelihoods
from oodgen.models import capabilities as caps
from oodgen.models.inputs import checks_inputs
from oodgen.models.pixels import PixelModelMixin
from oodgen.models.vae import depth_to_space
from oodgen.sharding import split_keys

PRIOR_LEVEL_CHOICES = ("mode", "sample")
_MIN_STD = 1e-3
_SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(_SOFTPLUS_ONE) = 1
_LOG_2PI = math.log(2 * math.pi)


def _conv(features: int, kernel: int = 3, stride: int = 1, scale: float = 1.0) -> nn.Module:
    """A weight-normalised conv whose filters start with L2 norm `scale`."""
    return nn.WeightNorm(nn.Conv(features, (kernel, kernel), strides=(stride, stride)),
                         scale_init=nn.initializers.constant(scale))


def _dense(features: int, scale: float = 1.0) -> nn.Module:
    """A weight-normalised dense layer whose columns start with L2 norm `scale`."""
    return nn.WeightNorm(nn.Dense(features), scale_init=nn.initializers.constant(scale))


class ResBlock(nn.Module):
    """x + f(x): two weight-normalised convs (or dense layers) with swish activations.

    The second layer starts small, so a deep stack of blocks starts close to the identity.
    """
    features: int
    dense: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        layer = _dense if self.dense else _conv
        h = layer(self.features)(nn.swish(x))
        h = layer(self.features, scale=0.1)(nn.swish(h))
        return x + h


class GaussianHead(nn.Module):
    """Features -> (mean, std) of a diagonal Gaussian over `features` channels (dense or 3x3 conv).

    Starts near N(0, 1): a small output layer and std = softplus(raw + log(e - 1)) + min_std.
    """
    features: int
    dense: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        layer = _dense if self.dense else _conv
        out = layer(2 * self.features, scale=0.1)(nn.swish(x))
        mean, raw_std = jnp.split(out, 2, axis=-1)
        return mean, nn.softplus(raw_std + _SOFTPLUS_ONE) + _MIN_STD


def _gaussian_log_prob(z: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log N(z; mean, std²) summed over all but the leading (batch) axis: f32[B]."""
    per_dim = -0.5 * (((z - mean) / std) ** 2 + _LOG_2PI) - jnp.log(std)
    return likelihoods.sum_per_example(per_dim)


def _gaussian_kl(mean_q, std_q, mean_p, std_p) -> jax.Array:
    """KL(N(mean_q, std_q²) || N(mean_p, std_p²)) summed over all but the batch axis: f32[B]."""
    per_dim = (jnp.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5)
    return likelihoods.sum_per_example(per_dim)


def latent_shapes(image_shape: tuple[int, int, int], latent_channels: Sequence[int],
                  latent_units: Sequence[int]) -> list[tuple[int, ...]]:
    """Per-example shape of z_1 ... z_L (bottom to top): conv levels at halving resolutions, then dense."""
    height, width, _ = image_shape
    shapes = [(height // 2 ** (i + 1), width // 2 ** (i + 1), c) for i, c in enumerate(latent_channels)]
    return shapes + [(u,) for u in latent_units]


class HVAEInference(nn.Module):
    """The inference network q: the deterministic bottom-up pass and the posterior heads of every level.

    Its parameters are `params["encoder"]`, the only ones likelihood regret fine-tunes.
    """
    width: int
    dense_width: int
    latent_channels: Sequence[int]
    latent_units: Sequence[int]
    blocks_per_level: int

    def setup(self):
        num_conv = len(self.latent_channels)
        self.down = [_conv(self.width, 4, 2) for _ in range(num_conv)]
        self.up_blocks = [[ResBlock(self.width) for _ in range(self.blocks_per_level)] for _ in range(num_conv)]
        self.down_to_dense = _conv(self.width, 4, 2)
        self.to_dense = _dense(self.dense_width)
        self.up_dense = [ResBlock(self.dense_width, dense=True) for _ in self.latent_units]
        self.posteriors = [GaussianHead(c, False) for c in self.latent_channels] + \
                          [GaussianHead(u, True) for u in self.latent_units]

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """x f32[B, H, W, C] -> [h_1, ..., h_L], the deterministic features each posterior sees."""
        hs = []
        h = x
        for down, blocks in zip(self.down, self.up_blocks):
            h = down(h)
            for block in blocks:
                h = block(h)
            hs.append(h)
        h = self.down_to_dense(nn.swish(h))
        h = self.to_dense(h.reshape(h.shape[0], -1))
        for block in self.up_dense:
            h = block(h)
            hs.append(h)
        return hs

    def posterior(self, level: int, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, std) of q(z_{level+1} | .) from the top-down state and h (concatenated, or h alone at the top)."""
        return self.posteriors[level](features)


class HVAEGenerative(nn.Module):
    """The generative model p: conditional priors, the top-down pass and the pixel decoder."""
    image_shape: tuple[int, int, int]
    width: int
    dense_width: int
    latent_channels: Sequence[int]
    latent_units: Sequence[int]
    blocks_per_level: int
    out_features: int

    def setup(self):
        num_conv = len(self.latent_channels)
        height, width, _ = self.image_shape
        self.dense_grid = (height // 2 ** (num_conv + 1), width // 2 ** (num_conv + 1))
        self.from_dense = _dense(math.prod(self.dense_grid) * self.width)
        self.up_from_dense = _conv(4 * self.width)
        self.priors = [GaussianHead(c, False) for c in self.latent_channels] + \
                      [GaussianHead(u, True) for u in self.latent_units]
        self.z_in = [_conv(self.width) for _ in self.latent_channels] + \
                    [_dense(self.dense_width) for _ in self.latent_units]
        self.down_blocks = [[ResBlock(self.width) for _ in range(self.blocks_per_level)] for _ in range(num_conv)] + \
                           [[ResBlock(self.dense_width, dense=True)] for _ in self.latent_units]
        self.upsample = [_conv(4 * self.width) for _ in range(num_conv)]
        self.out = nn.Conv(self.out_features, (3, 3))

    def __call__(self, t: jax.Array) -> jax.Array:
        """Initialises the pixel decoder only; the other layers are reached through `HVAENet.top_down`."""
        return self.out(nn.swish(t))


class HVAENet(nn.Module):
    """A ladder HVAE: `encoder` (HVAEInference) and `decoder` (HVAEGenerative), see the module docstring."""
    image_shape: tuple[int, int, int]
    width: int
    dense_width: int
    latent_channels: Sequence[int]
    latent_units: Sequence[int]
    blocks_per_level: int
    out_features: int

    @property
    def num_levels(self) -> int:
        return len(self.latent_channels) + len(self.latent_units)

    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Per-example shape of z_1 ... z_L (bottom to top)."""
        return latent_shapes(self.image_shape, self.latent_channels, self.latent_units)

    def setup(self):
        self.encoder = HVAEInference(self.width, self.dense_width, self.latent_channels, self.latent_units,
                                     self.blocks_per_level)
        self.decoder = HVAEGenerative(self.image_shape, self.width, self.dense_width, self.latent_channels,
                                      self.latent_units, self.blocks_per_level, self.out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Initialises every parameter: one top-down pass with zero noise and all levels inferred."""
        hs = self.bottom_up(x)
        eps = [jnp.zeros((x.shape[0], *s)) for s in self.latent_shapes()]
        return self.top_down(hs, eps, jnp.int32(0), True)[0]

    def bottom_up(self, x: jax.Array) -> list[jax.Array]:
        """x f32[B, H, W, C] -> [h_1, ..., h_L], the deterministic features each posterior sees."""
        return self.encoder(x)

    def top_down(self, hs: list[jax.Array], eps: list[jax.Array], k: jax.Array,
                 prior_mode: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One top-down pass in which levels 1..k come from the conditional prior.

        Args:
          hs: bottom-up features, as from `bottom_up`.
          eps: standard normal noise per level, f32[B, *latent_shape_i].
          k: int scalar (may be traced): how many of the lowest levels are not inferred.
          prior_mode: those levels take the prior's mode (True) or a sample with the same noise.
        Returns:
          (likelihood parameters f32[B, H, W, out_features], log p(z_i|.) - log q(z_i|.) f32[L, B],
           analytic KL(q || p) per level f32[L, B]); both are 0 for levels <= k.
        """
        p = self.decoder
        num_conv = len(self.latent_channels)
        batch = hs[0].shape[0]
        log_ratios, kls = [None] * self.num_levels, [None] * self.num_levels
        t = None
        for i in reversed(range(self.num_levels)):
            dense = i >= num_conv
            if i == num_conv - 1:  # first conv level below the dense ones: back to a feature map
                t = p.from_dense(nn.swish(t)).reshape(batch, *p.dense_grid, self.width)
                t = depth_to_space(p.up_from_dense(nn.swish(t)))
            if t is None:  # the top level has a standard normal prior
                mean_p, std_p = jnp.zeros_like(eps[i]), jnp.ones_like(eps[i])
                mean_q, std_q = self.encoder.posterior(i, hs[i])
            else:
                mean_p, std_p = p.priors[i](t)
                mean_q, std_q = self.encoder.posterior(i, jnp.concatenate([t, hs[i]], axis=-1))
            inferred = i >= k  # level i + 1 (1-based) is above k
            z_prior = mean_p if prior_mode else mean_p + std_p * eps[i]
            z = jnp.where(inferred, mean_q + std_q * eps[i], z_prior)
            log_ratio = _gaussian_log_prob(z, mean_p, std_p) - _gaussian_log_prob(z, mean_q, std_q)
            log_ratios[i] = jnp.where(inferred, log_ratio, 0.0)
            kls[i] = jnp.where(inferred, _gaussian_kl(mean_q, std_q, mean_p, std_p), 0.0)

            z_features = p.z_in[i](z)
            t = z_features if t is None else t + z_features
            for block in p.down_blocks[i]:
                t = block(t)
            if not dense:
                t = depth_to_space(p.upsample[i](nn.swish(t)))
        return p(t), jnp.stack(log_ratios), jnp.stack(kls)


@dataclasses.dataclass(frozen=True)
class HVAEModel(PixelModelMixin):
    """Ladder HVAE on uint8 images, with a Bernoulli or discretised logistic mixture likelihood.

    Public functions are pure; `rng` is one key or one key per example (key[B]).
    """
    kind: ClassVar[str] = "hvae"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    width: int = 64
    dense_width: int = 256
    latent_channels: tuple[int, ...] = (8,)
    latent_units: tuple[int, ...] = (16, 8)
    blocks_per_level: int = 1
    likelihood: str = "bernoulli"
    num_mixtures: int = 10
    prior_levels: str = "mode"   # how L^{>k} fills the k lowest levels: "mode" (reference) or "sample"

    def __post_init__(self):
        self.pixels  # validates the likelihood
        if self.prior_levels not in PRIOR_LEVEL_CHOICES:
            raise ValueError(f"prior_levels must be one of {PRIOR_LEVEL_CHOICES}, got {self.prior_levels!r}")
        if self.num_levels < 2:
            raise ValueError("a hierarchical VAE needs at least 2 latent levels (latent_channels + latent_units)")
        if not self.latent_units or not self.latent_channels:
            raise ValueError("give at least one conv level (latent_channels) below at least one dense level "
                             "(latent_units); the top level is dense")
        self.check_divisible(2 ** (len(self.latent_channels) + 1), "2 ** (number of conv latent levels + 1)")

    @property
    def num_levels(self) -> int:
        return len(self.latent_channels) + len(self.latent_units)

    @property
    def capabilities(self) -> frozenset[str]:
        return super().capabilities | {caps.LATENT_LEVELS}

    @property
    def net(self) -> HVAENet:
        return HVAENet(self.image_shape, self.width, self.dense_width, self.latent_channels,
                       self.latent_units, self.blocks_per_level, self.pixels.out_features)

    def _prepare(self, params, images, rng, num_samples):
        """Per-example keys -> (binarised/scaled target, bottom-up features, noise [S, B, ...] per level)."""
        keys = split_keys(rng, images.shape[0])
        data_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        target = self.preprocess(data_keys, images)
        hs = self.net.apply({"params": params}, target, method=HVAENet.bottom_up)
        level_keys = jax.vmap(lambda key: jax.random.split(key, self.num_levels))(noise_keys)  # [B, L]
        eps = [jnp.moveaxis(jax.vmap(lambda key: jax.random.normal(key, (num_samples, *shape)))(level_keys[:, i]),
                            1, 0)
               for i, shape in enumerate(self.net.latent_shapes())]
        return target, hs, eps

    def _terms(self, params, target, images, hs, eps, k):
        """log p(x|z) f32[B], log-ratio f32[L, B] and KL f32[L, B] of one top-down pass."""
        out, log_ratio, kl = self.net.apply({"params": params}, hs, eps, k, self.prior_levels == "mode",
                                            method=HVAENet.top_down)
        return self.pixels.log_prob(out, target, images), log_ratio, kl

    @checks_inputs(keys="rng")
    def elbo_terms(self, params: chex.ArrayTree, images: jax.Array,
                   rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One posterior sample: (log p(x|z) f32[B], analytic KL(q(z_i|.) || p(z_i|z_{>i})) f32[L, B]), nats.

        Levels are ordered bottom (index 0, z_1) to top. ELBO = log_px - kl.sum(0).
        """
        target, hs, eps = self._prepare(params, images, rng, 1)
        log_px, _, kl = self._terms(params, target, images, hs, [e[0] for e in eps], jnp.int32(0))
        chex.assert_shape(kl, (self.num_levels, images.shape[0]))
        return log_px, kl

    @checks_inputs(keys="rng")
    def bound(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array, k: int | jax.Array = 0,
              num_samples: int = 1) -> jax.Array:
        """L^{>k} for one k (may be traced): the importance-weighted bound with S samples, f32[B], nats.

        k=0 gives L. This is the reference's way, one pass per k; `bounds` gives every k at once.
        """
        target, hs, eps = self._prepare(params, images, rng, num_samples)
        per_sample = jax.vmap(lambda e: self._terms(params, target, images, hs, e, jnp.asarray(k, jnp.int32)))
        log_px, log_ratio, _ = per_sample(eps)                         # [S, B], [S, L, B]
        log_w = log_px + log_ratio.sum(axis=1)
        return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)

    @checks_inputs(keys="rng")
    def log_weights(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
                    num_samples: int = 1) -> jax.Array:
        """log p(x, z_s) / q(z_s | x) of L^{>k}'s bound for every k = 0 .. L-1 and sample s: f32[L, B, S].

        One bottom-up pass; the top-down pass has k and s as vmapped axes; the noise is shared across k.
        """
        target, hs, eps = self._prepare(params, images, rng, num_samples)
        one = lambda e, k: self._terms(params, target, images, hs, e, k)  # noqa: E731
        all_k = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))
        log_px, log_ratio, _ = all_k(eps, jnp.arange(self.num_levels))  # [K, S, B], [K, S, L, B]
        return jnp.swapaxes(log_px + log_ratio.sum(axis=2), 1, 2)

    @checks_inputs(keys="rng")
    def bounds(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
               num_samples: int = 1) -> jax.Array:
        """L^{>k} for every k = 0 .. L-1 in one pass (k and the S samples vmapped): f32[L, B], nats."""
        log_w = self.log_weights(params, images, rng, num_samples)
        result = jax.nn.logsumexp(log_w, axis=-1) - math.log(num_samples)
        chex.assert_shape(result, (self.num_levels, images.shape[0]))
        return result

    @checks_inputs(keys="rng")
    def log_prob(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
                 num_samples: int = 1) -> jax.Array:
        """The importance-weighted bound L with S samples (S=1: a one-sample ELBO): f32[B], nats."""
        return self.bound(params, images, rng, 0, num_samples)

    @checks_inputs(keys="rng")
    def loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Per-example negative ELBO with analytic KL terms: f32[B], nats."""
        log_px, kl = self.elbo_terms(params, images, rng)
        return kl.sum(axis=0) - log_px
