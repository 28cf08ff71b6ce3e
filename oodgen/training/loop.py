"""Training: train state, a jitted data-parallel train step with donated state, and a resumable loop.

The batch of step `t` and its randomness are functions of (seed, t) only, so a run that stops and
resumes from a checkpoint takes exactly the steps an uninterrupted run would.
"""

import contextlib
import functools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from oodgen import data, sharding
from oodgen.models import likelihoods
from oodgen.training import checkpoints, ensemble, heldout, resume, swag
from oodgen.config import save_config
from oodgen.schema import validate_config
from oodgen.errors import OodgenError
from oodgen.models import build_model
from oodgen.models import capabilities as caps
from oodgen.training.lock import WorkdirLock
from oodgen.training.objectives import Objective, make_objective, mean_negative_bound
from oodgen.data.perturbation import perturb
from oodgen.models.likelihoods import negative_log_likelihood_bpd
from oodgen.validation import check_images

METRICS_FILE = "train_metrics.jsonl"


@struct.dataclass
class TrainState:
    """Everything a checkpoint holds: the step, the parameters and the optimiser state."""
    step: jax.Array
    params: chex.ArrayTree
    opt_state: optax.OptState


@struct.dataclass
class SwagTrainState(TrainState):
    """A TrainState that also carries SWAG statistics of the parameters (when config.swag.enabled)."""
    swag: swag.SwagState


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with linear warm-up to a constant learning rate, after global-norm gradient clipping.

    Step t (from 0) uses learning_rate · min(1, (t + 1) / warmup_steps): the first step already moves.
    """
    peak, warmup = train_config.learning_rate, max(1, train_config.warmup_steps)

    def schedule(step: jax.Array) -> jax.Array:
        return peak * jnp.minimum(1.0, (step + 1) / warmup)

    return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), optax.adam(schedule))


def create_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array,
                       sample_images: jax.Array) -> TrainState:
    """Step 0, parameters initialised from uint8 `sample_images` [b, H, W, C], fresh optimiser state."""
    params = model.init(rng, sample_images)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def train_step(model, objective: Objective, optimizer: optax.GradientTransformation, state: TrainState,
               images: jax.Array, rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on `objective`; per-example keys come from (rng, step, index in batch)."""
    step_key = jax.random.fold_in(rng, state.step)
    keys = sharding.example_keys(step_key, jnp.arange(images.shape[0]))
    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params, images, keys, state.step)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}
    if "neg_elbo" in aux:  # likelihood models; a denoising surrogate has no bits/dim
        metrics["bits_per_dim"] = likelihoods.bits_per_dim(aux["neg_elbo"], model.num_dims)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(model, optimizer: optax.GradientTransformation, mesh: Mesh,
                    objective: Objective | None = None) -> Callable:
    """`train_step` jitted for `mesh`: state replicated and donated, batch split over `data`.

    `objective` defaults to the model's mean negative bound.
    """
    objective = functools.partial(mean_negative_bound, model) if objective is None else objective
    replicated = sharding.replicated(mesh)
    return jax.jit(
        lambda state, images, rng: train_step(model, objective, optimizer, state, images, rng),
        in_shardings=(replicated, sharding.data_sharding(mesh), replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0)


def create_run_state(model, optimizer: optax.GradientTransformation, run: ensemble.EnsembleSettings,
                     init_key: jax.Array, sample_images: jax.Array) -> TrainState:
    """Step 0 of a run: one model (`init_key` one key), or `run.size` members stacked [M, ...] (key[M]);
    a SwagTrainState with empty SWAG statistics when `run.swag` is set."""
    if not run.stacked:
        state = create_train_state(model, optimizer, init_key, sample_images)
    else:
        params = jax.jit(jax.vmap(lambda key: model.init(key, sample_images)))(init_key)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=jax.jit(jax.vmap(optimizer.init))(params))
    if run.swag is None:
        return state
    init = functools.partial(swag.init_swag, rank=run.swag.rank)
    return SwagTrainState(step=state.step, params=state.params, opt_state=state.opt_state,
                          swag=jax.jit(jax.vmap(init) if run.stacked else init)(state.params))


def make_ensemble_train_step(model, optimizer: optax.GradientTransformation, mesh: Mesh,
                             objective: Objective | None = None, member_loop: str = "auto") -> Callable:
    """`train_step` over the members of a stacked state in one function jitted for `mesh`, the state donated.

    (state [M, ...], images uint8 [M, B, H, W, C], keys key[M]) -> (state, metrics averaged over members);
    member m takes its own batch and keys. Each member's batch is split over `data`. The members are
    vmapped, or unrolled (`member_loop`, see oodgen.training.ensemble.resolve_member_loop; "auto" unrolls on CPU).
    """
    objective = functools.partial(mean_negative_bound, model) if objective is None else objective
    step = functools.partial(train_step, model, objective, optimizer)

    def members_step(state: TrainState, images: jax.Array, keys: jax.Array):
        count = state.step   # shared by the members

        def member_step(member_state, member_images, member_keys):
            new, metrics = step(member_state.replace(step=count), member_images, member_keys)
            return new.replace(step=None), metrics

        state, metrics = ensemble.map_members(member_step, member_loop, state.replace(step=None), images, keys)
        return state.replace(step=count + 1), jax.tree.map(lambda v: jnp.mean(v, axis=0), metrics)

    replicated = sharding.replicated(mesh)
    member_batches = NamedSharding(mesh, PartitionSpec(None, sharding.DATA_AXIS))
    return jax.jit(members_step, in_shardings=(replicated, member_batches, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0)


def make_swag_collect(mesh: Mesh, stacked: bool) -> Callable[[SwagTrainState], SwagTrainState]:
    """Jitted state -> state with the current parameters folded into its SWAG statistics (per member)."""
    fold = jax.vmap(swag.collect) if stacked else swag.collect
    replicated = sharding.replicated(mesh)
    return jax.jit(lambda state: state.replace(swag=fold(state.swag, state.params)),
                   in_shardings=replicated, out_shardings=replicated, donate_argnums=0)


def member_batch_indices(step: int, num_examples: int, batch_size: int, seed: int, size: int) -> np.ndarray:
    """Indices of the batch at `step`: int[B] for one model; int[M, B] for M members, member m's from seed + m."""
    if size == 1:
        return batch_indices(step, num_examples, batch_size, seed)
    return np.stack([batch_indices(step, num_examples, batch_size, seed + m) for m in range(size)])


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """Example indices of the batch at `step`: a fresh seeded permutation each epoch, no repeats."""
    steps_per_epoch = num_examples // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size:(position + 1) * batch_size]


def load_training_data(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) uint8 images; the validation split is the tail of the training split."""
    image_shape = tuple(config.data.image_shape)
    images = check_images(data.load(config.data.train, image_shape=image_shape).images, image_shape,
                          what=config.data.train)
    num_val = config.data.num_validation
    if num_val >= images.shape[0]:
        raise OodgenError(f"config.data.num_validation={num_val} leaves no training data "
                          f"({images.shape[0]} images); lower it")
    train, val = images[:images.shape[0] - num_val], images[images.shape[0] - num_val:]
    if config.data.max_train_examples > 0:
        train = train[:config.data.max_train_examples]
    if train.shape[0] < config.train.batch_size:
        raise OodgenError(f"{train.shape[0]} training images are fewer than one batch "
                          f"(config.train.batch_size={config.train.batch_size}); lower the batch size")
    return train, val


HELD_OUT_PERTURBATION_SALT = 0x68656C64  # folded into key(config.seed): the held-out perturbation key


def held_out_inputs(config: ml_collections.ConfigDict, images: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The inputs the held-out loss is measured on: uint8[N, H, W, C] -> uint8[N, H, W, C].

    The held-out images themselves, or, for a background model (config.train.perturbation_rate μ > 0), those
    images perturbed once at rate μ, as it is trained: example i with key fold_in(fold_in(key(config.seed),
    HELD_OUT_PERTURBATION_SALT), i), apart from the training keys, the same at every checkpoint and resume.
    The background model's L2 penalty is a regulariser, not part of the held-out metric.
    """
    rate = config.train.get("perturbation_rate", 0.0)
    if not 0.0 <= rate <= 1.0:
        raise OodgenError(f"config.train.perturbation_rate={rate} must be in [0, 1] (the fraction μ of "
                          "sub-pixels a background model's inputs have resampled); 0 trains a plain model")
    if not rate:
        return images
    key = jax.random.fold_in(jax.random.key(config.seed), HELD_OUT_PERTURBATION_SALT)
    keys = sharding.example_keys(key, jnp.arange(images.shape[0]))
    fn = jax.jit(perturb, static_argnums=2)
    return np.concatenate([np.asarray(fn(keys[i:i + chunk], jnp.asarray(images[i:i + chunk]), rate))
                           for i in range(0, images.shape[0], chunk)])


def held_out_metric(model) -> str:
    """The name of the held-out loss logged for `model`: "val_bits_per_dim" (the negative one-sample bound,
    likelihood models) or "val_denoising_loss" (models whose loss is a denoising surrogate)."""
    return "val_bits_per_dim" if caps.likelihood_kind(model.capabilities) else "val_denoising_loss"


@functools.partial(jax.jit, static_argnums=0)
def held_out_loss(model, params: chex.ArrayTree, images: jax.Array, keys: jax.Array) -> jax.Array:
    """Per-example held-out loss in the units `held_out_metric` names: f32[B]."""
    if caps.likelihood_kind(model.capabilities):
        return negative_log_likelihood_bpd(model, 1, params, images, keys)
    return model.denoising_loss(params, images, keys)


def validation_loss(model, params: chex.ArrayTree, images: np.ndarray, rng: jax.Array,
                    batch_size: int, mesh: Mesh) -> float:
    """Mean held-out loss (`held_out_metric`: bits/dim, or the denoising loss) on held-out images."""
    fn = functools.partial(held_out_loss, model)
    return float(sharding.map_batches(fn, images, rng=rng, batch_size=batch_size, mesh=mesh,
                                      params=params).mean())


def members_validation_loss(model, params: chex.ArrayTree, images: np.ndarray, rng: jax.Array,
                            batch_size: int, mesh: Mesh, member_loop: str = "auto") -> np.ndarray:
    """Mean held-out loss (`held_out_metric`) of every member of stacked `params`: f32[M].

    All members in one pass (vmapped or unrolled), with the same per-example keys, batch_size // M images a call."""
    size = jax.tree.leaves(params)[0].shape[0]
    loss = functools.partial(_members_held_out_loss, model, ensemble.resolve_member_loop(member_loop))
    return sharding.map_batches(loss, images, rng=rng, batch_size=max(1, batch_size // size), mesh=mesh,
                                params=params).mean(axis=0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _members_held_out_loss(model, member_loop: str, params: chex.ArrayTree, images: jax.Array,
                           keys: jax.Array) -> jax.Array:
    """Held-out loss of every member: f32[B, M]."""
    return ensemble.map_members(lambda p: held_out_loss(model, p, images, keys), member_loop, params).T


DIVERGENCE_FACTOR = 3.0   # the default of config.train.divergence_factor


def divergence_factor(train_config: ml_collections.ConfigDict) -> float:
    """config.train.divergence_factor: a number > 1, or 0 to turn the held-out divergence check off."""
    factor = train_config.get("divergence_factor", DIVERGENCE_FACTOR)
    if (isinstance(factor, bool) or not isinstance(factor, (int, float))
            or not (factor == 0 or (math.isfinite(factor) and factor > 1))):
        raise OodgenError(f"config.train.divergence_factor={factor!r} must be a number > 1 (a held-out loss above "
                          "that many times the best one stops training before it is saved), or 0 to turn that off")
    return float(factor)


def held_out_diverged(loss: float, best: float | None, factor: float) -> bool:
    """The rule that refuses to save a checkpoint for its held-out loss: non-finite, or, with `factor` > 0 and
    a best held-out loss so far, above best + (factor - 1)·|best| (that is factor × best, for a positive best)."""
    if not math.isfinite(loss):
        return True
    return bool(factor) and best is not None and loss > best + (factor - 1) * abs(best)


@jax.jit
def _all_finite(tree: chex.ArrayTree) -> jax.Array:
    """bool[]: every floating-point leaf of `tree` is free of NaN and ±inf.

    One reduction per dtype over the leaves flattened and concatenated: one reduction per leaf took 34 s to
    compile on XLA:CPU for a Glow of depth 32 (~2,700 leaves of parameters and Adam moments), the concatenation 2 s.
    """
    by_dtype: dict = {}
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(x.dtype, jnp.inexact):
            by_dtype.setdefault(jnp.dtype(x.dtype), []).append(jnp.ravel(x))
    checks = [jnp.all(jnp.isfinite(jnp.concatenate(xs))) for xs in by_dtype.values()]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def _diverged(step: int, what: str, last_good: int | None, best_step: int | None,
              learning_rate: float) -> OodgenError:
    """The one-line error of a run stopped for divergence, with the command line that resumes it."""
    lower = f"--config.train.learning_rate={learning_rate / 10:g}"
    if last_good is None:
        return OodgenError(f"training diverged at step {step}: {what}; nothing was saved: re-run with a lower learning "
                           f"rate, e.g. {lower} (or a lower config.train.grad_clip_norm)")
    best = f" (best/ holds step {best_step})" if best_step not in (None, last_good) else ""
    return OodgenError(
        f"training diverged at step {step}: {what}; nothing after step {last_good} was saved, and checkpoint step "
        f"{last_good} is the last good one{best}: re-run with --config.train.resume_from={last_good} {lower} "
        "(a lower learning rate, or a lower config.train.grad_clip_norm; the log lines after that step are dropped)")


def _restore_resume_point(source, like: TrainState, step: int, managers: tuple) -> TrainState:
    """Checkpoint `step` from `source`; when it is corrupt, a one-line error naming the latest intact older
    step (of `managers`: checkpoints/ and best/) and how to resume from it."""
    try:
        return checkpoints.restore(source, like, step)
    except checkpoints.RestoreError as error:
        for older in sorted({s for m in managers for s in m.all_steps() if s < step}, reverse=True):
            holder = next(m for m in managers if older in m.all_steps())
            try:
                checkpoints.restore(holder, like, older)
            except checkpoints.RestoreError:
                continue
            raise OodgenError(
                f"checkpoint step {step} in {source.directory} is corrupt ({error.cause}); step {older} is intact: "
                f"re-run with --config.train.resume_from={older} to resume from it (the checkpoints after step "
                f"{older}, the corrupt one included, are then removed)") from None
        raise


def _append_log_line(log, line: str, step: int, path: Path) -> None:
    """Appends `line` and a newline to the open log and flushes it; test hook "log" dies half-way."""
    text = line + "\n"
    try:
        if os.environ.get(resume.CRASH_ENV) == f"log:{step}":
            log.write(text[:len(text) // 2])
            log.flush()
            resume.crash_point("log", step)
        log.write(text)
        log.flush()
    except OSError as e:
        raise OodgenError(f"cannot write {path} ({e}); free disk space and re-run (training resumes from the "
                          "last checkpoint, and the log is repaired from it)") from None


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
          mesh: Mesh | None = None) -> TrainState:
    """Trains `config.model` for `config.train.steps`, resuming from the checkpoint `config.train.resume_from`
    names ("latest", "best" or a step; see oodgen.training.resume) in workdir.

    With config.ensemble.size = M > 1, trains M members together (stacked [M, ...], see oodgen.training.ensemble);
    with config.swag.enabled, the checkpoints also hold SWAG statistics (oodgen.training.swag). The held-out split is
    recorded in `<workdir>/split.json` (oodgen.training.heldout), and a resume with another split is refused. The
    `best/` checkpoint has the lowest held-out loss on `held_out_inputs` (perturbed for a background model;
    without its L2 penalty). A run killed at any point and re-run ends with the same checkpoints, `best/` and
    `train_metrics.jsonl` as an uninterrupted one. Nothing non-finite or diverged is saved (see
    `held_out_diverged`): the run stops with a one-line error naming the last good checkpoint. Process 0 holds
    an exclusive lock on the workdir (oodgen.training.lock) while it trains.
    """
    validate_config(config, for_="train")
    run = ensemble.settings(config)
    resume_from = resume.parse_resume_from(config.train.get("resume_from", "latest"))
    factor = divergence_factor(config.train)
    mesh = sharding.data_mesh() if mesh is None else mesh
    workdir = Path(workdir)
    if config.train.batch_size % mesh.size:
        raise OodgenError(f"config.train.batch_size={config.train.batch_size} must be a multiple of the "
                          f"{mesh.size} devices")
    if config.train.checkpoint_every % config.train.log_every:
        raise OodgenError("config.train.checkpoint_every must be a multiple of config.train.log_every")
    workdir_lock = WorkdirLock(workdir)
    try:
        if sharding.is_main_process() and workdir.is_dir():
            workdir_lock.acquire()   # before reading what another trainer may be writing
        return _train(config, workdir, mesh, run, resume_from, factor, workdir_lock)
    finally:
        workdir_lock.release()


def _train(config: ml_collections.ConfigDict, workdir: Path, mesh: Mesh, run: ensemble.EnsembleSettings,
           resume_from: str | int, factor: float, workdir_lock: WorkdirLock) -> TrainState:
    """`train` once its settings are checked, holding `workdir_lock` from the moment the workdir exists."""
    main = sharding.is_main_process()
    if (workdir / checkpoints.CHECKPOINT_DIR).is_dir():  # resuming: the same members and SWAG statistics
        ensemble.check_matches_saved(config, workdir, "resume")
    train_images, val_images = load_training_data(config)
    if checkpoints.latest_step(workdir) > 0:   # resuming (or re-run when finished): the same held-out split
        heldout.check_resume(workdir, config, val_images)
    val_inputs = held_out_inputs(config, val_images)
    model = build_model(config.model, tuple(config.data.image_shape))
    optimizer = make_optimizer(config.train)
    init_key, step_key, val_key = ensemble.member_keys(config.seed, run.size)   # key[M] each for an ensemble
    metric = held_out_metric(model)

    def held_out(state: TrainState) -> dict:
        """The held-out loss of `state` as logged: {metric: mean} (+ {metric_members: [M]} for an ensemble)."""
        if not run.stacked:
            return {metric: validation_loss(model, state.params, val_inputs, val_key, config.eval.batch_size, mesh)}
        members_loss = members_validation_loss(model, state.params, val_inputs, val_key, config.eval.batch_size,
                                               mesh, run.member_loop)   # the best has the lowest mean over members
        return {metric: float(members_loss.mean()), f"{metric}_members": members_loss.tolist()}

    if main:  # only process 0 writes files; orbax syncs the processes itself
        workdir.mkdir(parents=True, exist_ok=True)
        workdir_lock.acquire()
    log_path = workdir / METRICS_FILE
    with contextlib.ExitStack() as managers:   # closed on every way out, so orbax leaves no thread behind
        manager = checkpoints.checkpoint_manager(workdir, max_to_keep=config.train.keep_checkpoints)
        managers.callback(checkpoints.close, manager)
        best_manager = checkpoints.checkpoint_manager(workdir, best=True)
        managers.callback(checkpoints.close, best_manager)
        state = create_run_state(model, optimizer, run, init_key, train_images[:config.train.batch_size])
        state = sharding.replicate(state, mesh)
        start, source = resume.resume_point(resume_from, manager, best_manager)
        if start > config.train.steps:
            raise OodgenError(f"{workdir} already holds a checkpoint at step {start}, beyond "
                              f"config.train.steps={config.train.steps}; pass --config.train.steps={start} or more "
                              f"to go on, or a new --workdir to start again")
        if start:
            state = _restore_resume_point(source, state, start, (manager, best_manager))
        if main:
            save_config(config, workdir)
        heldout.record_split(workdir, heldout.describe_split(config, train_images, val_images))
        resume.discard_later(start, manager, best_manager, announce=main)
        like = state
        best_loss = resume.complete_bookkeeping(
            start, state, source, manager, best_manager, config.train.keep_checkpoints, log_path if main else None,
            score=lambda s: held_out(s)[metric], restore=lambda step: checkpoints.restore(manager, like, step))
        best_step = best_manager.best_step()

        objective = make_objective(model, config.train)
        step_fn = (make_ensemble_train_step(model, optimizer, mesh, objective, run.member_loop) if run.stacked
                   else make_train_step(model, optimizer, mesh, objective))
        collect_fn = None if run.swag is None else make_swag_collect(mesh, run.stacked)

        def diverged(at: int, what: str) -> OodgenError:
            return _diverged(at, what, manager.latest_step(), best_step, config.train.learning_rate)

        history: list[dict] = []
        pending: list[str] = []   # the log lines since the last checkpoint, saved with the next one
        with open(log_path if main else os.devnull, "a") as log, \
             tqdm(total=config.train.steps, initial=start, desc="train", unit="step", disable=not main) as progress:
            for step in range(start, config.train.steps):
                idx = member_batch_indices(step, train_images.shape[0], config.train.batch_size, config.seed,
                                           run.size)
                state, metrics = step_fn(state, sharding.shard_batch(train_images, idx, mesh), step_key)
                if run.swag is not None and run.swag.collects_after(step + 1):
                    state = collect_fn(state)
                history.append(metrics)
                progress.update(1)
                done = step + 1
                if not (done % config.train.log_every == 0 or done == config.train.steps):
                    continue
                history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
                for offset, logged in enumerate(history):
                    if not math.isfinite(logged["loss"]):
                        raise diverged(done - len(history) + offset + 1, f"the training loss became {logged['loss']}")
                summary = {"step": done, **{k: float(np.mean([m[k] for m in history])) for k in history[0]}}
                if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                    if not bool(_all_finite(state)):   # before any save: never a poisoned checkpoint
                        raise diverged(done, "the parameters or optimiser state became non-finite (NaN or inf)")
                    summary.update(held_out(state))
                    loss = summary[metric]
                    if held_out_diverged(loss, best_loss, factor):
                        raise diverged(done, f"the held-out loss {metric} is {loss:.6g}" + (
                            f", above config.train.divergence_factor={factor:g} times the best one "
                            f"({best_loss:.6g} at step {best_step}; if that is no divergence, raise the factor)"
                            if math.isfinite(loss) else ""))
                    line = json.dumps(summary)
                    saved = {checkpoints.BEST_METRIC: loss, checkpoints.LOG_LINES: [*pending, line]}
                    checkpoints.save(manager, done, state, saved)
                    resume.crash_point("checkpoint", done)
                    if best_loss is None or loss < best_loss:
                        checkpoints.save(best_manager, done, state, saved)
                        best_loss, best_step = loss, done
                    resume.crash_point("best", done)
                    pending = []
                else:
                    line = json.dumps(summary)
                    pending.append(line)
                progress.set_postfix(loss=f"{summary.get('bits_per_dim', summary['loss']):.3f}")
                _append_log_line(log, line, done, log_path)
                resume.crash_point("logged", done)
                history = []
    return state
