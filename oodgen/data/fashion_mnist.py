"""Fashion-MNIST (train 60,000 / test 10,000, uint8 [N, 28, 28, 1]): a TFDS copy, else Debian's IDX files."""

import os
from pathlib import Path

import numpy as np

from oodgen.data import tfds_source
from oodgen.data.dataset import Dataset
from oodgen.data.idx import read_idx
from oodgen.errors import DatasetNotFoundError, OodgenError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_PREFIX = {"train": "train", "test": "t10k"}
_REINSTALL = (
    "reinstall it with `apt-get install --reinstall dataset-fashion-mnist` "
    "or point OODGEN_FASHION_MNIST_DIR at intact files"
)


def idx_dir() -> Path:
    """Directory of the IDX files: $OODGEN_FASHION_MNIST_DIR or the Debian package's."""
    return Path(os.environ.get("OODGEN_FASHION_MNIST_DIR") or DEFAULT_DIR)


def load(split: str, limit: int | None = None) -> Dataset:
    """Images uint8 [N, 28, 28, 1] and labels int32 [N] in file order; `limit` keeps the first examples."""
    return tfds_source.load("fashion_mnist", split, limit) or _from_idx(split, limit)


def _from_idx(split: str, limit: int | None) -> Dataset:
    folder = idx_dir()
    images_path = folder / f"{_PREFIX[split]}-images-idx3-ubyte.gz"
    labels_path = folder / f"{_PREFIX[split]}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DatasetNotFoundError(
                f"fashion_mnist:{split} not found: no readable TFDS copy and no {path}; "
                "run `apt-get install dataset-fashion-mnist`, "
                "or set OODGEN_FASHION_MNIST_DIR to a folder with the four *-ubyte.gz IDX files, "
                f"or {tfds_source.HOW_TO_PREPARE.format(name='fashion_mnist')}"
            )
    images = read_idx(images_path, limit, fix=_REINSTALL)
    labels = read_idx(labels_path, limit, fix=_REINSTALL)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise OodgenError(
            f"{images_path} / {labels_path} hold shapes {images.shape} / {labels.shape}, "
            f"expected [N, 28, 28] images with N labels; {_REINSTALL}"
        )
    return Dataset(images[..., None].copy(), labels.astype(np.int32), f"fashion_mnist:{split}", f"idx:{folder}")
