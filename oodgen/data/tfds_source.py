"""Read a prepared TensorFlow Datasets copy through `tfds.data_source` (optional `tfds` extra).

Env: OODGEN_TFDS_DATA_DIR (default: tfds's own, i.e. $TFDS_DATA_DIR or ~/tensorflow_datasets);
OODGEN_TFDS_DOWNLOAD=1 lets tfds download and prepare a missing copy. Only array_record copies are readable
(`tfds build NAME --file_format=array_record`); a missing, tfrecord or unreadable copy gives None so that
callers fall back to their local source. While a download is allowed, tfds's per-URL retries are cut from 10
(about 3.5 minutes of backoff per URL offline) to 1 and the process-wide socket timeout is set to 30 s.
"""

import contextlib
import logging
import os
import socket
import tempfile
from typing import Any, Iterator

import numpy as np

from oodgen.data.dataset import Dataset
from oodgen.errors import OodgenError

_log = logging.getLogger(__name__)
_BATCH = 1024
_DOWNLOAD_RETRIES = 1
_SOCKET_TIMEOUT_S = 30.0
_UNAVAILABLE = (KeyError, RuntimeError, OSError, ValueError, AssertionError)

HOW_TO_PREPARE = (
    "prepare a TFDS copy: `pip install tensorflow-datasets`, "
    "`tfds build {name} --file_format=array_record --data_dir=DIR`, then set OODGEN_TFDS_DATA_DIR=DIR "
    "(or set OODGEN_TFDS_DOWNLOAD=1 to let oodgen download it)"
)


def load(name: str, split: str, limit: int | None = None) -> Dataset | None:
    """Images uint8 [N, H, W, C] and labels int32 [N] of a prepared TFDS copy, or None when there is none."""
    try:
        import tensorflow_datasets as tfds
    except Exception as e:
        _log.debug("tensorflow_datasets unavailable (%s); skipping TFDS", e)
        return None
    data_dir = os.environ.get("OODGEN_TFDS_DATA_DIR") or None
    download = _download_enabled()
    try:
        with _quiet_absl(), _fail_fast_downloads(download), _scratch_tempdir():
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
            count = len(source) if limit is None else min(len(source), limit)
            records = _read(source, count)
    except _UNAVAILABLE as e:
        _log.debug("no readable TFDS copy of %s:%s (%s: %s)", name, split, type(e).__name__, e)
        return None
    if not records:
        return None
    images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
    labels = np.asarray([r["label"] for r in records], dtype=np.int32)
    return Dataset(images, labels, f"{name}:{split}", f"tfds:{data_dir or tfds.core.constants.DATA_DIR}")


def _read(source: Any, count: int) -> list[dict[str, Any]]:
    """The first `count` records, fetched in batches through `__getitems__` when the source has it."""
    if not hasattr(source, "__getitems__"):
        return [source[i] for i in range(count)]
    records: list[dict[str, Any]] = []
    for start in range(0, count, _BATCH):
        records.extend(source.__getitems__(list(range(start, min(start + _BATCH, count)))))
    return records


def _download_enabled() -> bool:
    value = os.environ.get("OODGEN_TFDS_DOWNLOAD", "").strip()
    if value not in ("", "0", "1"):
        raise OodgenError(
            f"OODGEN_TFDS_DOWNLOAD={value!r} is not understood; "
            "set it to 1 to let tfds download missing datasets, or 0/unset to stay offline"
        )
    return value == "1"


@contextlib.contextmanager
def _scratch_tempdir() -> Iterator[None]:
    """tfds makes a temporary directory for every builder without a prepared copy and never removes it
    (`DatasetInfo.initialize_from_bucket`): point `tempfile` at one of ours, removed afterwards."""
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="oodgen-tfds-") as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = previous


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        absl.setLevel(level)


@contextlib.contextmanager
def _fail_fast_downloads(enabled: bool) -> Iterator[None]:
    """Cap tfds's download retries (`downloader.MAX_RETRIES`) and the socket timeout it leaves unset."""
    if not enabled:
        yield
        return
    from tensorflow_datasets.core.download import downloader

    retries, timeout = downloader.MAX_RETRIES, socket.getdefaulttimeout()
    downloader.MAX_RETRIES = _DOWNLOAD_RETRIES
    socket.setdefaulttimeout(_SOCKET_TIMEOUT_S)
    try:
        yield
    finally:
        downloader.MAX_RETRIES = retries
        socket.setdefaulttimeout(timeout)
