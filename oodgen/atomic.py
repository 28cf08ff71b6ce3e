"""One way to write a file so that a crash or a full disk never leaves it half-written."""

import os
import uuid
from pathlib import Path


def write_atomic(path: str | os.PathLike, payload: bytes) -> Path:
    """Writes `payload` to `path` through a synced, uniquely named temporary file beside it and a rename. On
    failure (a full disk, a kill) the temporary file is removed and an existing `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
