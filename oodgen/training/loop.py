"""Training: train state, a jitted data-parallel train step with donated state, and a resumable loop.

The batch of step `t` and its randomness are functions of (seed, t) only, so a run that stops and
resumes from a checkpoint takes exactly the steps an uninterrupted run would.
"""

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
from oodgen.training import checkpoints, ensemble, heldout, swag
from oodgen.config import save_config
from oodgen.errors import OodgenError
from oodgen.models import build_model
from oodgen.models import capabilities as caps
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


def _check_finite(history: list[dict], step: int) -> None:
    for offset, metrics in enumerate(history):
        if not math.isfinite(metrics["loss"]):
            raise OodgenError(
                f"training loss became {metrics['loss']} at step {step - len(history) + offset + 1}; "
                "nothing from that point was saved: lower config.train.learning_rate or "
                "config.train.grad_clip_norm and re-run (training resumes from the last checkpoint)")


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


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
          mesh: Mesh | None = None) -> TrainState:
    """Trains `config.model` for `config.train.steps`, resuming from the latest checkpoint in workdir.

    With config.ensemble.size = M > 1, trains M members together (stacked [M, ...], see oodgen.training.ensemble);
    with config.swag.enabled, the checkpoints also hold SWAG statistics (oodgen.training.swag). The held-out split is
    recorded in `<workdir>/split.json` (oodgen.training.heldout), and a resume with another split is refused. The
    `best/` checkpoint has the lowest held-out loss on `held_out_inputs` (perturbed for a background model;
    without its L2 penalty).
    """
    run = ensemble.settings(config)
    mesh = sharding.data_mesh() if mesh is None else mesh
    workdir = Path(workdir)
    if config.train.batch_size % mesh.size:
        raise OodgenError(f"config.train.batch_size={config.train.batch_size} must be a multiple of the "
                          f"{mesh.size} devices")
    if config.train.checkpoint_every % config.train.log_every:
        raise OodgenError("config.train.checkpoint_every must be a multiple of config.train.log_every")
    if (workdir / checkpoints.CHECKPOINT_DIR).is_dir():  # resuming: the same members and SWAG statistics
        ensemble.check_matches_saved(config, workdir, "resume")
    train_images, val_images = load_training_data(config)
    if checkpoints.latest_step(workdir) > 0:   # resuming (or re-run when finished): the same held-out split
        heldout.check_resume(workdir, config, val_images)
    val_inputs = held_out_inputs(config, val_images)
    model = build_model(config.model, tuple(config.data.image_shape))
    optimizer = make_optimizer(config.train)
    init_key, step_key, val_key = ensemble.member_keys(config.seed, run.size)   # key[M] each for an ensemble

    if sharding.is_main_process():  # only process 0 writes files; orbax syncs the processes itself
        workdir.mkdir(parents=True, exist_ok=True)
    manager = checkpoints.checkpoint_manager(workdir, max_to_keep=config.train.keep_checkpoints)
    best_manager = checkpoints.checkpoint_manager(workdir, best=True)
    state = create_run_state(model, optimizer, run, init_key, train_images[:config.train.batch_size])
    state = sharding.replicate(state, mesh)
    latest = manager.latest_step()
    if latest is not None and latest > config.train.steps:
        raise OodgenError(f"{workdir} already holds a checkpoint at step {latest}, beyond "
                          f"config.train.steps={config.train.steps}; pass --config.train.steps={latest} or more "
                          f"to go on, or a new --workdir to start again")
    if latest is not None:
        state = checkpoints.restore(manager, state)
    if sharding.is_main_process():
        save_config(config, workdir)
    heldout.record_split(workdir, heldout.describe_split(config, train_images, val_images))

    objective = make_objective(model, config.train)
    step_fn = (make_ensemble_train_step(model, optimizer, mesh, objective, run.member_loop) if run.stacked
               else make_train_step(model, optimizer, mesh, objective))
    collect_fn = None if run.swag is None else make_swag_collect(mesh, run.stacked)
    start = int(state.step)
    history: list[dict] = []
    with open(workdir / METRICS_FILE if sharding.is_main_process() else os.devnull, "a") as log, \
         tqdm(total=config.train.steps, initial=start, desc="train", unit="step",
              disable=not sharding.is_main_process()) as progress:
        for step in range(start, config.train.steps):
            idx = member_batch_indices(step, train_images.shape[0], config.train.batch_size, config.seed, run.size)
            state, metrics = step_fn(state, sharding.shard_batch(train_images, idx, mesh), step_key)
            if run.swag is not None and run.swag.collects_after(step + 1):
                state = collect_fn(state)
            history.append(metrics)
            progress.update(1)
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.steps:
                history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
                _check_finite(history, done)
                summary = {"step": done, **{k: float(np.mean([m[k] for m in history])) for k in history[0]}}
                if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                    checkpoints.save(manager, done, state)
                    metric = held_out_metric(model)
                    if run.stacked:  # the best checkpoint is the one with the lowest mean over members
                        members_loss = members_validation_loss(
                            model, state.params, val_inputs, val_key, config.eval.batch_size, mesh,
                            run.member_loop)
                        summary[metric] = float(members_loss.mean())
                        summary[f"{metric}_members"] = members_loss.tolist()
                    else:
                        summary[metric] = validation_loss(
                            model, state.params, val_inputs, val_key, config.eval.batch_size, mesh)
                    checkpoints.save(best_manager, done, state, {checkpoints.BEST_METRIC: summary[metric]})
                progress.set_postfix(loss=f"{summary.get('bits_per_dim', summary['loss']):.3f}")
                log.write(json.dumps(summary) + "\n")
                log.flush()
                history = []
    manager.close()
    best_manager.close()
    return state
