"""What train.py and evaluate.py share: argument parsing, the up-front checks of the config and the directories,
and turning errors into one line + exit 2."""

import argparse
import errno
import functools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import ml_collections

from oodgen.config import load_config_file, load_saved_config, parse_overrides
from oodgen.errors import OodgenError
from oodgen.schema import validate_config
from oodgen.sharding import DISTRIBUTED_DEFAULTS, initialize_distributed, is_main_process

EXIT_BAD_INPUT = 2
WRITE_ERRNOS = {errno.ENOSPC: "free space there, or pass a --workdir/--outdir on another disk",
                errno.EDQUOT: "free space within your quota, or pass a --workdir/--outdir on another disk",
                errno.EFBIG: "pass a --workdir/--outdir on a file system that allows larger files",
                errno.EROFS: "pass a --workdir/--outdir on a writable file system",
                errno.EACCES: "make it writable (chmod/chown), or pass a --workdir/--outdir you can write",
                errno.EPERM: "make it writable (chmod/chown), or pass a --workdir/--outdir you can write"}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
MIN_FREE_BYTES = 64 * 1024  # less than any run writes (a config, a split record, one checkpoint; or the plots)


class Invocation(NamedTuple):
    config: ml_collections.ConfigDict
    workdir: str
    outdir: str | None  # where evaluate.py writes results (None: the workdir)


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


def parse_args(argv: list[str], description: str, config_required: bool, with_outdir: bool = False,
               for_: str | None = None) -> Invocation:
    """--config FILE[:variant] --workdir DIR [--outdir DIR] [--config.key=value ...].

    Without --config (where allowed) the config saved in the workdir by train.py is used, less its
    `distributed` settings (those of the training run's process 0): pass them again, per process. The whole
    config is then checked against the schema (oodgen.schema.validate_config) for `for_` ("train", or
    "evaluate"; by default "evaluate" when there is an --outdir), and the directories: --workdir must not be or
    lie under a file, and the directory written (train: --workdir; evaluate: --outdir, else --workdir) must be
    writable, all before any data is read or any file written. Then joins the multi-process run that
    `config.distributed` (or OODGEN_* environment variables) configures, before any other JAX use.
    """
    for_ = for_ or ("evaluate" if with_outdir else "train")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=config_required,
                        help="configs/<name>.py[:variant]" + ("" if config_required else
                                                              " (default: the one saved in --workdir)"))
    parser.add_argument("--workdir", required=True, help="directory for checkpoints and results")
    if with_outdir:
        parser.add_argument("--outdir", default=None, help="write results here instead of --workdir")
    args, rest = parser.parse_known_args(argv)
    outdir = getattr(args, "outdir", None)
    check_directory_path(args.workdir, "--workdir")
    if outdir is not None:
        check_directory_path(outdir, "--outdir")
    if args.config:
        config = load_config_file(args.config)
    else:
        config = load_saved_config(args.workdir)
        config.distributed = ml_collections.ConfigDict(DISTRIBUTED_DEFAULTS)
    config = parse_overrides(config, rest)
    validate_config(config, for_=for_)
    initialize_distributed(config.get("distributed"))
    if is_main_process():  # the only process that writes
        if for_ == "train":
            check_writable(args.workdir, "--workdir")
        elif outdir is not None:
            check_writable(outdir, "--outdir")
        else:
            check_writable(args.workdir, "--workdir", "pass --outdir DIR to write the results elsewhere "
                                                      "(the workdir is only read)")
    return Invocation(config, args.workdir, outdir)


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
