"""Read gzipped IDX files (the MNIST/Fashion-MNIST on-disk format) with numpy."""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from oodgen.errors import OodgenError

_UBYTE = 0x08


def read_idx(path: Path, limit: int | None = None, *, fix: str = "") -> np.ndarray:
    """Read a gzipped unsigned-byte IDX file into uint8 [count, *dims]; `limit` reads only the first rows.

    Raises OodgenError (ending with `fix`) when the file is not valid IDX.
    """
    try:
        with gzip.open(path, "rb") as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] == 0:
                found = magic.hex() or "missing"
                raise OodgenError(f"{path} is not a uint8 IDX file (magic number {found}, expected 000008NN); {fix}")
            header = f.read(4 * magic[3])
            if len(header) != 4 * magic[3]:
                raise OodgenError(f"{path} is truncated inside its IDX header; {fix}")
            shape = struct.unpack(f">{magic[3]}I", header)
            count = shape[0] if limit is None else min(shape[0], limit)
            want = count * int(np.prod(shape[1:], dtype=np.int64))
            data = f.read(want)
    except (OSError, EOFError, zlib.error) as e:
        raise OodgenError(f"cannot read {path} as gzipped IDX ({e}); {fix}") from e
    if len(data) != want:
        raise OodgenError(f"{path} is truncated: shape {shape} needs {want} data bytes, found {len(data)}; {fix}")
    return np.frombuffer(data, dtype=np.uint8).reshape((count, *shape[1:]))
