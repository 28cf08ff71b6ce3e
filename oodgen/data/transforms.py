"""Pixel transforms named in specs (`+hflip`, `+vflip`, `+invert`)."""

from typing import Callable

import numpy as np


def hflip(images: np.ndarray) -> np.ndarray:
    """Mirror the width axis of uint8 [..., H, W, C]."""
    return np.ascontiguousarray(images[..., ::-1, :])


def vflip(images: np.ndarray) -> np.ndarray:
    """Mirror the height axis of uint8 [..., H, W, C]."""
    return np.ascontiguousarray(images[..., ::-1, :, :])


def invert(images: np.ndarray) -> np.ndarray:
    """255 - x for uint8 [..., H, W, C]."""
    return np.subtract(np.uint8(255), images, dtype=np.uint8)


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"hflip": hflip, "vflip": vflip, "invert": invert}
