"""A denoising diffusion model (DDPM, ε-prediction) and reconstruction-based OOD scores.

Graham et al. 2023, "Denoising diffusion models for out-of-distribution detection": noise an input
to several start times, denoise each back to t = 0 with a deterministic sampler, and score by the
reconstruction error, z-scored per start time against validation data and averaged (the z-scoring
is the scorer's: `oodgen.scorers.diffusion`). The model has no `log_prob`: it is not a likelihood model.

`DDPMModel` holds the hyper-parameters and exposes pure functions of `(params, images, rng)`;
`UNet` is the flax module behind it. Images go in as uint8 [B, H, W, C] and are scaled to [-1, 1].
Timesteps are 0-based: t in [0, T), with ᾱ_t = prod_{s <= t} (1 - β_s).
"""

import dataclasses
import math
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

BETA_SCHEDULES = ("linear", "cosine")


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding of timesteps: t int/f32[B] -> f32[B, dim] (dim even)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ResBlock(nn.Module):
    """x f32[B, H, W, C_in], temb f32[B, E] -> f32[B, H, W, channels]; two 3x3 convs, time-shifted."""
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        h = nn.Conv(self.channels, (3, 3))(nn.swish(x))
        h = h + nn.Dense(self.channels)(temb)[:, None, None, :]
        h = nn.Conv(self.channels, (3, 3))(nn.swish(h))
        skip = x if x.shape[-1] == self.channels else nn.Conv(self.channels, (1, 1))(x)
        return skip + h


class UNet(nn.Module):
    """ε-prediction U-Net with two resolutions: (x_t f32[B, H, W, C], t int[B]) -> ε f32[B, H, W, C].

    Full resolution at `num_filters` channels, half resolution at 2x; one skip connection.
    """
    num_filters: int
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        f = self.num_filters
        temb = timestep_embedding(t, 2 * (f // 2 + f % 2))
        temb = nn.Dense(4 * f)(nn.swish(nn.Dense(4 * f)(temb)))
        h = nn.Conv(f, (3, 3))(x)
        skip = ResBlock(f)(h, temb)                                      # [B, H, W, F]
        h = nn.Conv(2 * f, (3, 3), strides=(2, 2))(nn.swish(skip))       # [B, H/2, W/2, 2F]
        h = ResBlock(2 * f)(h, temb)
        h = ResBlock(2 * f)(h, temb)
        h = depth_to_space(nn.Conv(4 * f, (3, 3))(nn.swish(h)))         # [B, H, W, F]
        h = ResBlock(f)(jnp.concatenate([h, skip], axis=-1), temb)
        return nn.Conv(self.out_channels, (3, 3))(nn.swish(h))


def _beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """β_t for t in [0, T): float64[T]. linear: 1e-4..0.02; cosine: Nichol & Dhariwal 2021."""
    if name == "linear":
        return np.linspace(1e-4, 0.02, num_timesteps, dtype=np.float64)
    s = 0.008
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    return np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)


@dataclasses.dataclass(frozen=True)
class DDPMModel(ImageShapeMixin):
    """A DDPM on uint8 images of `image_shape`, scaled to x = images / 127.5 - 1 in [-1, 1].

    Every public function is pure; `rng` is one key or one key per example (key[B]).
    """
    kind: ClassVar[str] = "ddpm"
    capabilities: ClassVar[frozenset[str]] = frozenset({caps.DENOISING_SURROGATE, caps.RECONSTRUCTION})
    summary: ClassVar[str] = "ddpm offers a denoising (ε-prediction) loss and reconstructions, not a likelihood"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    num_filters: int = 32
    num_timesteps: int = 1000
    beta_schedule: str = "linear"

    def __post_init__(self):
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}; got {self.beta_schedule!r}")
        self.check_positive_int("num_timesteps")
        self.check_positive_int("num_filters")
        self.check_divisible(2, "one 2x downsampling")

    @property
    def net(self) -> UNet:
        return UNet(self.num_filters, self.image_shape[-1])

    @property
    def alphas_cumprod(self) -> jax.Array:
        """ᾱ_t = prod_{s <= t} (1 - β_s) for t in [0, T): f32[T], computed in float64."""
        betas = _beta_schedule(self.beta_schedule, self.num_timesteps)
        return jnp.asarray(np.cumprod(1.0 - betas), jnp.float32)

    @checks_inputs()
    def preprocess(self, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> f32 [B, H, W, C] in [-1, 1]."""
        return images.astype(jnp.float32) / 127.5 - 1.0

    @checks_inputs()
    def init(self, rng: jax.Array, images: jax.Array) -> chex.ArrayTree:
        """Parameters for this model, from a (small) batch of uint8 images."""
        x = self.preprocess(images)
        return self.net.init(rng, x, jnp.zeros(x.shape[0], jnp.int32))["params"]

    @checks_inputs("x0", kind=SCALED, per_example=("t",))
    def q_sample(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """Forward noising x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε: x0, noise f32[B, H, W, C], t int[B]."""
        abar = self.alphas_cumprod[t].reshape(-1, *([1] * (x0.ndim - 1)))
        return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise

    @checks_inputs("x_t", kind=SCALED, per_example=("t",))
    def eps(self, params: chex.ArrayTree, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """Predicted noise ε_θ(x_t, t): x_t f32[B, H, W, C] in [-1, 1] scale, t int[B] -> f32[B, H, W, C]."""
        return self.net.apply({"params": params}, x_t, t)

    @checks_inputs(keys="rng")
    def loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Per-example ε-prediction loss ‖ε - ε_θ(x_t, t)‖² summed over pixels, t ~ U[0, T): f32[B]."""
        keys = split_keys(rng, images.shape[0])
        t_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        t = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.num_timesteps))(t_keys)
        noise = jax.vmap(lambda k: jax.random.normal(k, self.image_shape))(noise_keys)
        x_t = self.q_sample(self.preprocess(images), t, noise)
        return jnp.sum((noise - self.eps(params, x_t, t)) ** 2, axis=(1, 2, 3))

    @checks_inputs(keys="rng")
    def denoising_loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """The ε-prediction loss of `loss`, f32[B]: a denoising surrogate, NOT a likelihood or a bound (not
        nats, never bits/dim). The loss gradient-norm features of this model are taken of."""
        return self.loss(params, images, rng)

    def sampling_timesteps(self, num_sampling_steps: int) -> np.ndarray:
        """The deterministic sampler's timesteps τ_j = j·(T // n) for j in [0, n): int[n], ascending."""
        if not 1 <= num_sampling_steps <= self.num_timesteps:
            raise ValueError(f"num_sampling_steps must be in [1, {self.num_timesteps}] (T); "
                             f"got {num_sampling_steps}")
        return np.arange(num_sampling_steps) * (self.num_timesteps // num_sampling_steps)

    @checks_inputs(keys="rng")
    def reconstruct(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
                    start_steps: tuple[int, ...], num_sampling_steps: int = 100) -> jax.Array:
        """Noise-then-denoise reconstructions, one per start step: f32[S, B, H, W, C] in [0, 1].

        Start step s in [0, n] (n = num_sampling_steps): s = 0 returns the input unchanged; s >= 1
        noises x0 to τ_{s-1} with ε drawn from the example's key (the same ε for every start step),
        then takes s deterministic DDIM (η = 0) steps τ_{s-1} -> ... -> τ_0 -> clean (ᾱ = 1).
        The chains run longest first: one `lax.scan` over sampler steps per gap between consecutive
        start steps, batched over the chains begun so far, so the network runs sum(start_steps)
        times per image. `start_steps` is static: jit with it bound (e.g. functools.partial).
        """
        taus = self.sampling_timesteps(num_sampling_steps)
        starts = tuple(int(s) for s in start_steps)
        if not starts or any(not 0 <= s <= num_sampling_steps for s in starts):
            raise ValueError(f"start_steps must be a non-empty tuple of ints in [0, "
                             f"{num_sampling_steps}] (num_sampling_steps); got {start_steps}")
        batch, num_starts = images.shape[0], len(starts)
        keys = split_keys(rng, batch)
        noise = jax.vmap(lambda k: jax.random.normal(k, self.image_shape))(keys)
        x0 = self.preprocess(images)

        abar = self.alphas_cumprod[jnp.asarray(taus)]                       # ᾱ at τ_j, [n]
        abar_prev = jnp.concatenate([jnp.ones(1, jnp.float32), abar[:-1]])  # ᾱ after step j, [n]
        order = sorted(range(num_starts), key=lambda i: -starts[i])        # longest chain first
        s = np.asarray([starts[i] for i in order])                          # [S], descending
        a_start = jnp.where(s > 0, abar[np.maximum(s - 1, 0)], 1.0)[:, None, None, None, None]
        x = jnp.sqrt(a_start) * x0[None] + jnp.sqrt(1.0 - a_start) * noise[None]   # [S, B, H, W, C]

        def step(x, j):
            """One DDIM step τ_j -> τ_{j-1} (or clean) for every row of x f32[k, B, H, W, C]."""
            t = jnp.full((x.shape[0] * batch,), jnp.asarray(taus)[j])
            e = self.eps(params, x.reshape(-1, *self.image_shape), t).reshape(x.shape)
            x0_pred = (x - jnp.sqrt(1.0 - abar[j]) * e) / jnp.sqrt(abar[j])
            return jnp.sqrt(abar_prev[j]) * x0_pred + jnp.sqrt(1.0 - abar_prev[j]) * e, None

        # Segment k runs the steps between the k-th and (k+1)-th longest starts on the k + 1 chains
        # already started, so no network evaluation is spent on a chain that has not begun.
        for k in range(num_starts):
            lower = int(s[k + 1]) if k + 1 < num_starts else 0
            if s[k] > lower:
                active, _ = jax.lax.scan(step, x[:k + 1], jnp.arange(s[k] - 1, lower - 1, -1))
                x = jnp.concatenate([active, x[k + 1:]])
        x = x[np.argsort(order)]
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    @checks_inputs(keys="rng")
    def reconstruction_errors(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array,
                              start_steps: tuple[int, ...], num_sampling_steps: int = 100) -> jax.Array:
        """Per-example MSE in [0, 1] pixel units between reconstruction and input: f32[B, S]."""
        recon = self.reconstruct(params, images, rng, start_steps, num_sampling_steps)
        target = images.astype(jnp.float32) / 255.0
        return jnp.mean((recon - target[None]) ** 2, axis=(2, 3, 4)).T
