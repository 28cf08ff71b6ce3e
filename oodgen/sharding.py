"""Data parallelism: a mesh with a `data` axis, batch placement, pad-and-mask for ragged batches.

Per-example randomness is keyed by the example's index in its dataset (`example_keys`), so an
example's score does not depend on the batch it lands in, the padding, or the number of devices.
"""

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

DATA_AXIS = "data"


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process) with axis `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the `data` axis; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def round_up_batch_size(batch_size: int, mesh: Mesh) -> int:
    """The smallest multiple of the number of devices that is >= batch_size."""
    n = mesh.size
    return -(-batch_size // n) * n


def pad_batch(batch: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads the leading axis to `size` by repeating the last example.

    Returns (padded [size, ...], mask bool[size]) with mask True on the real examples. Padding with
    a real example (not zeros) keeps padded rows finite for any model.
    """
    n = batch.shape[0]
    if n == 0 or n > size:
        raise ValueError(f"cannot pad a batch of {n} examples to {size}")
    mask = np.arange(size) < n
    if n == size:
        return batch, mask
    filler = np.repeat(batch[-1:], size - n, axis=0)
    return np.concatenate([batch, filler], axis=0), mask


def example_keys(rng: jax.Array, indices: jax.Array) -> jax.Array:
    """One PRNG key per example, keyed by its global index: int[B] -> key[B]."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


def split_keys(rng: jax.Array, batch_size: int) -> jax.Array:
    """A single key -> key[batch_size]; per-example keys [batch_size] are returned as they are."""
    is_typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    if rng.ndim == (0 if is_typed else 1):
        return jax.random.split(rng, batch_size)
    if rng.shape[0] != batch_size:
        raise ValueError(f"got {rng.shape[0]} per-example keys for a batch of {batch_size}")
    return rng


def iterate_padded(images: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yields (start, padded batch [batch_size, ...], mask [batch_size]); every example exactly once."""
    for start in range(0, images.shape[0], batch_size):
        padded, mask = pad_batch(images[start:start + batch_size], batch_size)
        yield start, padded, mask


def map_batches(fn: Callable[..., jax.Array], images: np.ndarray, *, rng: jax.Array,
                batch_size: int, mesh: Mesh | None = None, desc: str | None = None,
                params: Any = None) -> np.ndarray:
    """Applies a per-example function over a whole dataset, sharded over the `data` axis.

    Args:
      fn: (params, images [b, ...], keys key[b]) -> f32[b] or f32[b, F]; jit it once, outside:
        every call here has the same shape, so it compiles once.
      images: [N, ...] host array; N need not divide the batch size.
      rng: base key; example i gets `fold_in(rng, i)`.
      params: a pytree passed whole (replicated) to every call.
    Returns:
      float32 [N] or [N, F] host array, one row per example, in order.
    """
    if images.shape[0] == 0:
        raise ValueError("cannot score an empty set of images")
    mesh = data_mesh() if mesh is None else mesh
    batch_size = round_up_batch_size(min(batch_size, images.shape[0]), mesh)
    shard = data_sharding(mesh)
    params = jax.device_put(params, replicated(mesh))
    outputs = []
    steps = -(-images.shape[0] // batch_size)
    for start, padded, mask in tqdm(iterate_padded(images, batch_size), total=steps, desc=desc,
                                    leave=False, disable=desc is None):
        keys = example_keys(rng, jnp.arange(start, start + batch_size))
        result = fn(params, jax.device_put(padded, shard), jax.device_put(keys, shard))
        outputs.append(np.asarray(jax.device_get(result))[mask])
    return np.concatenate(outputs, axis=0)
