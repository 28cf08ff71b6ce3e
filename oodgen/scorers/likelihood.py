"""The plain likelihood score (Nalisnick et al. 2019): negative log-likelihood in bits per dimension.

Higher = more OOD. This is the score that fails on Fashion-MNIST -> MNIST (the paradox).
"""

import dataclasses
import functools
from typing import Any

import chex
import jax
import numpy as np
from jax.sharding import Mesh

from oodgen import likelihoods, sharding
from oodgen.validation import check_images


@dataclasses.dataclass(frozen=True)
class LikelihoodScorer:
    """−log p(x) / (D ln 2) with the model's importance-weighted bound over `num_samples` samples."""
    model: Any
    num_samples: int = 16
    batch_size: int = 500
    seed: int = 0
    mesh: Mesh | None = None
    name: str = "log_likelihood"
    units: str = "negative log-likelihood (bits/dim)"

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> chex.ArrayTree:
        del in_dist  # nothing to estimate
        return params

    def score(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.model.image_shape)
        fn = functools.partial(negative_log_likelihood_bpd, self.model, self.num_samples)
        return sharding.map_batches(fn, images, rng=jax.random.key(self.seed), batch_size=self.batch_size,
                                    mesh=self.mesh, desc=self.name, params=state)


@functools.partial(jax.jit, static_argnums=(0, 1))
def negative_log_likelihood_bpd(model, num_samples: int, params: chex.ArrayTree, images: jax.Array,
                                keys: jax.Array) -> jax.Array:
    """−(importance-weighted bound) in bits per dimension: uint8 [B, H, W, C] -> f32[B]."""
    nll = -model.log_prob(params, images, keys, num_samples)
    return likelihoods.bits_per_dim(nll, model.num_dims)
