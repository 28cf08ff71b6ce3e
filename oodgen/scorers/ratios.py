"""Likelihood ratios against a second, reference model trained separately (its own workdir):

  background_ratio  (Ren et al. 2019) the reference is the same architecture trained on perturbed inputs
                    (`config.train.perturbation_rate` μ, `config.train.l2_weight`): it captures background
                    statistics, so the ratio cancels them and keeps the semantic part of the likelihood.
  local_ratio       (Zhang et al., NeLLoC) the reference is a local autoregressive model (a small horizon):
                    the full model gains little over local features on OOD data.

Score = log p_reference(x) − log p_model(x) in bits/dim (higher = more OOD). For autoregressive models
(`log_prob_per_pixel`) the per-pixel ratio map shows where the evidence comes from.
"""

import dataclasses
import functools
from typing import Any, ClassVar

import chex
import jax
import numpy as np

from oodgen.errors import OodgenError
from oodgen.models.likelihoods import bits_per_dim, negative_log_likelihood_bpd
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
    """A second trained model: `model` and its `params`; `origin` says where it came from, for messages
    (e.g. "config.eval.background_ratio.workdir='runs/bg'"). The evaluation layer resolves a workdir into
    one (`oodgen.evaluation.harness.reference_resolver`); a library user can build one from any (model, params)."""
    model: Any
    params: chex.ArrayTree
    origin: str = "the reference model"


@dataclasses.dataclass(frozen=True)
class RatioState:
    params: chex.ArrayTree
    reference: Any                    # the reference model
    reference_params: chex.ArrayTree


@functools.partial(jax.jit, static_argnums=(0, 1))
def per_pixel_log_prob(model, num_samples: int, params: chex.ArrayTree, images: jax.Array,
                       keys: jax.Array) -> jax.Array:
    """log P(pixel | previous pixels), all channels jointly: f32[B, H, W], nats."""
    del num_samples, keys
    return model.log_prob_per_pixel(params, images)


@dataclasses.dataclass(frozen=True)
class ReferenceRatioScorer(ModelScorer):
    """log p_reference(x) − log p_model(x), bits/dim. `reference` (a `Reference`) is given by the caller.

    Both models must offer a likelihood of the same data (both of the 8-bit pixels, or both of binarised
    pixels) and the same image shape: a ratio of likelihoods of different data is meaningless.
    """
    reference: Reference | None = None
    name: str = "reference_ratio"
    units: str = "log p_reference − log p_model (bits/dim)"
    requires: ClassVar = (caps.LIKELIHOOD,)
    needs_reference: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if self.reference is None:
            raise OodgenError(f"{self.name} needs a reference model: set config.eval.{self.name}.workdir to the "
                              "workdir of the trained reference model")
        ref = self.reference
        caps.check_pair(f"{self.name}'s reference ({ref.origin})", self.requires, ref.model)
        kind, ref_kind = (caps.likelihood_kind(m.capabilities) for m in (self.model, ref.model))
        if kind != ref_kind:
            raise OodgenError(f"{self.name}: the model's likelihood is of {caps.DATA_OF[kind]} but the "
                              f"reference's ({ref.origin}: {ref.model.summary}) is of {caps.DATA_OF[ref_kind]}; "
                              "train the reference with the same model.likelihood")
        if tuple(ref.model.image_shape) != tuple(self.model.image_shape):
            raise OodgenError(f"{self.name}: the reference ({ref.origin}) is for images {ref.model.image_shape}, "
                              f"not {self.model.image_shape}; train it on the same data")

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> RatioState:
        del in_dist
        return RatioState(params, self.reference.model, self.reference.params)

    def score(self, state: RatioState, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] -> f32[N]: NLL_model − NLL_reference in bits/dim."""
        nll = self.map_model(negative_log_likelihood_bpd, state.params, images)
        nll_reference = self.map_model(negative_log_likelihood_bpd, state.reference_params, images, state.reference)
        return nll - nll_reference

    def has_pixel_maps(self, state: RatioState) -> bool:
        """Whether both models are autoregressive (per-pixel likelihoods), so `pixel_maps` can run."""
        return all(caps.PER_PIXEL in m.capabilities for m in (self.model, state.reference))

    def pixel_maps(self, state: RatioState, images: np.ndarray) -> np.ndarray:
        """Per-pixel log p_reference − log p_model: f32[N, H, W], bits per pixel (all channels)."""
        if not self.has_pixel_maps(state):
            raise OodgenError(f"{self.name} pixel maps need autoregressive models (per-pixel likelihoods)")
        model_map = self.map_model(per_pixel_log_prob, state.params, images)
        reference_map = self.map_model(per_pixel_log_prob, state.reference_params, images, state.reference)
        return bits_per_dim(reference_map - model_map, 1)  # nats -> bits


@dataclasses.dataclass(frozen=True)
class BackgroundRatioScorer(ReferenceRatioScorer):
    """Ren et al. 2019: the reference is a background model trained on perturbed inputs."""
    name: str = "background_ratio"
    units: str = "log p_background − log p_model (bits/dim)"


@dataclasses.dataclass(frozen=True)
class LocalRatioScorer(ReferenceRatioScorer):
    """Zhang et al. (NeLLoC): the reference is a local autoregressive model; the model is the full one.
    Both must model the 8-bit pixels."""
    name: str = "local_ratio"
    units: str = "log p_local − log p_full (bits/dim)"
    requires: ClassVar = ((caps.PIXEL_LIKELIHOOD,),)
