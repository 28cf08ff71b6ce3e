"""Hierarchical-VAE likelihood ratios (Havtorn et al. 2021): LLR^{>k} = L - L^{>k}, higher = more OOD.

One compiled pass gives L^{>k} for every k (see `HVAEModel.bounds`); the scorer reports, per image,
−L and −L^{>k} in bits/dim and LLR^{>k} = L − L^{>k} in bits/dim (divide by D ln 2 from nats; the
ranking, and so every metric, is the same in nats).
"""

import dataclasses
import functools
import math
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from oodgen.models import likelihoods
from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer


@functools.partial(jax.jit, static_argnums=(0, 1))
def bounds_and_elbos(model, num_samples: int, params: chex.ArrayTree, images: jax.Array,
                     keys: jax.Array) -> jax.Array:
    """Per example, from the same samples: L^{>k} (importance-weighted) for k = 0 .. L-1, then the
    S-sample average ELBO^{>k}: uint8 [B, H, W, C] -> f32[B, 2L], nats."""
    log_w = model.log_weights(params, images, keys, num_samples)          # [L, B, S]
    iw = jax.nn.logsumexp(log_w, axis=-1) - math.log(num_samples)
    return jnp.concatenate([iw, log_w.mean(axis=-1)], axis=0).T


@functools.partial(jax.jit, static_argnums=(0, 1))
def kl_terms(model, num_samples: int, params: chex.ArrayTree, images: jax.Array, keys: jax.Array) -> jax.Array:
    """Analytic KL(q(z_i|.) || p(z_i|z_>i)) of every level, one posterior sample (`elbo_terms`): f32[B, L], nats."""
    del num_samples
    return model.elbo_terms(params, images, keys)[1].T


@dataclasses.dataclass(frozen=True)
class HierarchicalLLRScorer(ModelScorer):
    """LLR^{>k} of a hierarchical model (one offering latent levels); `score` uses `k`, default L - 1."""
    k: int | None = None
    name: str = "hvae_llr"
    units: str = "bits/dim"
    requires: ClassVar = ((caps.LATENT_LEVELS,),)

    def __post_init__(self):
        super().__post_init__()
        if self.k is not None and not 1 <= self.k < self.model.num_levels:
            raise OodgenError(f"k={self.k} must be in 1..{self.model.num_levels - 1} for this model")

    def features(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """L^{>k} for every k = 0 .. L-1 (column k), in nats: f32[N, L]."""
        return self.map_model(bounds_and_elbos, state, images)[:, :self.model.num_levels]

    def feature_names(self, state: chex.ArrayTree) -> tuple[str, ...]:
        """Column names of `features`: bound_k0 (= L) .. bound_k<L-1>."""
        del state
        return tuple(f"bound_k{k}" for k in range(self.model.num_levels))

    def score_all(self, state: chex.ArrayTree, images: np.ndarray) -> dict[str, np.ndarray]:
        """In bits/dim, for k = 1 .. L-1: {"log_likelihood": −L, "neg_elbo": −ELBO (same samples),
        "llr_k<k>": L − L^{>k}, "neg_bound_k<k>": −L^{>k}}."""
        both = likelihoods.bits_per_dim(self.map_model(bounds_and_elbos, state, images), self.model.num_dims)
        bounds = both[:, :self.model.num_levels]
        scores = {"log_likelihood": -bounds[:, 0], "neg_elbo": -both[:, self.model.num_levels]}
        for k in range(1, bounds.shape[1]):
            scores[f"llr_k{k}"] = bounds[:, 0] - bounds[:, k]
        for k in range(1, bounds.shape[1]):
            scores[f"neg_bound_k{k}"] = -bounds[:, k]
        return scores

    def score(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """LLR^{>k} in bits/dim, f32[N]."""
        k = self.model.num_levels - 1 if self.k is None else self.k
        return self.score_all(state, images)[f"llr_k{k}"]


@dataclasses.dataclass(frozen=True)
class KLPerLevelScorer(ModelScorer):
    """A feature scorer: the analytic KL(q(z_i|.) || p(z_i|z_>i)) of every latent level of a hierarchical
    model, one posterior sample per image, in nats. Scores `kl_z1` (closest to the pixels) .. `kl_zL` (higher
    KL = the level spends more nats on the image); its features are the same numbers, f32[N, L].

    `feature_report`: evaluation also tables the mean of each score per set and plots them side by side.
    """
    name: str = "kl_per_level"
    units: str = "KL of the level (nats)"
    requires: ClassVar = ((caps.LATENT_LEVELS,),)
    feature_report: ClassVar[bool] = True

    def features(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """KL of every latent level (column i: z_{i+1}, bottom first), one posterior sample, nats: f32[N, L]."""
        return self.map_model(kl_terms, state, images)

    def feature_names(self, state: chex.ArrayTree) -> tuple[str, ...]:
        """Column names of `features`: z1 (closest to the pixels) .. zL."""
        del state
        return tuple(f"z{i + 1}" for i in range(self.model.num_levels))

    def score_all(self, state: chex.ArrayTree, images: np.ndarray) -> dict[str, np.ndarray]:
        """{"kl_z<i>": f32[N]} for i = 1 .. L, nats."""
        kl = self.features(state, images)
        return {f"kl_{n}": kl[:, i] for i, n in enumerate(self.feature_names(state))}

    def score(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """The KL of the lowest level z1, nats: f32[N]."""
        return self.features(state, images)[:, 0]
