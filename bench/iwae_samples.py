"""IWAE bound with S importance samples: S as one vmapped axis vs a Python loop over S.

The loop is how the reference implementations compute it (one forward pass per sample, then
log-mean-exp). Run: python -m bench.iwae_samples [--batch 64] [--samples 1,16,128] [--repeats 5]
"""

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import TABLE_HEADER, machine_description, markdown_rows, time_interleaved, write_section
from oodgen.models.vae import VAEModel


def loop_over_samples(model, log_weights_one, params, images, rng, num_samples):
    """S separate single-sample passes (each with its own key), combined by log-mean-exp."""
    log_w = jnp.concatenate([log_weights_one(params, images, jax.random.fold_in(rng, s))
                             for s in range(num_samples)], axis=1)
    return jax.nn.logsumexp(log_w, axis=1) - math.log(num_samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", default="1,16,128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    model = VAEModel()  # the default Fashion-MNIST architecture
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (args.batch, 28, 28, 1)), jnp.uint8)
    params = model.init(jax.random.key(0), images)
    rng = jax.random.key(1)
    vmapped = jax.jit(model.log_prob, static_argnums=3)
    log_weights_one = jax.jit(functools.partial(model.log_weights, num_samples=1))

    rows = []
    for s in [int(v) for v in args.samples.split(",")]:
        timings = time_interleaved(
            {"loop over S (reference)": lambda: loop_over_samples(model, log_weights_one, params, images, rng, s),
             "S as a vmapped axis": lambda: vmapped(params, images, rng, s)},
            baseline="loop over S (reference)", items_per_call=args.batch, repeats=args.repeats)
        rows += markdown_rows(timings, f"B={args.batch}, S={s}")
        print("\n".join(rows[-2:]), flush=True)
    body = "\n".join([
        "### IWAE bound: S importance samples as a vmapped axis vs a loop over S",
        "",
        f"Machine: {machine_description()}. Model: `VAEModel()` (default Fashion-MNIST VAE).",
        f"Command: `python -m bench.iwae_samples --batch {args.batch} --samples {args.samples} "
        f"--repeats {args.repeats}`",
        "",
        *TABLE_HEADER, *rows])
    if not args.no_write:
        write_section("iwae_samples", body)


if __name__ == "__main__":
    main()
