"""DDPM reconstruction (Graham et al. 2023): noise each image to several start times of a deterministic
sampler's schedule, denoise back, and measure the per-example MSE at each start time; each start time's
errors are z-scored against held-out in-distribution images and averaged. Higher = more OOD.
"""

import dataclasses
import functools
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer


def zscore_mean(errors: jax.Array, val_errors: jax.Array) -> jax.Array:
    """Final DDPM OOD score, higher = more OOD: errors f32[N, S], val_errors f32[M, S] -> f32[N].

    Each column (start step) is z-scored with the mean and (population) standard deviation of the
    validation errors only, then averaged over S. A column with zero validation spread is only
    centred (divided by 1).
    """
    errors, val_errors = jnp.asarray(errors), jnp.asarray(val_errors)
    if errors.ndim != 2 or val_errors.ndim != 2 or errors.shape[1] != val_errors.shape[1]:
        raise ValueError(f"need errors [N, S] and val_errors [M, S] with the same S; got "
                         f"{errors.shape} and {val_errors.shape}")
    if val_errors.shape[0] == 0:
        raise ValueError("val_errors is empty; z-scoring needs validation errors")
    mean = jnp.mean(val_errors, axis=0)
    std = jnp.std(val_errors, axis=0)
    std = jnp.where(std > 0, std, 1.0)
    return jnp.mean((errors - mean) / std, axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("start_steps", "num_sampling_steps"))
def reconstruction_errors(model, num_samples: int, params: chex.ArrayTree, images: jax.Array, keys: jax.Array, *,
                          start_steps: tuple[int, ...], num_sampling_steps: int) -> jax.Array:
    """MSE of the reconstruction from every start step, pixels in [0, 1]: f32[B, S]."""
    del num_samples
    return model.reconstruction_errors(params, images, keys, start_steps, num_sampling_steps)


@dataclasses.dataclass(frozen=True)
class ReconstructionFitState:
    params: chex.ArrayTree
    validation_errors: np.ndarray  # f32[M, S]


@dataclasses.dataclass(frozen=True)
class DDPMReconstructionScorer(ModelScorer):
    """Mean over start steps of z-scored reconstruction MSEs; start steps every `start_every` steps of a
    `num_sampling_steps`-step deterministic schedule (the reference: every 4th of 100 for Fashion-MNIST)."""
    num_sampling_steps: int = 100
    start_every: int = 4
    name: str = "ddpm_reconstruction"
    units: str = "mean z-scored reconstruction MSE"
    requires: ClassVar = ((caps.RECONSTRUCTION,),)
    fits_on_data: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.start_every <= self.num_sampling_steps:
            raise OodgenError(f"config.eval.ddpm_reconstruction.start_every={self.start_every} must be in "
                              f"[1, num_sampling_steps={self.num_sampling_steps}]")

    @property
    def start_steps(self) -> tuple[int, ...]:
        return tuple(range(self.start_every, self.num_sampling_steps + 1, self.start_every))

    def errors(self, params: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """f32[N, S]: reconstruction MSE from each start step."""
        fn = functools.partial(reconstruction_errors, start_steps=self.start_steps,
                               num_sampling_steps=self.num_sampling_steps)
        return self.map_model(fn, params, images)

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> ReconstructionFitState:
        """Reconstruction errors of held-out in-distribution images: the z-scoring statistics."""
        return ReconstructionFitState(params, self.errors(params, in_dist))

    def score(self, state: ReconstructionFitState, images: np.ndarray) -> np.ndarray:
        """f32[N]: mean over start steps of the errors z-scored against the held-out ones."""
        return np.asarray(zscore_mean(self.errors(state.params, images), state.validation_errors), np.float32)
