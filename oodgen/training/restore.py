"""Trained models back from a workdir: the parameters of its best or latest checkpoint, read-only."""

import os
from pathlib import Path

import jax
import ml_collections
import numpy as np

from oodgen import sharding
from oodgen.training import checkpoints, ensemble
from oodgen.config import load_saved_config
from oodgen.errors import OodgenError
from oodgen.models import build_model
from oodgen.training.loop import TrainState, create_run_state, make_optimizer


def restore_state(config: ml_collections.ConfigDict, workdir: str | os.PathLike, model,
                  mesh: jax.sharding.Mesh) -> TrainState:
    """The whole train state of the best (lowest validation bits/dim) or latest checkpoint, per
    config.eval.checkpoint: parameters stacked [M, ...] for an ensemble, SWAG statistics when trained with them.

    Read without writing anything. "best" falls back to the latest when the workdir has no best/.
    """
    which = config.eval.get("checkpoint", "latest")
    if which not in ("best", "latest"):
        raise OodgenError(f"config.eval.checkpoint={which!r}; use 'best' or 'latest'")
    best = which == "best" and (Path(workdir) / checkpoints.BEST_DIR).is_dir()
    manager = checkpoints.checkpoint_manager(workdir, read_only=True, best=best)
    try:   # closed on every way out: an open manager's threads print tracebacks at exit
        ensemble.check_matches_saved(config, workdir, "evaluate")
        run = ensemble.settings(config)
        sample, optimizer = np.zeros((1, *model.image_shape), np.uint8), make_optimizer(config.train)
        shapes = jax.eval_shape(lambda key: create_run_state(model, optimizer, run, key, sample),
                                ensemble.member_keys(0, run.size)[0])     # shapes only: nothing is initialised
        target = sharding.replicated(mesh)
        like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=target), shapes)
        return checkpoints.restore(manager, like)
    finally:
        checkpoints.close(manager)


def restore_params(config: ml_collections.ConfigDict, workdir: str | os.PathLike, model,
                   mesh: jax.sharding.Mesh):
    """(parameters, step) of the checkpoint `restore_state` reads; stacked [M, ...] for an ensemble."""
    state = restore_state(config, workdir, model, mesh)
    return state.params, int(state.step)


def load_trained_model(workdir: str | os.PathLike, mesh: jax.sharding.Mesh | None = None, what: str = "model",
                       members: bool = False):
    """(config, model, params) of the model trained in `workdir` (its saved config.json and checkpoint).

    `what` names the model in error messages, e.g. "config.eval.background_ratio.workdir". An ensemble
    workdir gives its member 0, or all members stacked [M, ...] with `members=True`.
    """
    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise OodgenError(f"{what}={str(workdir)!r} holds no trained model (no config.json); train it first "
                          "with train.py --workdir, or point the setting at the right directory")
    config = load_saved_config(workdir)
    model = build_model(config.model, tuple(config.data.image_shape))
    params, _ = restore_params(config, workdir, model, sharding.data_mesh() if mesh is None else mesh)
    if ensemble.settings(config).stacked and not members:
        params = ensemble.member(params, 0)
    return config, model, params
