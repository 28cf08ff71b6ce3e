"""Errors as one line and exit code 2: OodgenErrors and OS errors of the main thread, and one `warning:` line
for errors of background threads and errors nothing could raise."""

import argparse
import errno
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable

from oodgen.errors import OodgenError

EXIT_BAD_INPUT = 2
WRITE_ERRNOS = {errno.ENOSPC: "free space there, or pass a --workdir/--outdir on another disk",
                errno.EDQUOT: "free space within your quota, or pass a --workdir/--outdir on another disk",
                errno.EFBIG: "pass a --workdir/--outdir on a file system that allows larger files",
                errno.EROFS: "pass a --workdir/--outdir on a writable file system",
                errno.EACCES: "make it writable (chmod/chown), or pass a --workdir/--outdir you can write",
                errno.EPERM: "make it writable (chmod/chown), or pass a --workdir/--outdir you can write"}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _output_dir(argv: list[str]) -> str | None:
    """The directory a command writes to, from its arguments: --outdir, else --workdir (None if neither)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workdir")
    parser.add_argument("--outdir")
    try:
        args, _ = parser.parse_known_args(argv)
    except SystemExit:
        return None
    return args.outdir or args.workdir


def _os_error(e: BaseException) -> OSError | None:
    """`e`, or the OSError it was raised from (orbax re-raises some), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def os_error_message(e: OSError, fallback_path: str | None) -> str:
    """One line for an OS error: the path (the error's own, else `fallback_path`), what went wrong, the fix."""
    path = e.filename if e.filename is not None else fallback_path
    where = f" {os.fsdecode(path)}" if path is not None else ""
    if e.filename2 is not None:
        where += f" -> {os.fsdecode(e.filename2)}"
    strerror = e.strerror or os.strerror(e.errno)
    if e.errno in WRITE_ERRNOS:
        kept = " (files written before are kept)" if e.errno in DISK_FULL else ""
        return f"cannot write{where}: {strerror}; {WRITE_ERRNOS[e.errno]}{kept}"
    return f"cannot use{where}: {strerror} ({errno.errorcode.get(e.errno, e.errno)}); check the path and its permissions"


def _records_without_tracebacks() -> None:
    """Makes every log record of this process keep its message but drop its traceback (orbax logs its writer
    threads' errors, asyncio its failed tasks, each with one): the CLI reports the error itself, in one line."""
    make = logging.getLogRecordFactory()
    if getattr(make, "drops_tracebacks", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record
    factory.drops_tracebacks = True
    logging.setLogRecordFactory(factory)


_REPORTED: set[str] = set()


def _background_excepthook(kind: type[BaseException], value: BaseException, tb) -> None:
    """sys.excepthook: the main thread's uncaught errors keep their traceback; those of other threads are one
    `warning:` line, each distinct one once."""
    if threading.current_thread() is threading.main_thread():
        sys.__excepthook__(kind, value, tb)
        return
    line = f"warning: in a background thread: {kind.__name__}: {' '.join(str(value).split())}"
    if line not in _REPORTED:
        _REPORTED.add(line)
        print(line, file=sys.stderr)


def _unraisable_hook(args) -> None:
    """sys.unraisablehook: an error nothing could raise (tensorstore reports its late callbacks into orbax's
    closed event loop this way when a save fails), as one `warning:` line, each distinct one once."""
    line = f"warning: ignored: {args.exc_type.__name__}: {' '.join(str(args.exc_value).split())}"
    if line not in _REPORTED:
        _REPORTED.add(line)
        print(line, file=sys.stderr)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: an uncaught error of a Python thread, as one `warning:` line."""
    if args.exc_type is not SystemExit:
        _background_excepthook(args.exc_type, args.exc_value, args.exc_traceback)


def main_wrapper(main: Callable[[list[str]], None]) -> Callable[[], None]:
    """Runs `main(sys.argv[1:])`; an OodgenError, or an OSError (a full disk, a read-only or missing path),
    becomes `error: <one line>` on stderr and exit code 2. Log records of libraries (orbax logs the errors of
    its writer threads) keep their message but lose their traceback, and errors of background threads, and
    errors nothing could raise, are one `warning:` line each."""
    @functools.wraps(main)
    def run():
        _records_without_tracebacks()
        sys.excepthook, threading.excepthook = _background_excepthook, _thread_excepthook
        sys.unraisablehook = _unraisable_hook
        argv = sys.argv[1:]
        try:
            main(argv)
        except OodgenError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except Exception as e:
            os_error = _os_error(e)
            if os_error is None:
                raise
            print(f"error: {OodgenError(os_error_message(os_error, _output_dir(argv)))}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    return run
