"""One trainer per workdir: an exclusive `fcntl.flock` on `<workdir>/.train.lock`, which holds the owner's PID.

The kernel releases a flock when its process dies, however it dies, so a lock file left behind by a killed
run never blocks the next one; the file itself is left in place (removing it would race with a new owner).
"""

import fcntl
import os
from pathlib import Path

from oodgen.errors import OodgenError

LOCK_FILE = ".train.lock"


class WorkdirLock:
    """An exclusive, non-blocking lock on `<workdir>/.train.lock`; `acquire` may be called again (a no-op)."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock (the workdir must exist) and writes this process's PID into the lock file.

        Raises a one-line OodgenError naming the holder's PID when another process holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:   # BlockingIOError: held by another open file (another process, or this one)
            holder = _read_pid(fd)
            os.close(fd)
            raise OodgenError(
                f"another train.py (PID {holder}) is training in {str(self.workdir)!r} (it holds {self.path}); "
                "wait for it to finish or stop it, or train in another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Releases the lock (closing the file releases the flock); the file and its PID stay."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    """The PID written in the lock file open as `fd`, or "unknown" (its owner has not written it yet)."""
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"
