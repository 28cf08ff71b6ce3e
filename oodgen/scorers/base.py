"""The scorer contract: fitted on in-distribution data, then one score per image, higher = more OOD."""

from typing import Any, Protocol

import chex
import numpy as np


class Scorer(Protocol):
    name: str     # key in scores.npz / metrics.json
    units: str    # what a score measures, for plot axes

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> Any:
        """State for `score`, from model parameters and uint8 in-distribution images [N, H, W, C]."""

    def score(self, state: Any, images: np.ndarray) -> np.ndarray:
        """f32[N] for uint8 images [N, H, W, C]; every image gets a score, higher = more OOD."""
