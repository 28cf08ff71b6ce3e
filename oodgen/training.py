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
from jax.sharding import Mesh
from tqdm.auto import tqdm

from oodgen import checkpoints, data, likelihoods, sharding
from oodgen.config import save_config
from oodgen.errors import OodgenError
from oodgen.models import build_model
from oodgen.objectives import Objective, make_objective, mean_negative_bound
from oodgen.likelihoods import negative_log_likelihood_bpd
from oodgen.validation import check_images

METRICS_FILE = "train_metrics.jsonl"


@struct.dataclass
class TrainState:
    """Everything a checkpoint holds: the step, the parameters and the optimiser state."""
    step: jax.Array
    params: chex.ArrayTree
    opt_state: optax.OptState


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
    metrics = {**aux, "loss": loss, "bits_per_dim": likelihoods.bits_per_dim(aux["neg_elbo"], model.num_dims),
               "grad_norm": optax.tree.norm(grads)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


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


def validation_bits_per_dim(model, params: chex.ArrayTree, images: np.ndarray, rng: jax.Array,
                            batch_size: int, mesh: Mesh) -> float:
    """Mean negative ELBO on held-out images, in bits per dimension."""
    fn = functools.partial(negative_log_likelihood_bpd, model, 1)
    return float(sharding.map_batches(fn, images, rng=rng, batch_size=batch_size, mesh=mesh,
                                      params=params).mean())


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
          mesh: Mesh | None = None) -> TrainState:
    """Trains `config.model` for `config.train.steps`, resuming from the latest checkpoint in workdir."""
    mesh = sharding.data_mesh() if mesh is None else mesh
    workdir = Path(workdir)
    if config.train.batch_size % mesh.size:
        raise OodgenError(f"config.train.batch_size={config.train.batch_size} must be a multiple of the "
                          f"{mesh.size} devices")
    if config.train.checkpoint_every % config.train.log_every:
        raise OodgenError("config.train.checkpoint_every must be a multiple of config.train.log_every")
    train_images, val_images = load_training_data(config)
    model = build_model(config.model, tuple(config.data.image_shape))
    optimizer = make_optimizer(config.train)
    rng = jax.random.key(config.seed)
    init_key, step_key, val_key = jax.random.split(rng, 3)

    workdir.mkdir(parents=True, exist_ok=True)
    manager = checkpoints.checkpoint_manager(workdir, max_to_keep=config.train.keep_checkpoints)
    best_manager = checkpoints.checkpoint_manager(workdir, best=True)
    state = create_train_state(model, optimizer, init_key, train_images[:config.train.batch_size])
    state = jax.device_put(state, sharding.replicated(mesh))
    latest = manager.latest_step()
    if latest is not None and latest > config.train.steps:
        raise OodgenError(f"{workdir} already holds a checkpoint at step {latest}, beyond "
                          f"config.train.steps={config.train.steps}; pass --config.train.steps={latest} or more "
                          f"to go on, or a new --workdir to start again")
    if latest is not None:
        state = checkpoints.restore(manager, state)
    save_config(config, workdir)

    step_fn = make_train_step(model, optimizer, mesh, make_objective(model, config.train))
    start = int(state.step)
    history: list[dict] = []
    with open(workdir / METRICS_FILE, "a") as log, \
         tqdm(total=config.train.steps, initial=start, desc="train", unit="step") as progress:
        for step in range(start, config.train.steps):
            idx = batch_indices(step, train_images.shape[0], config.train.batch_size, config.seed)
            state, metrics = step_fn(state, train_images[idx], step_key)
            history.append(metrics)
            progress.update(1)
            done = step + 1
            if done % config.train.log_every == 0 or done == config.train.steps:
                history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
                _check_finite(history, done)
                summary = {"step": done, **{k: float(np.mean([m[k] for m in history])) for k in history[0]}}
                if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                    checkpoints.save(manager, done, state)
                    summary[checkpoints.BEST_METRIC] = validation_bits_per_dim(
                        model, state.params, val_images, val_key, config.eval.batch_size, mesh)
                    checkpoints.save(best_manager, done, state, {checkpoints.BEST_METRIC: summary[checkpoints.BEST_METRIC]})
                progress.set_postfix(bpd=f"{summary['bits_per_dim']:.3f}")
                log.write(json.dumps(summary) + "\n")
                log.flush()
                history = []
    manager.close()
    best_manager.close()
    return state
