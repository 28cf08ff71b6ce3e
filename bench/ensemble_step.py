"""An ensemble's train step and scoring pass: the members vmapped or unrolled in one jitted function,
against the baseline of M separate jitted single-model calls in a Python loop.

  - "train step": the default VAE's train step (Adam), each of M members on its own batch of `--batch`;
  - "log_prob": every member's log-likelihood (importance-weighted bound, `--samples` samples) of one
    batch of `--score-batch` images, the ensemble scorer's inner pass.
Run: python -m bench.ensemble_step [--members 3,5] [--batch 128] [--score-batch 100] [--samples 4]
[--json PATH]
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import add_json_flag, markdown_rows, publish, time_interleaved
from configs import vae_fashion_mnist
from oodgen.training import ensemble
from oodgen.models import build_model
from oodgen.training.objectives import mean_negative_bound
from oodgen.scorers.ensemble import member_log_probs
from oodgen.sharding import data_mesh, example_keys
from oodgen.training.loop import TrainState, make_ensemble_train_step, make_optimizer, train_step


def candidates(size: int, batch: int, score_batch: int, samples: int) -> tuple[dict, dict]:
    """({name: thunk} for the train step, {name: thunk} for log_prob), each with the loop baseline first."""
    config = vae_fashion_mnist.get_config()
    model = build_model(config.model, tuple(config.data.image_shape))
    optimizer = make_optimizer(config.train)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (size, batch, 28, 28, 1)), jnp.uint8)
    params = jax.vmap(lambda key: model.init(key, images[0, :2]))(jax.random.split(jax.random.key(0), size))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.vmap(optimizer.init)(params))
    step_keys = jax.random.split(jax.random.key(1), size)
    step = jax.jit(functools.partial(train_step, model, functools.partial(mean_negative_bound, model), optimizer))
    members = [ensemble.member(state.replace(step=None), m).replace(step=state.step) for m in range(size)]

    def train_candidate(loop: str):   # re-jitted without donation, so every call can take the same state
        fn = jax.jit(make_ensemble_train_step(model, optimizer, data_mesh(), member_loop=loop).__wrapped__)
        return lambda: fn(state, images, step_keys)

    train = {"loop of single steps": lambda: [step(members[m], images[m], step_keys[m]) for m in range(size)],
             "vmap": train_candidate("vmap"), "unroll": train_candidate("unroll")}

    score_images = images[0, :score_batch] if score_batch <= batch else jnp.tile(images[0], (2, 1, 1, 1))[:score_batch]
    keys = example_keys(jax.random.key(2), jnp.arange(score_images.shape[0]))
    single = jax.jit(model.log_prob, static_argnums=3)
    member_params = [ensemble.member(params, m) for m in range(size)]
    score = {"loop of single calls": lambda: [single(p, score_images, keys, samples) for p in member_params],
             **{loop: functools.partial(member_log_probs, model, samples, loop, params, score_images, keys)
                for loop in ("vmap", "unroll")}}
    return train, score


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", default="3,5")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--score-batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = add_json_flag(parser).parse_args()
    library_loop = ensemble.resolve_member_loop("auto")  # what the library runs by default on this backend: "oodgen"
    rows = []
    for size in [int(m) for m in args.members.split(",")]:
        train, score = candidates(size, args.batch, args.score_batch, args.samples)
        for what, thunks, items in (("train step", train, size * args.batch),
                                    ("log_prob", score, size * args.score_batch)):
            timings = time_interleaved(thunks, baseline=next(iter(thunks)), items_per_call=items,
                                       repeats=args.repeats, roles={library_loop: "oodgen"})
            rows += markdown_rows(timings, f"M={size}, {what}")
            print("\n".join(rows[-len(timings):]), flush=True)
    publish("ensemble_step", "Ensemble: members vmapped or unrolled in one jitted function",
            f"Default VAE; train step on a batch of {args.batch} per member, log_prob of {args.score_batch} "
            f"images with {args.samples} importance samples per member. Images/s counts member-images. "
            "Baseline: a Python loop of M calls of the jitted single-model function.",
            "python -m bench.ensemble_step", rows, args.no_write, args.json)


if __name__ == "__main__":
    main()
