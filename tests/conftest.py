import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Set before JAX is imported (here and in every subprocess a test starts, which inherits the environment). The
# tests' models are tiny, so XLA's compile time, not run time, is most of the suite's time: compile at backend
# optimisation level 0 (the suite takes about half the time; results are checked against independent references
# with tolerances, never against numbers from an optimised build), and share one persistent compilation cache
# among the pytest workers and their subprocesses for this session, so a program compiled once is not compiled
# again. The cache starts empty each session (a directory made by the controller, removed at its end).
if "jax" in sys.modules:
    raise RuntimeError("tests/conftest.py must configure XLA before jax is imported")
_flags = os.environ.get("XLA_FLAGS", "").split()   # the workers inherit the controller's: add each flag once
os.environ["XLA_FLAGS"] = " ".join(_flags + [flag for flag in ("--xla_backend_optimization_level=0",
                                                               "--xla_llvm_disable_expensive_passes=true")
                                             if flag not in _flags])
_OWNS_CACHE = "OODGEN_TEST_XLA_CACHE" not in os.environ
if _OWNS_CACHE:
    os.environ["OODGEN_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="oodgen-test-xla-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["OODGEN_TEST_XLA_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
os.chdir(ROOT)  # configs/ paths in tests are relative to the repository root
sys.path.insert(0, str(ROOT))

# One wall-clock limit for every subprocess a test starts. It is not a timing assertion: it is far above what
# any of them takes on a loaded 2-core machine, so only a hang reaches it. Scale it on slower machines (or with
# many pytest workers sharing few cores): OODGEN_TEST_TIMEOUT_SCALE=2 doubles it.
BASE_TIMEOUT_S = 1800.0


def _timeout_scale() -> float:
    raw = os.environ.get("OODGEN_TEST_TIMEOUT_SCALE", "").strip() or "1"
    try:
        scale = float(raw)
    except ValueError:
        scale = float("nan")
    if not scale > 0:  # also NaN
        raise pytest.UsageError(f"OODGEN_TEST_TIMEOUT_SCALE={raw!r} must be a positive number (default 1)")
    return scale


SUBPROCESS_TIMEOUT_S = BASE_TIMEOUT_S * _timeout_scale()


def _hang_message(what: str, seconds: float) -> str:
    return (f"{what} still running after {seconds:.0f} s (the shared limit for test subprocesses is "
            f"{SUBPROCESS_TIMEOUT_S:.0f} s = {BASE_TIMEOUT_S:.0f} s × OODGEN_TEST_TIMEOUT_SCALE="
            f"{SUBPROCESS_TIMEOUT_S / BASE_TIMEOUT_S:g}, far above their normal time even on a loaded machine): "
            "probably a hang; killed")


def communicate_all(processes: list[subprocess.Popen], what: str = "subprocess") -> list[str]:
    """Waits for every process (started with stdout=PIPE, text=True) under one deadline, SUBPROCESS_TIMEOUT_S,
    and returns their outputs. Pipes are drained concurrently, so no process blocks on a full pipe while
    another is waited for. Past the deadline every process still running is killed and the test fails,
    saying so, with the tail of each one's output."""
    outputs: list[str | None] = [None] * len(processes)

    def drain(i: int) -> None:
        outputs[i] = processes[i].communicate()[0]

    threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(processes))]
    for thread in threads:
        thread.start()
    limit = SUBPROCESS_TIMEOUT_S
    deadline = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, p in enumerate(processes) if p.poll() is None]
    if hung:
        for p in processes:
            if p.poll() is None:
                p.kill()
        for thread in threads:
            thread.join(30)
        tails = "; ".join(f"[{i}] ...{(outputs[i] or '')[-500:]!r}" for i in hung)
        pytest.fail(f"{_hang_message(f'{what} {hung} of {len(processes)}', limit)}. Output: {tails}", pytrace=False)
    for thread in threads:
        thread.join()
    return [out or "" for out in outputs]


def _timeout_failure(e: subprocess.TimeoutExpired) -> str:
    command = " ".join(str(a) for a in (e.cmd if isinstance(e.cmd, (list, tuple)) else [e.cmd]))
    return _hang_message(f"subprocess `{command[:300]}`", e.timeout)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """A subprocess.run(..., timeout=SUBPROCESS_TIMEOUT_S) that expired in a fixture (subprocess.run has killed
    the child) fails with the hang message rather than a traceback."""
    try:
        return (yield)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_timeout_failure(e), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The same for a subprocess.run that expired in the test itself."""
    try:
        return (yield)
    except subprocess.TimeoutExpired as e:
        pytest.fail(_timeout_failure(e), pytrace=False)


def pytest_unconfigure(config):
    """The process that made this session's compilation cache removes it."""
    if _OWNS_CACHE:
        shutil.rmtree(os.environ["OODGEN_TEST_XLA_CACHE"], ignore_errors=True)
