"""A crash must not change the result: train.py killed (SIGKILL) at named points of its bookkeeping and at a random
moment, re-run each time, ends with the same checkpoints, best/, log and evaluation as an uninterrupted run.

The named points come from the test hook OODGEN_TEST_CRASH_AT=<label>:<step> (oodgen.training.resume.crash_point).
The subprocesses share a persistent XLA compilation cache, so only the first one compiles.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from oodgen.config import load_saved_config, parse_overrides
from oodgen.training import checkpoints, resume

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/vae_fashion_mnist.py:tiny"
STEPS = 6
# a log line every step, a checkpoint every 2: checkpoints 2, 4, 6, keeping 2
OVERRIDES = [f"--config.train.steps={STEPS}", "--config.train.log_every=1", "--config.train.checkpoint_every=2"]


def _env(cache: Path, crash: str | None = None) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    env.pop(resume.CRASH_ENV, None)
    if crash:
        env[resume.CRASH_ENV] = crash
    return env


def _command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", "--config", CONFIG, "--workdir", str(workdir), *OVERRIDES, *extra]


def train_cli(workdir: Path, cache: Path, crash: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    """train.py in a subprocess, killed by the hook at `crash` ("label:step") if given."""
    return subprocess.run(_command(workdir, *extra), cwd=ROOT, env=_env(cache, crash), capture_output=True,
                          text=True, timeout=600)


def _kill_at_random_moment(workdir: Path, cache: Path, rng: random.Random) -> int:
    """Starts train.py and SIGKILLs it a random 0-2.5 s after it first touches the workdir's log (the resume
    bookkeeping or a training step, whichever comes first); returns its exit status (0 if it finished first)."""
    log = workdir / "train_metrics.jsonl"
    before = log.stat().st_mtime_ns if log.exists() else None
    process = subprocess.Popen(_command(workdir), cwd=ROOT, env=_env(cache), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if log.exists() and log.stat().st_mtime_ns != before:
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 2.5))
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait(timeout=600)


def saved(workdir: Path, best: bool) -> dict[int, tuple[dict, list[np.ndarray]]]:
    """{step: (its record, every array of its state)} of `checkpoints/` or `best/`, read back from disk."""
    manager = checkpoints.checkpoint_manager(workdir, read_only=True, best=best)
    try:
        return {step: (manager.metrics(step),
                       [np.asarray(x) for x in jax.tree.leaves(manager.restore(step, args=ocp.args.StandardRestore()))])
                for step in manager.all_steps()}
    finally:
        manager.close()


def assert_same_checkpoints(got: Path, want: Path) -> None:
    """The same steps in checkpoints/ and best/, bitwise the same arrays (dtype, shape, bytes), the same records."""
    for best in (False, True):
        a, b = saved(got, best), saved(want, best)
        assert sorted(a) == sorted(b), f"{'best' if best else 'checkpoints'}/ steps {sorted(a)} vs {sorted(b)}"
        for step in a:
            assert a[step][0] == b[step][0]
            assert len(a[step][1]) == len(b[step][1]) > 0
            for x, y in zip(a[step][1], b[step][1]):
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def evaluate_metrics(workdir: Path, outdir: Path) -> bytes:
    """metrics.json of evaluating `workdir` as evaluate.py does (its saved config), with two cheap scorers."""
    from oodgen.evaluation.harness import evaluate
    config = parse_overrides(load_saved_config(workdir), [
        "--config.eval.scorers=log_likelihood,typicality", "--config.eval.max_examples=32",
        "--config.eval.typicality.num_bootstrap=50"])
    evaluate(config, workdir, outdir=outdir)
    return (outdir / "metrics.json").read_bytes()


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir of an uninterrupted train.py run, the compilation cache it filled)."""
    root = tmp_path_factory.mktemp("straight")
    cache = root / "xla_cache"
    done = train_cli(root / "run", cache)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run", cache


def test_kills_at_every_bookkeeping_point_and_at_random_leave_the_result_unchanged(straight, tmp_path):
    want, cache = straight
    workdir = tmp_path / "crashed"
    log = workdir / "train_metrics.jsonl"
    # killed between checkpoints/2 and best/2: the old loop never made best/2's decision or wrote line 2
    assert train_cli(workdir, cache, "checkpoint:2").returncode == -signal.SIGKILL
    assert checkpoints.latest_step(workdir) == 2 and saved(workdir, best=True) == {}
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1]
    # half of line 3 written
    assert train_cli(workdir, cache, "log:3").returncode == -signal.SIGKILL
    assert not log.read_text().endswith("\n")
    # best/4 saved, line 4 not written
    assert train_cli(workdir, cache, "best:4").returncode == -signal.SIGKILL
    # line 5 written after checkpoint 4: a resume from 4 takes step 5 again
    assert train_cli(workdir, cache, "logged:5").returncode == -signal.SIGKILL
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    # a kill at a random moment of the next run (seeded, so a failure can be replayed)
    seed = random.randrange(1 << 30)
    assert _kill_at_random_moment(workdir, cache, random.Random(seed)) in (0, -signal.SIGKILL), f"seed {seed}"
    # the last checkpoint saved, best/6 and line 6 not (unless the random kill came after it)
    assert train_cli(workdir, cache, "checkpoint:6").returncode in (0, -signal.SIGKILL)
    # a finished run re-run completes the missing bookkeeping and takes no step
    finished = train_cli(workdir, cache)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert checkpoints.latest_step(workdir) == STEPS

    assert log.read_bytes() == (want / "train_metrics.jsonl").read_bytes(), f"seed {seed}"
    assert_same_checkpoints(workdir, want)
    assert evaluate_metrics(workdir, tmp_path / "eval_crashed") == evaluate_metrics(want, tmp_path / "eval_straight")
    for outdir in ("eval_crashed", "eval_straight"):   # both evaluated best/6
        print(outdir, (tmp_path / outdir / "evaluation.json").read_text())


def test_a_corrupt_latest_checkpoint_is_one_line_naming_an_intact_step_and_the_resume_finishes(straight, tmp_path):
    want, cache = straight
    workdir = tmp_path / "run"
    shutil.copytree(want, workdir)   # checkpoints 4, 6; best/6
    for name in ("default/_METADATA", "default/manifest.ocdbt"):   # two orbax metadata files of step 6
        (workdir / "checkpoints" / "6" / name).unlink()
    failed = train_cli(workdir, cache)
    assert failed.returncode == 2
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, failed.stderr   # no orbax warnings or tracebacks
    assert re.match(r"error: checkpoint step 6 in \S+/checkpoints is corrupt \(.+\); step 4 is intact: re-run with "
                    r"--config.train.resume_from=4 to resume from it", lines[0]), lines[0]
    resumed = train_cli(workdir, cache, None, "--config.train.resume_from=4")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step 4: removing the later checkpoints (checkpoints/ [6], best/ [6])" in resumed.stderr
    # the corrupt step was trained again: the same result as the uninterrupted run
    assert (workdir / "train_metrics.jsonl").read_bytes() == (want / "train_metrics.jsonl").read_bytes()
    assert_same_checkpoints(workdir, want)


def test_a_full_disk_during_a_save_keeps_no_partial_checkpoint_and_the_rerun_finishes(straight, tmp_path, monkeypatch):
    """In-process: the write of checkpoint 4's record fails with ENOSPC after half of it is on disk."""
    import errno

    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    from oodgen.config import load_config_file
    from oodgen.errors import OodgenError
    from oodgen.training.loop import train

    want, _ = straight
    workdir = tmp_path / "run"
    config = parse_overrides(load_config_file(CONFIG), OVERRIDES)
    original = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def disk_full_at_step_4(self, item, directory):
        if ".orbax-checkpoint-tmp" in str(directory) and Path(str(directory)).parent.name.startswith("4."):
            text = json.dumps(item)
            (Path(str(directory)) / self._filename).write_text(text[:len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await original(self, item, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full_at_step_4)
    with pytest.raises(OodgenError, match=r"cannot save checkpoint step 4 in \S+checkpoints \(.*No space left on "
                                          r"device.*\); nothing of step 4 was kept: free disk space") as info:
        train(config, workdir)
    assert "\n" not in str(info.value)
    leftovers = [p.name for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]
    assert any(name.startswith("4.orbax-checkpoint-tmp") for name in leftovers), leftovers   # the partial save
    assert checkpoints.latest_step(workdir) == 2 and sorted(saved(workdir, best=False)) == [2]   # ...is not a step
    monkeypatch.undo()
    train(config, workdir)   # resumes from 2, removes the partial directory
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4", "6"]
    assert (workdir / "train_metrics.jsonl").read_bytes() == (want / "train_metrics.jsonl").read_bytes()
    assert_same_checkpoints(workdir, want)
