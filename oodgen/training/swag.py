"""SWAG (Maddox et al. 2019): a Gaussian posterior over the parameters from the SGD iterates.

Over the last part of training, every `collect_every` steps from `start_step` on, the iterate θ_i is
folded into running moments and a buffer of the last K deviations:

  θ̄ = mean_i θ_i,   θ̄² = mean_i θ_i²   (elementwise),   D = [θ_j − θ̄_j] for the last K iterates j,

where θ̄_j is the running mean just after θ_j was folded in (as the reference implementation does).
A posterior sample (rank K, diagonal Σ_diag = max(θ̄² − θ̄², 0)):

  θ = θ̄ + (1/√2) · Σ_diag^{1/2} ⊙ z1 + (1/√(2(K − 1))) · D z2,   z1 ~ N(0, I_P), z2 ~ N(0, I_K),

so Cov(θ) = ½ Σ_diag + D Dᵀ / (2(K − 1)). While fewer than K deviations have been collected, K is the
number collected (empty buffer rows are not used). Everything here is a pure function of pytrees.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SwagState:
    """SWAG statistics of a parameter pytree θ (leaves f32[...]); stacked [M, ...] for an ensemble.

    count: int32 [], iterates collected; mean, sq_mean: pytrees like θ (running means of θ and θ²);
    deviations: pytree like θ with a leading [K] axis, a ring buffer of the last K deviations
    (row (count − 1) mod K is the newest).
    """
    count: jax.Array
    mean: chex.ArrayTree
    sq_mean: chex.ArrayTree
    deviations: chex.ArrayTree

    @property
    def rank(self) -> int:
        """K, the number of deviation rows kept."""
        return jax.tree.leaves(self.deviations)[0].shape[self.count.ndim]


@dataclasses.dataclass(frozen=True)
class SwagSettings:
    """When to collect (after `start_step` steps, then every `collect_every` steps) and the rank K."""
    start_step: int
    collect_every: int
    rank: int

    def collects_after(self, steps_done: int) -> bool:
        """Whether the iterate after `steps_done` optimiser steps is collected."""
        past = steps_done - self.start_step
        return past >= 0 and past % self.collect_every == 0


def init_swag(params: chex.ArrayTree, rank: int) -> SwagState:
    """Empty statistics (count 0, zero moments, K = `rank` zero deviation rows) for parameters like `params`."""
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    return SwagState(count=jnp.zeros((), jnp.int32), mean=zeros, sq_mean=zeros,
                     deviations=jax.tree.map(lambda p: jnp.zeros((rank, *p.shape), jnp.float32), params))


def collect(state: SwagState, params: chex.ArrayTree) -> SwagState:
    """Folds one iterate θ into the running moments and writes θ − θ̄ (new mean) into the ring buffer."""
    n = state.count + 1
    weight = 1.0 / n.astype(jnp.float32)
    mean = jax.tree.map(lambda m, p: m + (p.astype(jnp.float32) - m) * weight, state.mean, params)
    sq_mean = jax.tree.map(lambda s, p: s + (jnp.square(p.astype(jnp.float32)) - s) * weight, state.sq_mean, params)
    row = (n - 1) % state.rank
    deviations = jax.tree.map(
        lambda d, p, m: jax.lax.dynamic_update_index_in_dim(d, p.astype(jnp.float32) - m, row, axis=0),
        state.deviations, params, mean)
    return SwagState(count=n, mean=mean, sq_mean=sq_mean, deviations=deviations)


def swag_sample(state: SwagState, rng: jax.Array, num_samples: int) -> chex.ArrayTree:
    """`num_samples` draws θ = θ̄ + Σ_diag^{1/2} ⊙ z1/√2 + D z2/√(2(K − 1)): pytree of f32[S, ...].

    K is min(count, rank); with K < 2 only the diagonal part is drawn (count ≥ 2 is the caller's check).
    """
    leaves, treedef = jax.tree.flatten(state.mean)
    sq_leaves = treedef.flatten_up_to(state.sq_mean)
    dev_leaves = treedef.flatten_up_to(state.deviations)
    rank = state.rank
    used = jnp.minimum(state.count, rank)
    low_rank_scale = jax.lax.rsqrt(2.0 * jnp.maximum(used - 1, 1).astype(jnp.float32))
    z2_key, *z1_keys = jax.random.split(rng, len(leaves) + 1)
    z2 = jax.random.normal(z2_key, (num_samples, rank)) * (jnp.arange(rank) < used)   # [S, K], unused rows off
    samples = []
    for mean, sq_mean, dev, key in zip(leaves, sq_leaves, dev_leaves, z1_keys):
        sd = jnp.sqrt(jnp.maximum(sq_mean - jnp.square(mean), 0.0))
        z1 = jax.random.normal(key, (num_samples, *mean.shape))
        low_rank = jnp.tensordot(z2, dev, axes=(1, 0))                                  # [S, ...]
        samples.append(mean + sd * z1 * (2.0 ** -0.5) + low_rank_scale * low_rank)
    return jax.tree.unflatten(treedef, samples)
