"""Checks on user input that turn into one-line errors before anything is computed.

`check_images` validates (and converts) a data set of images on the host. `check_image_shape` and
`check_image_values` are its two halves, for callers that must not copy the batch: the model API checks
the shape of every call (static, so also under `jit`) and the values of concrete arrays only
(`oodgen.models.inputs`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from oodgen.errors import OodgenError

EMPTY_SET = "the set is empty; check the dataset name, split and size"
EMPTY_BATCH = "the batch is empty; pass at least one image"


def check_image_shape(shape: tuple[int, ...], image_shape: tuple[int, int, int] | None = None,
                      what: str = "images", empty: str = EMPTY_SET, kind: str = "a uint8 array") -> None:
    """OodgenError unless `shape` is [N, H, W, C] with N >= 1 and (H, W, C) == `image_shape` (when given).

    `empty` is the message for N = 0; `kind` names what is expected ("a uint8 array", "a float array").
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            batch = image_shape is not None and shape == tuple(image_shape)
            hint = " (add a batch axis with x[None])" if batch else " (add a channel axis with x[..., None])"
        raise OodgenError(f"{what}: expected {kind} [N, H, W, C], got shape {shape}{hint}")
    if shape[0] == 0:
        raise OodgenError(f"{what}: {empty}")
    if image_shape is not None and shape[1:] != tuple(image_shape):
        expected = ", ".join(str(n) for n in image_shape)
        raise OodgenError(
            f"{what}: images are {shape[1:]} (H, W, C) but the model expects {tuple(image_shape)} "
            f"(expected images [N, {expected}]); use data of that shape or set config.data.image_shape and retrain")


def _refuse_bad_values(what: str, is_float: bool, nonfinite: int, low, high, nonwhole: int) -> None:
    """The value checks of `check_images`, from the array's statistics (one message per failure)."""
    if is_float and nonfinite:
        raise OodgenError(f"{what}: {nonfinite} pixel values are NaN or infinite; clean the data before scoring")
    if low < 0 or high > 255:
        raise OodgenError(f"{what}: pixel values range over [{low}, {high}], outside 0..255; "
                          "pass raw 8-bit images")
    if is_float and nonwhole:
        scaled = " (they look scaled to [0, 1]: multiply by 255)" if high <= 1 else ""
        raise OodgenError(f"{what}: float pixel values must be whole numbers 0..255{scaled}; "
                          "convert with np.round(x).astype(np.uint8)")


def _refuse_non_numeric(what: str, dtype) -> None:
    raise OodgenError(f"{what}: dtype {dtype} is not numeric; pass uint8 pixel values 0..255")


def _host_stats(array: np.ndarray, is_float: bool) -> tuple[int, object, object, int]:
    """(non-finite count, min, max, non-whole count) of a numpy array; min and max only when all are finite."""
    nonfinite = int(np.count_nonzero(~np.isfinite(array))) if is_float else 0
    if nonfinite:
        return nonfinite, 0, 0, 0
    nonwhole = int(np.count_nonzero(array != np.round(array))) if is_float else 0
    return 0, array.min(), array.max(), nonwhole


def check_images(images, image_shape: tuple[int, int, int] | None = None, what: str = "images") -> np.ndarray:
    """Returns `images` as uint8 [N, H, W, C] or raises OodgenError saying what is wrong and the fix.

    Integer arrays in 0..255 and float arrays holding whole numbers in 0..255 are converted; anything
    else (NaN, out-of-range values, [0, 1]-scaled floats, wrong rank or shape) is refused.
    """
    try:
        array = np.asarray(images)
    except Exception as e:  # ragged lists and the like
        raise OodgenError(f"{what}: cannot be read as an array ({e}); pass a uint8 array [N, H, W, C]") from None
    check_image_shape(array.shape, image_shape, what)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf" and array.dtype != np.bool_:
        _refuse_non_numeric(what, array.dtype)
    is_float = array.dtype.kind == "f"
    _refuse_bad_values(what, is_float, *_host_stats(array, is_float))
    return array.astype(np.uint8)


@jax.jit
def _device_stats(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(non-finite count, min, max, non-whole count) of a float array [N, ...], reduced where it lives."""
    finite = jnp.isfinite(x)
    return (jnp.sum(~finite), jnp.min(jnp.where(finite, x, jnp.inf)), jnp.max(jnp.where(finite, x, -jnp.inf)),
            jnp.sum(finite & (x != jnp.round(x))))


@jax.jit
def _device_range(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(min, max) of an integer array [N, ...], reduced where it lives."""
    return jnp.min(x), jnp.max(x)


def check_image_values(images, what: str = "images") -> None:
    """The value checks of `check_images` (a numeric dtype; no NaN or inf; whole numbers in 0..255) on a
    concrete numpy or JAX array [N, ...] with N >= 1, without converting it or copying it to the host.

    uint8 and bool arrays cost nothing; a JAX array of another dtype costs one small reduction on its
    devices and one host transfer of four scalars (also when met while tracing). Never call it on a tracer.
    """
    dtype = images.dtype
    if dtype == np.uint8 or dtype == np.bool_:
        return
    is_float = bool(jnp.issubdtype(dtype, jnp.floating))
    if not is_float and not jnp.issubdtype(dtype, jnp.integer):
        _refuse_non_numeric(what, dtype)
    if isinstance(images, np.ndarray):
        stats = _host_stats(images, is_float)
    elif is_float:
        with jax.ensure_compile_time_eval():  # a concrete array met while tracing: still evaluated now
            nonfinite, low, high, nonwhole = jax.device_get(_device_stats(images))
        stats = int(nonfinite), np.asarray(low)[()], np.asarray(high)[()], int(nonwhole)
    else:
        with jax.ensure_compile_time_eval():
            low, high = jax.device_get(_device_range(images))
        stats = 0, np.asarray(low)[()], np.asarray(high)[()], 0
    _refuse_bad_values(what, is_float, *stats)


@jax.jit
def _device_nonfinite(x: jax.Array) -> jax.Array:
    """The number of NaN or infinite values of a float array, counted where it lives."""
    return jnp.sum(~jnp.isfinite(x))


def check_finite(values, what: str = "x") -> None:
    """OodgenError unless the concrete float array `values` has no NaN or inf (one reduction, one scalar
    to the host for a JAX array). Never call it on a tracer."""
    if isinstance(values, np.ndarray):
        bad = int(np.count_nonzero(~np.isfinite(values)))
    else:
        with jax.ensure_compile_time_eval():  # a concrete array met while tracing: still evaluated now
            bad = int(jax.device_get(_device_nonfinite(values)))
    if bad:
        raise OodgenError(f"{what}: {bad} values are NaN or infinite; clean the data before scoring")
