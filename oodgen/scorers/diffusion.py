"""DDPM reconstruction (Graham et al. 2023): noise each image to several start times of a deterministic
sampler's schedule, denoise back, and measure the per-example MSE at each start time; each start time's
errors are z-scored against held-out in-distribution images and averaged. Higher = more OOD.
"""

import dataclasses
import functools

import chex
import jax
import numpy as np

from oodgen.errors import OodgenError
from oodgen.models.ddpm import zscore_mean
from oodgen.scorers.base import ModelScorer


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

    def __post_init__(self):
        if not 1 <= self.start_every <= self.num_sampling_steps:
            raise OodgenError(f"config.eval.ddpm_reconstruction.start_every={self.start_every} must be in "
                              f"[1, num_sampling_steps={self.num_sampling_steps}]")
        if not hasattr(self.model, "reconstruction_errors"):
            raise OodgenError(f"the ddpm_reconstruction scorer needs a diffusion model (model 'ddpm'), "
                              f"not {type(self.model).__name__}")

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
