"""Resuming a run so that a crash never changes its result: where to resume from, and the bookkeeping to finish.

An uninterrupted run does, for each checkpoint step N: save `checkpoints/N` (with its record, see
oodgen.training.checkpoints), save `best/N` if its held-out loss is strictly below the best one so far, then
append the log line of N to `train_metrics.jsonl` (the lines of the steps between checkpoints are appended
as they come). A process killed anywhere in between leaves a prefix of that; `complete_bookkeeping` turns the
workdir back into the state an uninterrupted run has right after step N's bookkeeping: the log is the lines
of steps < the record's first line, then the record's lines (so no line is lost, doubled or half-written);
`best/` holds the lowest held-out loss among the checkpoints up to N (the earliest on ties); `checkpoints/`
keeps the latest `keep` steps. It is idempotent, so a kill during it is repaired by the next run too.

`config.train.resume_from` picks N: "latest" (the default), "best", or a step. Resuming from a step older
than the latest discards the later history: the later checkpoints (in `checkpoints/` and `best/`) are
removed and the log is cut back to step N.

Test hook: with the environment variable OODGEN_TEST_CRASH_AT=<label>:<step>, the training loop kills its own
process (SIGKILL, nothing flushed or closed) at that point of that step; see `crash_point`.
"""

import json
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import chex
import orbax.checkpoint as ocp

from oodgen.errors import OodgenError
from oodgen.atomic import write_atomic
from oodgen.training import checkpoints

CRASH_ENV = "OODGEN_TEST_CRASH_AT"
# The points `crash_point` knows, in the order a checkpoint step passes them.
CRASH_LABELS = ("checkpoint",   # checkpoints/N saved, best/ decision not made, no log line of N
                "best",         # best/ decision for N made, no log line of N
                "log",          # half of the log line of N written (and flushed)
                "logged")       # the log line of N written (any log step, not only checkpoint steps)
RESUME_CHOICES = "use 'latest', 'best' or the step of a checkpoint, e.g. --config.train.resume_from=300"


def crash_point(label: str, step: int) -> None:
    """Test hook: SIGKILLs this process when OODGEN_TEST_CRASH_AT is `<label>:<step>`; otherwise nothing."""
    if os.environ.get(CRASH_ENV) == f"{label}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def parse_resume_from(value: object) -> str | int:
    """config.train.resume_from -> "latest", "best", or a checkpoint step (int > 0); else a one-line error."""
    text = str(value).strip()
    if text in ("latest", "best"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise OodgenError(f"config.train.resume_from={value!r} is not a checkpoint to resume from; {RESUME_CHOICES}")


def resume_point(resume_from: str | int, manager: ocp.CheckpointManager,
                 best_manager: ocp.CheckpointManager) -> tuple[int, ocp.CheckpointManager | None]:
    """(step, the manager to restore it from) for `resume_from`; (0, None) to start from scratch."""
    steps, best_steps = list(manager.all_steps()), list(best_manager.all_steps())
    if resume_from == "latest":
        return (steps[-1], manager) if steps else (0, None)
    if resume_from == "best":
        step = best_manager.best_step()
        if step is None:
            raise OodgenError(f"config.train.resume_from='best', but {best_manager.directory} holds no checkpoint; "
                              f"{'resume from one of the steps ' + str(steps) if steps else 'leave it at latest'}")
        return step, best_manager
    if resume_from in steps:
        return resume_from, manager
    if resume_from in best_steps:
        return resume_from, best_manager
    raise OodgenError(f"config.train.resume_from='{resume_from}': there is no checkpoint at step {resume_from} "
                      f"(checkpoints/ holds steps {steps}, best/ holds {best_steps}); {RESUME_CHOICES}")


def discard_later(step: int, manager: ocp.CheckpointManager, best_manager: ocp.CheckpointManager,
                  announce: bool) -> None:
    """Removes every checkpoint after `step`, in `checkpoints/` and `best/` (latest first), saying so."""
    later = [s for s in manager.all_steps() if s > step]
    later_best = [s for s in best_manager.all_steps() if s > step]
    if not later and not later_best:
        return
    if announce:
        print(f"resuming from step {step}: removing the later checkpoints (checkpoints/ {later}, best/ {later_best}) "
              f"and the log lines after step {step}", file=sys.stderr, flush=True)
    for s in sorted(later, reverse=True):
        checkpoints.delete(manager, s)
    for s in sorted(later_best, reverse=True):
        checkpoints.delete(best_manager, s)


def complete_bookkeeping(step: int, state: chex.ArrayTree, source: ocp.CheckpointManager | None,
                         manager: ocp.CheckpointManager, best_manager: ocp.CheckpointManager, keep: int | None,
                         log_path: Path | None, score: Callable[[chex.ArrayTree], float],
                         restore: Callable[[int], chex.ArrayTree]) -> float | None:
    """Finishes what an uninterrupted run has done by the end of `step` (0: nothing yet), `state` being the
    checkpoint of `step` restored from `source`; returns the lowest held-out loss in `best/` (None: empty).

    `score(state)` recomputes a held-out loss for a checkpoint saved without a record; `restore(step)` reads a
    `checkpoints/` step. `log_path` None (processes other than 0) leaves the log alone.
    """
    record = checkpoints.record(source, step) if step else None
    if step and step not in manager.all_steps():   # resuming from best/, whose step checkpoints/ has rotated out
        checkpoints.save(manager, step, state, record)
    steps = list(manager.all_steps())
    if keep and len(steps) > keep:                 # a kill between a save and orbax's rotation of the oldest
        for s in steps[:-keep]:
            checkpoints.delete(manager, s)
    if step and record is None:                    # written before checkpoints carried records
        record = {checkpoints.BEST_METRIC: score(state)}
    best = _complete_best(step, state, record, manager, best_manager, restore)
    if log_path is not None:
        repair_log(log_path, step, (record or {}).get(checkpoints.LOG_LINES))
    return best


def _complete_best(step: int, state: chex.ArrayTree, record: dict | None, manager: ocp.CheckpointManager,
                   best_manager: ocp.CheckpointManager, restore: Callable[[int], chex.ArrayTree]) -> float | None:
    """Makes `best/` hold exactly the lowest held-out loss of the checkpoints up to `step` (earliest on ties)."""
    losses: dict[int, tuple[float, ocp.CheckpointManager]] = {}
    for m in (manager, best_manager):
        for s in m.all_steps():
            saved = record if s == step and record is not None else checkpoints.record(m, s)
            if s <= step and saved is not None and s not in losses and math.isfinite(saved[checkpoints.BEST_METRIC]):
                losses[s] = (float(saved[checkpoints.BEST_METRIC]), m)
    if not losses:
        return None
    held = set(best_manager.all_steps())   # on a tie (never in one history) keep what best/ holds
    chosen = min(losses, key=lambda s: (losses[s][0], s not in held, s))
    if chosen not in best_manager.all_steps():
        chosen_state = state if chosen == step else restore(chosen)
        checkpoints.save(best_manager, chosen, chosen_state,
                         record if chosen == step else checkpoints.record(manager, chosen))
    for s in best_manager.all_steps():
        if s != chosen:
            checkpoints.delete(best_manager, s)
    return losses[chosen][0]


def read_log(path: Path) -> list[str]:
    """The complete lines of a train_metrics.jsonl (without their newline): each a JSON object with a "step";
    a half-written last line (a kill during the write) is left out."""
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().split("\n")[:-1]:   # the text after the last newline is never complete
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            lines.append(line)
    return lines


def repair_log(path: Path, step: int, stored: list[str] | None) -> None:
    """Rewrites the log (atomically, only if it changes) to the lines an uninterrupted run has after `step`:
    the complete lines before the first of `stored` (the lines saved with checkpoint `step`), then `stored`;
    without `stored`, the complete lines of steps <= `step`."""
    lines = read_log(path)
    if stored:
        first = json.loads(stored[0])["step"]
        lines = [line for line in lines if json.loads(line)["step"] < first] + list(stored)
    else:
        lines = [line for line in lines if json.loads(line)["step"] <= step]
    text = "".join(line + "\n" for line in lines)
    if (path.read_text() if path.is_file() else "") == text:
        return
    try:
        write_atomic(path, text.encode())
    except OSError as e:
        raise OodgenError(f"cannot rewrite {path} ({e}); free disk space and re-run (nothing was lost: "
                          "the log is repaired from the checkpoints)") from None
