"""Seeded synthetic sets: uniform `noise` and per-image `constant` images."""

import numpy as np

from oodgen.data.dataset import Dataset

DEFAULT_SIZE = 2000


def noise(image_shape: tuple[int, int, int], size: int | None, seed: int) -> Dataset:
    """Uniform uint8 [size, H, W, C] over 0..255; labels -1."""
    n = DEFAULT_SIZE if size is None else size
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *image_shape), dtype=np.uint8)
    return Dataset(images, np.full(n, -1, np.int32), "noise:test", "synthetic")


def constant(image_shape: tuple[int, int, int], size: int | None, seed: int) -> Dataset:
    """uint8 [size, H, W, C], each image one uniform random value in 0..255 everywhere; labels -1."""
    n = DEFAULT_SIZE if size is None else size
    values = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8)
    images = np.broadcast_to(values[:, None, None, None], (n, *image_shape)).copy()
    return Dataset(images, np.full(n, -1, np.int32), "constant:test", "synthetic")
