"""MSMA features with all noise levels as one vmapped axis vs a Python loop over σ, and the DDPM
reconstruction score's images/s (every start step and sampler step inside one jitted call).

Run: python -m bench.score_models [--batch 100] [--ddpm-batch 4] [--repeats 3] [--json PATH]
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import add_json_flag, markdown_rows, publish, time_interleaved
from configs import ddpm_fashion_mnist, score_net_fashion_mnist
from oodgen.models import build_model
from oodgen.sharding import example_keys


def msma_rows(batch: int, repeats: int) -> list[str]:
    config = score_net_fashion_mnist.get_config()
    model = build_model(config.model, (28, 28, 1))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)), jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(0), images[:2])
    vmapped = jax.jit(model.msma_features)

    @jax.jit
    def one_level(p, x, sigma):
        return jnp.sqrt(jnp.sum(jnp.square(sigma * model.score(p, model.preprocess(x), sigma)), axis=(1, 2, 3)))

    sigmas = [jnp.float32(s) for s in np.asarray(model.sigmas)]

    def loop():
        return jnp.stack([one_level(params, images, s) for s in sigmas], axis=1)

    with jax.default_matmul_precision("highest"):  # agreement in full f32 (GPUs default to TF32)
        np.testing.assert_allclose(loop(), vmapped(params, images), rtol=1e-4)
    timings = time_interleaved({"loop over σ (reference)": loop, "all σ, one vmapped call": lambda: vmapped(params, images)},
                               baseline="loop over σ (reference)", items_per_call=batch, repeats=repeats,
                               roles={"all σ, one vmapped call": "oodgen"})
    return markdown_rows(timings, f"MSMA features, L={len(sigmas)}, B={batch}")


def ddpm_rows(batch: int, repeats: int) -> list[str]:
    config = ddpm_fashion_mnist.get_config()
    model = build_model(config.model, (28, 28, 1))
    settings = config.eval.ddpm_reconstruction
    starts = tuple(range(settings.start_every, settings.num_sampling_steps + 1, settings.start_every))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)), jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(0), images[:2])
    keys = example_keys(jax.random.key(1), jnp.arange(batch))
    errors = jax.jit(functools.partial(model.reconstruction_errors, start_steps=starts,
                                       num_sampling_steps=settings.num_sampling_steps))
    per_start = [jax.jit(functools.partial(model.reconstruction_errors, start_steps=(s,),
                                           num_sampling_steps=settings.num_sampling_steps)) for s in starts]

    def loop():
        return jnp.concatenate([f(params, images, keys) for f in per_start], axis=1)

    with jax.default_matmul_precision("highest"):  # agreement in full f32 (GPUs default to TF32)
        np.testing.assert_allclose(loop(), errors(params, images, keys), rtol=1e-3, atol=1e-6)
    timings = time_interleaved({"loop over start steps (reference)": loop,
                                "all start steps, one jitted call": lambda: errors(params, images, keys)},
                               baseline="loop over start steps (reference)", items_per_call=batch, repeats=repeats,
                               roles={"all start steps, one jitted call": "oodgen"})
    return markdown_rows(timings, f"DDPM reconstruction, {len(starts)} start steps of "
                                  f"{settings.num_sampling_steps}, B={batch}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--ddpm-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = add_json_flag(parser).parse_args()
    rows = msma_rows(args.batch, args.repeats)
    print("\n".join(rows), flush=True)
    ddpm = ddpm_rows(args.ddpm_batch, args.repeats)
    rows += ddpm
    print("\n".join(ddpm), flush=True)
    publish("score_models", "Score network (MSMA features) and DDPM reconstruction speed",
            "Default `configs/score_net_fashion_mnist.py` and `configs/ddpm_fashion_mnist.py` models, random "
            "parameters and images (speed does not depend on training).",
            f"python -m bench.score_models --batch {args.batch} --ddpm-batch {args.ddpm_batch} --repeats {args.repeats}",
            rows, args.no_write, args.json)


if __name__ == "__main__":
    main()
