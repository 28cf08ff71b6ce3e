"""The scorer contract, and a base for scorers that map a jitted per-example function over a dataset."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import chex
import jax
import numpy as np
from jax.sharding import Mesh

from oodgen import sharding
from oodgen.models.capabilities import Requirement, check_pair
from oodgen.validation import check_images


class Scorer(Protocol):
    """Fitted on in-distribution data, then one score per image: higher = more OOD.

    Scorers that give a family of scores in one pass also have `score_all(state, images) -> {name: f32[N]}`.
    Declared, class-level: `requires` (what the model must offer, `oodgen.models.capabilities`; checked by
    `build_scorer` before any work), `fits_on_data` (whether `fit` estimates anything from the
    in-distribution images), `needs_reference` (a second trained model, resolved by the caller) and
    `needs_stacked_params` (parameters of M models stacked [M, ...]).
    """
    name: str     # key in scores.npz / metrics.json
    units: str    # what a score measures, for plot axes
    requires: ClassVar[tuple[Requirement, ...]]
    fits_on_data: ClassVar[bool]
    needs_reference: ClassVar[bool]
    needs_stacked_params: ClassVar[bool]

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> Any:
        """State for `score`, from model parameters and uint8 in-distribution images [N, H, W, C]."""

    def score(self, state: Any, images: np.ndarray) -> np.ndarray:
        """f32[N] for uint8 images [N, H, W, C]; every image gets a score, higher = more OOD."""


@dataclasses.dataclass(frozen=True)
class ModelScorer:
    """Shared fields of scorers built on one model; `fit` keeps the parameters as the state."""
    model: Any
    num_samples: int = 16
    batch_size: int = 500
    seed: int = 0
    mesh: Mesh | None = None
    requires: ClassVar[tuple[Requirement, ...]] = ()
    fits_on_data: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_stacked_params: ClassVar[bool] = False
    composes_scorers: ClassVar[bool] = False  # built from other scorers: build_scorer passes config.eval
    feature_report: ClassVar[bool] = False    # evaluation tables and plots the mean of each score per set
    score_units: ClassVar[dict[str, str]] = {}  # units of the scores of `score_all` that differ from `units`

    def __post_init__(self):
        """Refuses, in one line, a model that does not offer what this scorer `requires`."""
        check_pair(getattr(self, "name", type(self).__name__), self.requires, self.model)

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> chex.ArrayTree:
        del in_dist  # nothing to estimate
        return params

    def score_all(self, state: Any, images: np.ndarray) -> dict[str, np.ndarray]:
        """{score name: f32[N]}: every score this scorer gives in one pass; by default its one score."""
        return {self.name: self.score(state, images)}

    def groups(self, num_images: int) -> np.ndarray | None:
        """int[N]: the group of each image when images share one score (they are resampled together by the
        bootstrap); None when every image has its own."""
        del num_images
        return None

    def has_pixel_maps(self, state: Any) -> bool:
        """Whether `pixel_maps(state, images) -> f32[N, H, W]` can run for this state."""
        del state
        return False

    def map_model(self, fn: Callable, params: chex.ArrayTree, images: np.ndarray, model: Any = None) -> np.ndarray:
        """`fn(model, num_samples, params, images, keys)` (jitted, model and S static) over every image.

        `model` defaults to the scorer's. Checks the images first; example i gets key fold_in(key(seed), i).
        Returns f32[N] or f32[N, ...].
        """
        model = self.model if model is None else model
        images = check_images(images, model.image_shape)
        return sharding.map_batches(functools.partial(fn, model, self.num_samples), images,
                                    rng=jax.random.key(self.seed), batch_size=self.batch_size, mesh=self.mesh,
                                    desc=getattr(self, "name", None), params=params)
