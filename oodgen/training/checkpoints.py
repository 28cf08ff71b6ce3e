"""Orbax checkpoints under `<workdir>/checkpoints` and `<workdir>/best`: atomic saves, restores, read-only reads.

Every checkpoint the training loop saves carries a record (orbax "metrics", written into the same temporary
directory as the arrays and renamed with them, so the two are atomic together): the held-out loss
`BEST_METRIC` of the saved state and `LOG_LINES`, the lines of `train_metrics.jsonl` for the steps since the
previous checkpoint. A resume completes the bookkeeping of the checkpoint it starts from from that record.
"""

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import chex
import jax
import orbax.checkpoint as ocp

from oodgen.errors import OodgenError

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BEST_METRIC = "val_loss"  # lower is better: bits/dim, or a denoising loss (oodgen.training.loop.held_out_metric)
LOG_LINES = "log_lines"   # the train_metrics.jsonl lines since the previous checkpoint, this step's last


class RestoreError(OodgenError):
    """A checkpoint that cannot be restored (corrupt, or of another model config); `cause` says why."""

    def __init__(self, message: str, step: int, cause: str):
        super().__init__(message)
        self.step, self.cause = step, cause


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Hides orbax's absl warnings (read-only directory, missing metadata) while the block runs: failures
    reach the user as one OodgenError line instead."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def checkpoint_manager(workdir: str | os.PathLike, *, read_only: bool = False, max_to_keep: int | None = None,
                       best: bool = False) -> ocp.CheckpointManager:
    """A manager for `<workdir>/checkpoints` (the latest `max_to_keep`) or `<workdir>/best` (the one with the
    lowest held-out loss). `read_only` never creates, writes or deletes anything; otherwise the temporary
    directories of saves that never finished (a killed process, a full disk) are removed. Close it after use."""
    directory = Path(workdir).absolute() / (BEST_DIR if best else CHECKPOINT_DIR)
    if read_only and not directory.is_dir():
        raise OodgenError(f"no checkpoints in {str(directory)!r}: run train.py --workdir {workdir} first")
    # best_fn makes orbax write each step's record; checkpoints/ still keeps the latest `max_to_keep` steps
    keep = None if read_only or best else ocp.checkpoint_managers.LatestN(n=max_to_keep)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1 if best and not read_only else None, preservation_policy=keep, create=not read_only,
        read_only=read_only, save_interval_steps=0 if read_only else 1, enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only, best_fn=lambda metrics: metrics[BEST_METRIC], best_mode="min")
    try:
        with quiet_orbax():
            return ocp.CheckpointManager(directory, options=options)
    except Exception as e:  # orbax reads every step's metadata when it opens a directory
        raise OodgenError(f"cannot read the checkpoints in {str(directory)!r} ({type(e).__name__}: {str(e)[:200]}); "
                          "they are corrupt: restore them from a copy, or train again in a new --workdir") from None


def latest_step(workdir: str | os.PathLike) -> int:
    """The step of the latest checkpoint in `<workdir>/checkpoints`; 0 when there is none. Reads only."""
    if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
        return 0
    manager = checkpoint_manager(workdir, read_only=True)
    try:
        return manager.latest_step() or 0
    finally:
        close(manager)


def record(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """The record saved with `step` ({BEST_METRIC: float, LOG_LINES: [str]}), or None (a checkpoint written
    before records were kept, or one whose record is unreadable)."""
    try:
        with quiet_orbax():
            metrics = manager.metrics(step)
    except Exception:  # noqa: BLE001 - an unreadable record is treated as absent; the restore reports corruption
        return None
    return dict(metrics) if isinstance(metrics, dict) and BEST_METRIC in metrics else None


def save(manager: ocp.CheckpointManager, step: int, state: chex.ArrayTree,
         metrics: dict | None = None) -> None:
    """Saves `state` (a pytree) as `step`; orbax writes to a temporary directory and renames it, so a save
    that fails (a full disk) or is killed leaves no step behind. A failure is a one-line OodgenError."""
    try:
        with quiet_orbax():
            manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
            manager.wait_until_finished()
    except Exception as e:
        raise OodgenError(
            f"cannot save checkpoint step {step} in {manager.directory} ({type(e).__name__}: {str(e)[:200]}); "
            f"nothing of step {step} was kept: free disk space (or fix the directory's permissions) and re-run, "
            "which resumes from the last checkpoint") from None


def close(manager: ocp.CheckpointManager) -> None:
    """Closes `manager` and its background threads (an open one prints tracebacks at exit). Saves are
    synchronous and report their own failures, so a failure to close is not raised over them."""
    try:
        with quiet_orbax():
            manager.close()
    except Exception:  # noqa: BLE001
        pass


def delete(manager: ocp.CheckpointManager, step: int) -> None:
    """Removes checkpoint `step` from `manager`'s directory (the step directory as a whole)."""
    with quiet_orbax():
        manager.delete(step)


def restore(manager: ocp.CheckpointManager, like: chex.ArrayTree, step: int | None = None) -> chex.ArrayTree:
    """Restores the checkpoint at `step` (default: the latest) with the structure and shardings of `like`."""
    if step is None:
        step = manager.best_step() if manager.directory.name == BEST_DIR else manager.latest_step()
    if step is None:
        raise OodgenError(f"no checkpoint in {manager.directory}; run train.py with this --workdir first")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        with quiet_orbax():
            return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:
        cause = f"{type(e).__name__}: {str(e)[:200]}"
        raise RestoreError(
            f"cannot restore checkpoint step {step} from {manager.directory} ({cause}); it is corrupt or was "
            "written with a different model config: use the config it was trained with, or a new --workdir",
            step, cause) from None
