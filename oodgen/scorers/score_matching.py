"""Multiscale score matching (MSMA, Mahmood et al. 2021): the norms ‖σ_i · s_θ(x, σ_i)‖ of a
noise-conditional score network at every noise level, put under an auxiliary model fitted on held-out
in-distribution features (a Gaussian mixture with cross-validated components, or the distance to the
k-th nearest neighbour). Score = −log density or the distance; higher = more OOD.

Density settings: `density_options` {density: {field: value}} over MSMA_DENSITY_OPTIONS, the paper's
(a full-covariance GMM on standardised features with 2–20 components chosen by 10-fold cross-validation;
the distance to the 5th neighbour), passed to `oodgen.features.density.fit_density`.
"""

import dataclasses
import functools
from typing import ClassVar

import chex
import jax
import numpy as np

from oodgen.features import density
from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer


@functools.partial(jax.jit, static_argnums=(0, 1))
def msma_features(model, num_samples: int, params: chex.ArrayTree, images: jax.Array, keys: jax.Array) -> jax.Array:
    """‖σ_i · s_θ(x, σ_i)‖₂ for every noise level, on the clean images: f32[B, L]."""
    del num_samples, keys
    return model.msma_features(params, images)


MSMA_DENSITY_OPTIONS: density.DensityOptions = {
    "gmm": {"n_components": list(range(2, 21)), "folds": 10},
    "knn": {"k": 5},
}


@dataclasses.dataclass(frozen=True)
class MSMAFitState:
    params: chex.ArrayTree
    densities: dict  # name -> fitted auxiliary model


@dataclasses.dataclass(frozen=True)
class MSMAScorer(ModelScorer):
    """Scores `msma_<density>` for each of `densities` ("gmm", "knn", or any of `oodgen.features.density`)."""
    densities: tuple[str, ...] = ("gmm", "knn")
    name: str = "msma"
    units: str = "−log density (gmm) or k-NN distance (knn) of score norms"
    density_options: dict = dataclasses.field(default_factory=dict)  # over MSMA_DENSITY_OPTIONS, field by field
    requires: ClassVar = ((caps.SCORE_FUNCTION,),)
    fits_on_data: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        unknown = [d for d in self.densities if d not in density.DENSITIES]
        if not self.densities or unknown:
            raise OodgenError(f"config.eval.msma.densities={list(self.densities)}; choose from "
                              f"{sorted(density.DENSITIES)}")
        options = density.merge_options(MSMA_DENSITY_OPTIONS, self.density_options)
        object.__setattr__(self, "density_options", density.check_options(
            options, "config.eval.msma.density_options", used=self.densities))

    def features(self, params: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """f32[N, L]: the score norm at each noise level (`model.sigmas`, largest first)."""
        return self.map_model(msma_features, params, images)

    def feature_names(self, params: chex.ArrayTree) -> tuple[str, ...]:
        """Column names of `features`: sigma_<σ_i>, largest σ first."""
        del params
        return tuple(f"sigma_{float(s):.4g}" for s in np.asarray(self.model.sigmas))

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> MSMAFitState:
        """Fits each auxiliary model on the features of held-out in-distribution images."""
        features = self.features(params, in_dist)
        return MSMAFitState(params, {name: density.fit_density(name, features, **self.density_options.get(name, {}))
                                     for name in self.densities})

    def score_all(self, state: MSMAFitState, images: np.ndarray) -> dict[str, np.ndarray]:
        """{msma_<density>: f32[N]}."""
        features = self.features(state.params, images)
        return {f"msma_{name}": fitted.score(features).astype(np.float32) for name, fitted in state.densities.items()}

    def score(self, state: MSMAFitState, images: np.ndarray) -> np.ndarray:
        """f32[N]: the score under the first of `densities`."""
        return next(iter(self.score_all(state, images).values()))
