"""Checks on user input that turn into one-line errors before anything is computed."""

import numpy as np

from oodgen.errors import OodgenError


def check_images(images, image_shape: tuple[int, int, int] | None = None, what: str = "images") -> np.ndarray:
    """Returns `images` as uint8 [N, H, W, C] or raises OodgenError saying what is wrong and the fix.

    Integer arrays in 0..255 and float arrays holding whole numbers in 0..255 are converted; anything
    else (NaN, out-of-range values, [0, 1]-scaled floats, wrong rank or shape) is refused.
    """
    try:
        array = np.asarray(images)
    except Exception as e:  # ragged lists and the like
        raise OodgenError(f"{what}: cannot be read as an array ({e}); pass a uint8 array [N, H, W, C]") from None
    if array.ndim != 4:
        hint = " (add a channel axis with x[..., None])" if array.ndim == 3 else ""
        raise OodgenError(f"{what}: expected a uint8 array [N, H, W, C], got shape {array.shape}{hint}")
    if array.shape[0] == 0:
        raise OodgenError(f"{what}: the set is empty; check the dataset name, split and size")
    if image_shape is not None and tuple(array.shape[1:]) != tuple(image_shape):
        raise OodgenError(
            f"{what}: images are {tuple(array.shape[1:])} (H, W, C) but the model expects "
            f"{tuple(image_shape)}; use data of that shape or set config.data.image_shape and retrain")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf" and array.dtype != np.bool_:
        raise OodgenError(f"{what}: dtype {array.dtype} is not numeric; pass uint8 pixel values 0..255")
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise OodgenError(f"{what}: {bad} pixel values are NaN or infinite; clean the data before scoring")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise OodgenError(f"{what}: pixel values range over [{low}, {high}], outside 0..255; "
                          "pass raw 8-bit images")
    if array.dtype.kind == "f" and not np.all(array == np.round(array)):
        scaled = " (they look scaled to [0, 1]: multiply by 255)" if high <= 1 else ""
        raise OodgenError(f"{what}: float pixel values must be whole numbers 0..255{scaled}; "
                          "convert with np.round(x).astype(np.uint8)")
    return array.astype(np.uint8)
