"""Per-example squared gradient norms of a model's loss, one feature per parameter tensor.

f_l(x) = ‖∇_{θ_l} loss(x)‖² for every parameter tensor θ_l (each weight and each bias separately),
as in Dauncey et al. The gradients are `vmap(grad)` over examples, inside one jitted function that
also takes the norms, so only a chunk of per-example gradients is ever materialised: memory is
bounded by `chunk_size` × (number of parameters), whatever the batch size.

The "group" variant takes the gradient of the loss summed over G consecutive examples.
"""

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

LossFn = Callable[[chex.ArrayTree, jax.Array, jax.Array], jax.Array]  # (params, images [b], keys [b]) -> f32[b]


def tensor_names(params: chex.ArrayTree) -> list[str]:
    """'/'-joined paths of the parameter tensors, in the order of the feature columns."""
    return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            for path, _ in jax.tree_util.tree_leaves_with_path(params)]


def tensor_sizes(params: chex.ArrayTree) -> list[int]:
    """Number of entries of each parameter tensor (the chi-square degrees of freedom), feature order."""
    return [int(leaf.size) for leaf in jax.tree.leaves(params)]


def _squared_norms(tree: chex.ArrayTree) -> jax.Array:
    return jnp.stack([jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)])


def group_grad_sq_norms(loss_fn: LossFn, params: chex.ArrayTree, images: jax.Array, keys: jax.Array,
                        group_size: int = 1, chunk_size: int = 8) -> jax.Array:
    """‖∇_{θ_l} Σ_{i in group} loss(x_i)‖² per group of `group_size` consecutive examples.

    Args:
      loss_fn: per-example loss, (params, images [b, ...], keys key[b]) -> f32[b].
      images: [B, ...] with B a multiple of group_size; keys: key[B], one per example.
      chunk_size: groups whose gradients are materialised at once (memory bound).
    Returns:
      f32[B // group_size, n_tensors]; with group_size=1, one row per example.
    """
    batch = images.shape[0]
    if batch % group_size:
        raise ValueError(f"batch of {batch} is not a multiple of the group size {group_size}")
    groups = batch // group_size
    chunk_size = max(1, min(chunk_size, groups))
    num_chunks = -(-groups // chunk_size)
    padded = num_chunks * chunk_size

    def regroup(x):  # [B, ...] -> [num_chunks, chunk_size, group_size, ...], padding with the last group
        x = x.reshape(groups, group_size, *x.shape[1:])
        x = jnp.concatenate([x, jnp.repeat(x[-1:], padded - groups, axis=0)], axis=0)
        return x.reshape(num_chunks, chunk_size, group_size, *x.shape[2:])

    def one_group(group_images, group_keys):
        grads = jax.grad(lambda p: jnp.sum(loss_fn(p, group_images, group_keys)))(params)
        return _squared_norms(grads)

    norms = jax.lax.map(lambda chunk: jax.vmap(one_group)(*chunk), (regroup(images), regroup(keys)))
    return norms.reshape(padded, -1)[:groups]


def per_example_grad_sq_norms(loss_fn: LossFn, params: chex.ArrayTree, images: jax.Array, keys: jax.Array,
                              chunk_size: int = 8) -> jax.Array:
    """‖∇_{θ_l} loss(x_i)‖² for every example i and tensor l: f32[B, n_tensors]."""
    return group_grad_sq_norms(loss_fn, params, images, keys, 1, chunk_size)
