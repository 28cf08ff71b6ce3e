"""A noise-conditional score network for multiscale score matching (Mahmood et al. 2021, MSMA).

`ScoreNetModel` holds the hyper-parameters and exposes pure functions of `(params, images, rng)`;
`ScoreNet` is the flax module behind it. Images go in as uint8 [B, H, W, C] and are scaled to
[0, 1] (`images / 255`, no dequantisation); every noise level σ is in those units.

The network s_θ(x, σ) estimates ∇_x log p_σ(x), the score of the data smoothed by N(0, σ² I). It is
trained by denoising score matching (DSM) over a geometric ladder of L noise levels, with the
σ²-weighted loss of NCSN: ½ σ² ‖s_θ(x + σz, σ) + z/σ‖². It is not a likelihood model: `log_prob`
has no `log_prob`: its capabilities (`oodgen.models.capabilities`) say it offers a denoising loss and a
score function. The OOD features are `msma_features`, the norms ‖σ_i s_θ(x, σ_i)‖ of the scores at the
clean input for every level.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oodgen.models import capabilities as caps
from oodgen.models.inputs import SCALED, checks_inputs
from oodgen.models.pixels import ImageShapeMixin
from oodgen.models.vae import depth_to_space
from oodgen.sharding import split_keys

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def per_example(sigma: jax.Array | float, x: jax.Array) -> jax.Array:
    """σ as a scalar or f32[B] -> f32[B, 1, ..., 1], broadcastable against x f32[B, ...]."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - 1))


def dsm_loss(score_fn: ScoreFn, x: jax.Array, sigma: jax.Array, noise: jax.Array) -> jax.Array:
    """σ²-weighted denoising score matching loss for any score function: f32[B].

    ½ σ² ‖score_fn(x + σ z, σ) + z / σ‖², summed over every non-batch axis; written as
    ½ ‖σ s + z‖², the same value without dividing by a small σ.

    Args:
      score_fn: (x̃ f32[B, ...], σ f32[B]) -> f32[B, ...].
      x: clean data f32[B, ...]; sigma: f32[B] or a scalar; noise: z ~ N(0, I), f32[B, ...].
    """
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
    s = per_example(sigma, x)
    residual = s * score_fn(x + s * noise, sigma) + noise
    return 0.5 * jnp.sum(residual.reshape(x.shape[0], -1) ** 2, axis=-1)


def optimal_gaussian_score(x: jax.Array, sigma: jax.Array | float, mu: jax.Array | float,
                           sigma_data: float) -> jax.Array:
    """The exact score of N(μ, σ_d² I) smoothed by N(0, σ² I): −(x − μ) / (σ² + σ_d²), f32[B, ...].

    σ is a scalar or f32[B]; μ broadcasts against x. The minimiser of `dsm_loss` on such data.
    """
    s = per_example(sigma, x)
    return -(x - mu) / (s**2 + sigma_data**2)


NORMS = ("none", "instance_plus")


class ConditionalInstanceNormPlus(nn.Module):
    """NCSN's conditional instance normalisation++ (Song & Ermon 2019): h f32[B, H, W, F], emb f32[B, E] ->
    γ (h − μ)/s + β + α (μ − mean_F μ)/std_F μ, with μ, s each channel's spatial mean and standard deviation
    and γ, β, α per channel from the σ-embedding. The last term keeps each image's channel means, the global
    statistics of the whole image that a stack of 3x3 convolutions cannot see."""

    @nn.compact
    def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        features = h.shape[-1]
        mu = jnp.mean(h, axis=(1, 2), keepdims=True)                                   # [B, 1, 1, F]
        std = jnp.sqrt(jnp.var(h, axis=(1, 2), keepdims=True) + 1e-5)
        m = jnp.mean(mu, axis=-1, keepdims=True)
        v = jnp.sqrt(jnp.var(mu, axis=-1, keepdims=True) + 1e-5)
        gamma, beta, alpha = jnp.split(nn.Dense(3 * features)(emb)[:, None, None, :], 3, axis=-1)
        return (1.0 + gamma) * (h - mu) / std + beta + alpha * (mu - m) / v


class ResBlock(nn.Module):
    """h f32[B, H, W, F], σ-embedding f32[B, E] -> h + conv(swish(norm(conv(swish(norm(h))) + dense(emb)))),
    with `norm` the identity or `ConditionalInstanceNormPlus`."""
    features: int
    norm: str = "none"

    def _norm(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        return ConditionalInstanceNormPlus()(h, emb) if self.norm == "instance_plus" else h

    @nn.compact
    def __call__(self, h: jax.Array, emb: jax.Array) -> jax.Array:
        y = nn.Conv(self.features, (3, 3))(nn.swish(self._norm(h, emb)))
        y = y + nn.Dense(self.features)(emb)[:, None, None, :]
        y = nn.Conv(self.features, (3, 3))(nn.swish(self._norm(y, emb)))
        return h + y


class ScoreNet(nn.Module):
    """A two-resolution U-Net: (x f32[B, H, W, C], σ f32[B]) -> s_θ(x, σ) f32[B, H, W, C].

    Conditioned on σ twice: a learned embedding of log σ is added inside every residual block, and
    the output is divided by σ (NCSNv2), so the unit-scale network output is σ·s, the predicted −z.
    `norm="instance_plus"` normalises inside every residual block as NCSN's RefineNet does.
    """
    num_filters: int
    channels: int
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, sigma: jax.Array) -> jax.Array:
        nf, norm = self.num_filters, self.norm
        emb = nn.swish(nn.Dense(nf)(jnp.log(sigma)[:, None]))                # [B, nf]
        h = nn.Conv(nf, (3, 3))(x)                                             # [B, H, W, nf]
        skip = ResBlock(nf, norm)(h, emb)
        d = nn.Conv(2 * nf, (3, 3), strides=(2, 2))(nn.swish(skip))            # [B, H/2, W/2, 2nf]
        d = ResBlock(2 * nf, norm)(d, emb)
        d = ResBlock(2 * nf, norm)(d, emb)
        u = depth_to_space(nn.Conv(4 * nf, (3, 3))(nn.swish(d)))               # [B, H, W, nf]
        u = nn.Conv(nf, (3, 3))(jnp.concatenate([u, skip], axis=-1))
        u = ResBlock(nf, norm)(u, emb)
        out = nn.Conv(self.channels, (3, 3))(nn.swish(u))
        return out / per_example(sigma, out)


@dataclasses.dataclass(frozen=True)
class ScoreNetModel(ImageShapeMixin):
    """A noise-conditional score network on uint8 images of `image_shape`, scaled to [0, 1].

    `sigmas` are the L noise levels, geometric from `sigma_max` down to `sigma_min`, in units of
    the [0, 1] pixel scale. Every public function is pure; `rng` is one key or one key per example.
    """
    kind: ClassVar[str] = "score_net"
    capabilities: ClassVar[frozenset[str]] = frozenset({caps.DENOISING_SURROGATE, caps.SCORE_FUNCTION})
    summary: ClassVar[str] = "score_net offers a denoising score-matching loss, not a likelihood"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    num_filters: int = 32
    num_sigmas: int = 10
    sigma_max: float = 1.0
    sigma_min: float = 0.01
    norm: str = "none"   # "instance_plus": NCSN's conditional instance normalisation++ in every residual block

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        self.check_divisible(2, "one stride-2 downsampling")
        self.check_positive_int("num_filters")
        if self.num_sigmas < 2:
            raise ValueError(f"num_sigmas must be >= 2 (a ladder from sigma_max to sigma_min); "
                             f"got {self.num_sigmas}")
        if not (math.isfinite(self.sigma_max) and 0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf; got sigma_min={self.sigma_min}, "
                             f"sigma_max={self.sigma_max}")

    @property
    def net(self) -> ScoreNet:
        return ScoreNet(self.num_filters, self.image_shape[-1], self.norm)

    @property
    def sigmas(self) -> jax.Array:
        """f32[L]: σ_1 = sigma_max > ... > σ_L = sigma_min, a geometric sequence ([0, 1] pixel units)."""
        return jnp.asarray(np.geomspace(self.sigma_max, self.sigma_min, self.num_sigmas), jnp.float32)

    @checks_inputs()
    def preprocess(self, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> f32 [B, H, W, C] in [0, 1] (images / 255); deterministic."""
        return images.astype(jnp.float32) / 255.0

    @checks_inputs()
    def init(self, rng: jax.Array, images: jax.Array) -> chex.ArrayTree:
        """Parameters for this model, from a (small) batch of uint8 images."""
        x = self.preprocess(images)
        return self.net.init(rng, x, jnp.full(x.shape[:1], self.sigma_max, jnp.float32))["params"]

    @checks_inputs("x", kind=SCALED, per_example=("sigma",))
    def score(self, params: chex.ArrayTree, x: jax.Array, sigma: jax.Array | float) -> jax.Array:
        """s_θ(x, σ) ≈ ∇_x log p_σ(x): x f32[B, H, W, C] in [0, 1] units, σ f32[B] or scalar -> f32[B, H, W, C]."""
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
        return self.net.apply({"params": params}, x, sigma)

    @checks_inputs(keys="rng")
    def loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Per-example DSM loss at one noise level drawn uniformly from `sigmas`: f32[B].

        ½ σ_i² ‖s_θ(x + σ_i z, σ_i) + z/σ_i‖² summed over pixels; σ_i and z come from the
        example's own key, so an example's loss does not depend on the rest of the batch. Not nats.
        """
        x = self.preprocess(images)
        keys = split_keys(rng, x.shape[0])
        level_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        idx = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.num_sigmas))(level_keys)
        noise = jax.vmap(lambda k: jax.random.normal(k, self.image_shape))(noise_keys)
        return dsm_loss(lambda y, s: self.score(params, y, s), x, self.sigmas[idx], noise)

    @checks_inputs(keys="rng")
    def denoising_loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """The DSM loss of `loss`, f32[B]: a denoising surrogate, NOT a likelihood (not nats, never bits/dim).
        The loss gradient-norm features of this model are taken of."""
        return self.loss(params, images, rng)

    @checks_inputs()
    def msma_features(self, params: chex.ArrayTree, images: jax.Array) -> jax.Array:
        """‖σ_i s_θ(x, σ_i)‖₂ over H·W·C at the clean x = preprocess(images), every level: f32[B, L].

        All L levels are one vmapped axis. Deterministic: no noise is added to the input.
        """
        x = self.preprocess(images)

        def norms(sigma: jax.Array) -> jax.Array:
            scaled = sigma * self.score(params, x, sigma)
            return jnp.sqrt(jnp.sum(scaled.reshape(x.shape[0], -1) ** 2, axis=-1))   # [B]

        return jax.vmap(norms, out_axes=1)(self.sigmas)
