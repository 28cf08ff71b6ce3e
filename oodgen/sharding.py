"""Data parallelism over every device of every process: a mesh with a `data` axis, global batches built
from process-local rows, pad-and-mask for ragged batches, and joining a multi-process run.

Per-example randomness is keyed by the example's index in its dataset (`example_keys`), so an
example's score does not depend on the batch it lands in, the padding, or the number of devices or
processes.

Multi-process (multi-host) runs: every process runs the same program; `initialize_distributed` joins
them (before any other JAX use); the `data` mesh then spans the devices of all processes, each process
builds only its own rows of every global batch (`process_rows`, `global_batch`), and results are
gathered so every process holds all of them (`to_host`). Only the main process writes files.
"""

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from oodgen.errors import OodgenError

DATA_AXIS = "data"

# Multi-process settings: `config.distributed.<field>`, or these environment variables, which win.
DISTRIBUTED_DEFAULTS = {"coordinator_address": "", "num_processes": 1, "process_id": 0}
DISTRIBUTED_ENV = {"coordinator_address": "OODGEN_COORDINATOR_ADDRESS", "num_processes": "OODGEN_NUM_PROCESSES",
                   "process_id": "OODGEN_PROCESS_ID"}
AUTO = "auto"  # coordinator_address=auto: let JAX detect the cluster (Slurm, Open MPI, TPU, Kubernetes)


def distributed_settings(settings: Mapping[str, Any] | None = None,
                         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """{coordinator_address, num_processes, process_id}: `settings` (e.g. config.distributed) overridden by
    the OODGEN_COORDINATOR_ADDRESS / OODGEN_NUM_PROCESSES / OODGEN_PROCESS_ID environment variables."""
    environ = os.environ if environ is None else environ
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DISTRIBUTED_DEFAULTS))
    if unknown:
        raise OodgenError(f"unknown key(s) {unknown} in config.distributed; known: {sorted(DISTRIBUTED_DEFAULTS)}")
    out = {**DISTRIBUTED_DEFAULTS, **settings}
    for field, var in DISTRIBUTED_ENV.items():
        if environ.get(var, "") != "":
            out[field] = environ[var]
    out["coordinator_address"] = str(out["coordinator_address"]).strip()
    for field in ("num_processes", "process_id"):
        try:
            out[field] = int(out[field])
        except (TypeError, ValueError):
            raise OodgenError(f"distributed {field}={out[field]!r} (config.distributed.{field} or "
                              f"{DISTRIBUTED_ENV[field]}) must be a whole number") from None
    return out


def initialize_distributed(settings: Mapping[str, Any] | None = None) -> bool:
    """Joins a multi-process run with `jax.distributed.initialize` when one is configured.

    Call it before any other JAX use (the CLIs do, right after reading the config). `settings` are
    `config.distributed` (see `distributed_settings` for the environment variables that override it).
    An empty coordinator address means a single process: nothing happens and it returns False;
    "auto" lets JAX detect the cluster; "HOST:PORT" (process 0's host, a free port) needs
    num_processes and this process's process_id. Returns True when this process is part of a
    multi-process run (also when it already was).
    """
    s = distributed_settings(settings)
    address, num, pid = s["coordinator_address"], s["num_processes"], s["process_id"]
    if not address:
        if (num, pid) != (1, 0):
            raise OodgenError(f"num_processes={num}, process_id={pid} but no coordinator address: set "
                              "config.distributed.coordinator_address (or OODGEN_COORDINATOR_ADDRESS) to "
                              "HOST:PORT of process 0")
        return False
    if jax.distributed.is_initialized():
        return True
    if address != AUTO:
        if not re.fullmatch(r"\S+:\d+", address):
            raise OodgenError(f"coordinator address {address!r} must be HOST:PORT (process 0's host and a free "
                              f"port, e.g. 10.0.0.1:1234), or {AUTO!r} to detect the cluster")
        if num < 1 or not 0 <= pid < num:
            raise OodgenError(f"process_id={pid} must be in 0..num_processes-1 with num_processes={num} >= 1; "
                              "give each process its own id (config.distributed or OODGEN_PROCESS_ID)")
    kwargs = {} if address == AUTO else dict(coordinator_address=address, num_processes=num, process_id=pid)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:
        raise OodgenError(f"cannot join the multi-process run (coordinator {address}, process {pid} of {num}): "
                          f"{type(e).__name__}: {str(e)[:300]}; start every process with the same coordinator "
                          "address and num_processes, distinct process ids, before any other JAX use") from None
    return True


def is_main_process() -> bool:
    """True on process 0 (the only one that writes files, prints reports and shows progress bars)."""
    return jax.process_index() == 0


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over `devices` (default: every device of every process, grouped by
    process, so each process's devices hold a contiguous block of every batch)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id)) if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the `data` axis; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state)."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array leaf of `tree` whole on every device of `mesh` (all processes).

    Leaves already replicated over `mesh` by a NamedSharding are kept; the rest are placed, even when
    their sharding is equivalent (one device), so that a jitted step sees the sharding it returns and
    compiles once. Host values must be the same on every process (e.g. parameters initialised from the
    same seed). Works with one process or many.
    """
    target = replicated(mesh)

    def put(x):
        if (isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
                and x.sharding.is_equivalent_to(target, x.ndim)):
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, target)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.jit(lambda a: a, out_shardings=target)(x)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), target)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), target)

    return jax.tree.map(put, tree)


def round_up_batch_size(batch_size: int, mesh: Mesh) -> int:
    """The smallest multiple of the number of devices (of all processes) that is >= batch_size."""
    n = mesh.size
    return -(-batch_size // n) * n


def process_rows(global_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch [global_size, ...] that this process's devices hold under
    `data_sharding(mesh)`: one contiguous block (everything with one process)."""
    index_map = data_sharding(mesh).addressable_devices_indices_map((global_size,))
    bounds = sorted({index[0].indices(global_size)[:2] for index in index_map.values()})
    if not bounds:
        raise OodgenError("the data mesh holds none of this process's devices; build it with "
                          "sharding.data_mesh() (every device of every process)")
    if any(stop != start for (_, stop), (start, _) in zip(bounds, bounds[1:])):
        raise OodgenError("this process's devices are not contiguous in the data mesh; build it with "
                          "sharding.data_mesh(), which groups devices by process")
    return slice(bounds[0][0], bounds[-1][1])


def global_batch(local: np.ndarray | jax.Array, global_size: int, mesh: Mesh) -> jax.Array:
    """This process's rows (`process_rows(global_size, mesh)`) of a batch -> the global batch
    [global_size, ...], split over the `data` axis of every process's devices."""
    return jax.make_array_from_process_local_data(data_sharding(mesh), local, (global_size, *local.shape[1:]))


def shard_batch(images: np.ndarray, indices: np.ndarray, mesh: Mesh) -> jax.Array:
    """images[indices] as a global array split over `data` along the batch axis, of which this process
    reads and transfers only its own rows.

    indices int[B] (one batch) -> [B, ...]; int[M, B] (M batches, e.g. one per ensemble member) ->
    [M, B, ...] with the B axis split (PartitionSpec(None, "data")).
    """
    indices = np.asarray(indices)
    rows = process_rows(indices.shape[-1], mesh)
    local = np.asarray(images[indices[..., rows]])
    spec = PartitionSpec(*[None] * (indices.ndim - 1), DATA_AXIS)
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local,
                                                  (*indices.shape, *local.shape[indices.ndim:]))


def to_host(x: jax.Array) -> np.ndarray:
    """A (possibly multi-process) array -> the whole of it as a numpy array, on every process."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


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


class _StaticFn:
    """`fn` as a static jit argument, equal for equal `functools.partial`s of one function (callers build a
    fresh partial per call), so each per-device program compiles once per shape, not once per call."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.key = fn
        if isinstance(fn, functools.partial):
            key = (fn.func, fn.args, tuple(sorted(fn.keywords.items())))
            try:
                hash(key)
                self.key = key
            except TypeError:
                pass

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StaticFn) and self.key == other.key


@functools.partial(jax.jit, static_argnums=(0, 1))
def _per_device(fn: _StaticFn, mesh: Mesh, params: Any, images: jax.Array, keys: jax.Array) -> jax.Array:
    """fn on each device's own rows (shard_map over `data`), parameters whole on every device."""
    rows = PartitionSpec(DATA_AXIS)
    return jax.shard_map(fn.fn, mesh=mesh, in_specs=(PartitionSpec(), rows, rows), out_specs=rows,
                         check_vma=False)(params, images, keys)


def map_batches(fn: Callable[..., jax.Array], images: np.ndarray, *, rng: jax.Array,
                batch_size: int, mesh: Mesh | None = None, desc: str | None = None,
                params: Any = None, block: int = 1) -> np.ndarray:
    """Applies a per-example function over a whole dataset, data-parallel over every device of every process.

    Global batch b holds examples [b·B, (b + 1)·B), the last one padded with copies of the last
    example (B: batch_size rounded up to a multiple of block × the device count). Each process reads
    and transfers only its own rows of each batch, and each device runs `fn` on its own rows
    (`jax.shard_map`): a per-example program is never handed to XLA's SPMD partitioner, which gets
    batch-sharded grouped convolutions (per-example conv-kernel gradients) wrong on XLA:CPU in JAX
    0.10. The results are gathered, so every process returns all of them; with several processes,
    every process must make the same calls.

    Args:
      fn: (params, images [b, ...], keys key[b]) -> f32[b] or f32[b, F], row i from example i alone
        (or from its block); jit it once, outside: every call here has the same shape, so it compiles once.
      images: [N, ...] host array (anything numpy-indexable); N need not divide the batch size.
      rng: base key; example i gets `fold_in(rng, i)`.
      params: a pytree passed whole (replicated) to every call.
      block: `fn` couples runs of `block` consecutive examples (e.g. gradient groups): they stay on one
        device. N must then be a multiple of block.
    Returns:
      float32 [N] or [N, F] host array, one row per example, in order.
    """
    num = images.shape[0]
    if num == 0:
        raise ValueError("cannot score an empty set of images")
    if block < 1 or num % block:
        raise ValueError(f"{num} examples do not split into blocks of {block}")
    mesh = data_mesh() if mesh is None else mesh
    batch_size = -(-min(batch_size, num) // (block * mesh.size)) * block * mesh.size
    rows = process_rows(batch_size, mesh)
    params = replicate(params, mesh)
    static_fn = _StaticFn(fn)
    outputs = []
    starts = range(0, num, batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=desc is None or not is_main_process()):
        index = np.arange(start, start + batch_size)[rows]
        local_images = np.asarray(images[np.minimum(index, num - 1)])  # pad with the last example
        keys = example_keys(rng, jnp.asarray(index))
        result = _per_device(static_fn, mesh, params, global_batch(local_images, batch_size, mesh),
                             global_batch(keys, batch_size, mesh))
        outputs.append(to_host(result)[:min(batch_size, num - start)])
    return np.concatenate(outputs, axis=0)
