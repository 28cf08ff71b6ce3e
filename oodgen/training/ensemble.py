"""Deep ensembles and SWAG: settings, member keys and seeds, stacked parameters [M, ...].

`config.ensemble.size = M` trains M independent models of one config together: their parameters and
optimiser states are stacked along a leading member axis and one vmapped train step updates them all.
Member m is the run with seed `config.seed + m`: its own initialisation, per-example noise and batch
order (member 0 is the single-model run). `config.swag.enabled` keeps SWAG statistics (`oodgen.training.swag`)
of every member in the checkpoint; several members with SWAG make a MultiSWAG posterior.

Scorers other than `ensemble` work on one model: on an ensemble workdir they use member 0.
"""

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from oodgen.config import CONFIG_FILE, load_saved_config
from oodgen.errors import OodgenError
from oodgen.training.swag import SwagSettings

ENSEMBLE_SCORER = "ensemble"
SOURCES = ("members", "swag")
MEMBER_LOOPS = ("auto", "vmap", "unroll")


def resolve_member_loop(loop: str) -> str:
    """How one compiled function runs every member: "vmap" (one batched computation; what accelerators
    like) or "unroll" (the members one after another in the same jitted function; XLA:CPU runs a
    convolution vmapped over kernels as a slow grouped convolution). "auto": unroll on CPU, else vmap."""
    if loop not in MEMBER_LOOPS:
        raise OodgenError(f"member_loop={loop!r}; use one of {MEMBER_LOOPS} (in config.ensemble.member_loop "
                          "or config.eval.ensemble.member_loop)")
    if loop == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return loop


def map_members(fn: Callable[..., Any], loop: str, *args: Any) -> Any:
    """fn over the members of pytrees `args` stacked [M, ...] (None leaves pass through), outputs stacked
    [M, ...]. Inside `jit`; `loop` is "vmap", "unroll" or "auto" (resolve_member_loop)."""
    loop = resolve_member_loop(loop)
    if loop == "vmap":
        return jax.vmap(fn)(*args)
    size = jax.tree.leaves(args)[0].shape[0]
    outputs = [fn(*member(args, m)) for m in range(size)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)


@dataclasses.dataclass(frozen=True)
class EnsembleSettings:
    """M members (1: a single model, stored unstacked as before), SWAG's settings (None: off), and how
    the train step runs the members (`member_loop`, see resolve_member_loop)."""
    size: int = 1
    swag: SwagSettings | None = None
    member_loop: str = "auto"

    @property
    def stacked(self) -> bool:
        """Whether parameters carry a leading member axis [M, ...]."""
        return self.size > 1


def settings(config: ml_collections.ConfigDict) -> EnsembleSettings:
    """Checked `config.ensemble` / `config.swag`; configs saved before they existed mean one model, no SWAG."""
    ensemble = config.get("ensemble", None) or {}
    size = ensemble.get("size", 1)
    if not isinstance(size, int) or size < 1:
        raise OodgenError(f"config.ensemble.size={size!r} must be a positive integer (1: a single model); "
                          "pass e.g. --config.ensemble.size=5")
    member_loop = ensemble.get("member_loop", "auto")
    resolve_member_loop(member_loop)
    swag = config.get("swag", None) or {}
    if not swag.get("enabled", False):
        return EnsembleSettings(size=size, member_loop=member_loop)
    start, every, rank = swag.get("start_step", 1), swag.get("collect_every", 1), swag.get("rank", 2)
    if not isinstance(rank, int) or rank < 2:
        raise OodgenError(f"config.swag.rank={rank!r} must be at least 2 (the low-rank part divides by K - 1); "
                          "pass e.g. --config.swag.rank=20")
    if not isinstance(every, int) or every < 1:
        raise OodgenError(f"config.swag.collect_every={every!r} must be a positive number of steps")
    if not isinstance(start, int) or start < 1:
        raise OodgenError(f"config.swag.start_step={start!r} must be a positive step (SWAG collects the "
                          "iterate after that many steps, then every config.swag.collect_every steps)")
    return EnsembleSettings(size=size, swag=SwagSettings(start_step=start, collect_every=every, rank=rank),
                            member_loop=member_loop)


def member_keys(seed: int, size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init keys, step keys, validation key): member m uses split(key(seed + m), 3)[:2].

    For one model (size 1) the keys are single keys, exactly those of a plain run; else key[M].
    """
    init_key, step_key, val_key = jax.random.split(jax.random.key(seed), 3)
    if size == 1:
        return init_key, step_key, val_key
    keys = jnp.stack([jax.random.split(jax.random.key(seed + m), 3) for m in range(size)])   # [M, 3]
    return keys[:, 0], keys[:, 1], val_key


def member(tree: chex.ArrayTree, index: int) -> chex.ArrayTree:
    """Member `index` of a stacked pytree [M, ...]."""
    return jax.tree.map(lambda x: x[index], tree)


def stack_size(model, params: chex.ArrayTree) -> int | None:
    """M when `params` are `model`'s parameters stacked [M, ...], None when they are one model's."""
    sample = np.zeros((1, *model.image_shape), np.uint8)
    single = jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0), sample))
    leaves = jax.tree.leaves(params)
    if len(leaves) != len(single):
        raise OodgenError(f"got {len(leaves)} parameter arrays for a {type(model).__name__} with {len(single)}; "
                          "pass this model's parameters")
    if all(leaf.shape == ref.shape for leaf, ref in zip(leaves, single)):
        return None
    sizes = {leaf.shape[0] if leaf.shape[1:] == ref.shape else -1 for leaf, ref in zip(leaves, single)}
    if len(sizes) != 1 or -1 in sizes:
        raise OodgenError(f"parameters do not match a {type(model).__name__}, one model or stacked [M, ...]; "
                          "pass the parameters it was trained with")
    return sizes.pop()


def check_matches_saved(config: ml_collections.ConfigDict, workdir: str | os.PathLike, doing: str) -> None:
    """Raises if the workdir's saved config trained another ensemble size or SWAG setting than `config`.

    `doing` names what is being done ("resume", "evaluate") for the message.
    """
    if not (Path(workdir) / CONFIG_FILE).is_file():
        return
    saved, wanted = settings(load_saved_config(workdir)), settings(config)
    for what, have, want in (("ensemble.size", saved.size, wanted.size),
                             ("swag.enabled", saved.swag is not None, wanted.swag is not None),
                             ("swag.rank", saved.swag and saved.swag.rank, wanted.swag and wanted.swag.rank)):
        if have != want:
            raise OodgenError(f"{workdir} was trained with config.{what}={have}, not {want}: pass "
                              f"--config.{what}={have} to {doing} it, or use a new --workdir")


def check_eval_config(config: ml_collections.ConfigDict) -> None:
    """Before anything is restored or scored: the `ensemble` scorer's source must exist in this run."""
    if ENSEMBLE_SCORER not in config.eval.scorers:
        return
    options = config.eval.get(ENSEMBLE_SCORER, None) or {}
    source = options.get("source", "members")
    resolve_member_loop(options.get("member_loop", "auto"))
    if source not in SOURCES:
        raise OodgenError(f"config.eval.ensemble.source={source!r}; use 'members' or 'swag'")
    run = settings(config)
    if source == "members" and run.size < 2:
        raise OodgenError("scorer 'ensemble' with config.eval.ensemble.source='members' needs an ensemble: train "
                          "with --config.ensemble.size=M (M >= 2), or train with --config.swag.enabled=True and "
                          "pass --config.eval.ensemble.source=swag")
    if source == "swag" and run.swag is None:
        raise OodgenError("config.eval.ensemble.source='swag' but SWAG was not enabled when this model was "
                          "trained (config.swag.enabled=False): train with --config.swag.enabled=True, or use "
                          "--config.eval.ensemble.source=members with an ensemble")
