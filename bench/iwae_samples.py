"""IWAE bound with S importance samples: S as one vmapped axis vs a Python loop over S.

The loop is how the reference implementations compute it (one forward pass per sample, then
log-mean-exp). Run: python -m bench.iwae_samples [--batch 64] [--samples 1,16,128] [--repeats 5]
[--json PATH]
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import bench_parser, markdown_rows, publish, time_interleaved
from oodgen.models.vae import VAEModel


def loop_over_samples(model, log_weights_one, params, images, rng, num_samples):
    """S separate single-sample passes (each with its own key), combined by log-mean-exp."""
    log_w = jnp.concatenate([log_weights_one(params, images, jax.random.fold_in(rng, s))
                             for s in range(num_samples)], axis=1)
    return jax.nn.logsumexp(log_w, axis=1) - math.log(num_samples)


def main():
    args = bench_parser(__doc__, batch=64, samples="1,16,128").parse_args()

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
            baseline="loop over S (reference)", items_per_call=args.batch, repeats=args.repeats,
            roles={"S as a vmapped axis": "oodgen"})
        rows += markdown_rows(timings, f"B={args.batch}, S={s}")
        print("\n".join(rows[-2:]), flush=True)
    publish("iwae_samples", "IWAE bound: S importance samples as a vmapped axis vs a loop over S",
            "Model: `VAEModel()` (default Fashion-MNIST VAE).",
            f"python -m bench.iwae_samples --batch {args.batch} --samples {args.samples} --repeats {args.repeats}",
            rows, args.no_write, args.json)


if __name__ == "__main__":
    main()
