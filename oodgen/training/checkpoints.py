"""Orbax checkpoints under `<workdir>/checkpoints`: atomic saves, latest-step restore, read-only reads."""

import os
from pathlib import Path

import chex
import jax
import orbax.checkpoint as ocp

from oodgen.errors import OodgenError

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BEST_METRIC = "val_loss"  # lower is better: bits/dim, or a denoising loss (oodgen.training.loop.held_out_metric)


def checkpoint_manager(workdir: str | os.PathLike, *, read_only: bool = False, max_to_keep: int | None = None,
                       best: bool = False) -> ocp.CheckpointManager:
    """A manager for `<workdir>/checkpoints` (the latest few) or `<workdir>/best` (the one with the lowest
    held-out loss). `read_only` never creates, writes or deletes anything."""
    directory = Path(workdir).absolute() / (BEST_DIR if best else CHECKPOINT_DIR)
    if read_only and not directory.is_dir():
        raise OodgenError(f"no checkpoints in {str(directory)!r}: run train.py --workdir {workdir} first")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else (1 if best else max_to_keep), create=not read_only,
        read_only=read_only, save_interval_steps=0 if read_only else 1, enable_async_checkpointing=False,
        best_fn=(lambda metrics: metrics[BEST_METRIC]) if best else None, best_mode="min")
    try:
        return ocp.CheckpointManager(directory, options=options)
    except Exception as e:  # orbax reads every step's metadata when it opens a directory
        raise OodgenError(f"cannot read the checkpoints in {str(directory)!r} ({type(e).__name__}: {str(e)[:200]}); "
                          "they are corrupt: restore them from a copy, or train again in a new --workdir") from None


def latest_step(workdir: str | os.PathLike) -> int:
    """The step of the latest checkpoint in `<workdir>/checkpoints`; 0 when there is none. Reads only."""
    if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
        return 0
    manager = checkpoint_manager(workdir, read_only=True)
    step = manager.latest_step()
    manager.close()
    return step or 0


def save(manager: ocp.CheckpointManager, step: int, state: chex.ArrayTree,
         metrics: dict[str, float] | None = None) -> None:
    """Saves `state` (a pytree) as `step`; orbax writes to a temporary directory and renames it."""
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, like: chex.ArrayTree, step: int | None = None) -> chex.ArrayTree:
    """Restores the checkpoint at `step` (default: the latest) with the structure and shardings of `like`."""
    if step is None:
        step = manager.best_step() if manager.directory.name == BEST_DIR else manager.latest_step()
    if step is None:
        raise OodgenError(f"no checkpoint in {manager.directory}; run train.py with this --workdir first")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:
        raise OodgenError(
            f"cannot restore checkpoint step {step} from {manager.directory} "
            f"({type(e).__name__}: {str(e)[:200]}); it is corrupt or was written with a different model "
            "config: use the config it was trained with, or a new --workdir") from None
