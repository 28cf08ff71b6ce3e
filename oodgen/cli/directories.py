"""Up-front checks of the directories a command writes: not a file, writable, not on a full disk."""

import os
import shutil
from pathlib import Path

from oodgen.errors import OodgenError

MIN_FREE_BYTES = 64 * 1024  # less than any run writes (a config, a split record, one checkpoint; or the plots)


def _existing_ancestor(path: Path) -> Path:
    """`path` itself if it exists, else its nearest existing parent (which may be a file)."""
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def check_directory_path(path: str, flag: str) -> None:
    """OodgenError unless `path` is a directory or could be created as one: no part of it is a file."""
    found = _existing_ancestor(Path(path))
    if (found.exists() or found.is_symlink()) and not found.is_dir():
        where = "is a file" if found == Path(path) else f"is under {str(found)!r}, which is a file"
        raise OodgenError(f"{flag} {path} {where}, not a directory; pass a directory path (it is created if missing)")


def check_writable(path: str, flag: str, fix: str | None = None) -> None:
    """OodgenError unless `path` is a writable directory, or can be created in a writable one, on a disk with
    at least MIN_FREE_BYTES free. Writes nothing (access(2) also sees read-only file systems, for root too).
    `fix`: what to advise instead of another `flag`."""
    check_directory_path(path, flag)
    found = _existing_ancestor(Path(path))
    shown = f"{flag} {path}" + ("" if found == Path(path) else f" (in {str(found)!r})")
    if not os.access(found, os.W_OK | os.X_OK):
        if os.statvfs(found).f_flag & os.ST_RDONLY:
            raise OodgenError(f"{shown} is on a read-only file system; {fix or f'pass a {flag} on a writable one'}")
        raise OodgenError(f"{shown} is not writable; {fix or f'make it writable (chmod/chown) or pass another {flag}'}")
    free = shutil.disk_usage(found).free
    if free < MIN_FREE_BYTES:
        raise OodgenError(f"{shown}: its disk is full ({free} bytes free); free space there or pass a {flag} "
                          "on another disk")

