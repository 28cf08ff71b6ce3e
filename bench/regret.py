"""Likelihood regret: every example of a batch fitted at once (vmap over examples of a scan over
Adam steps) vs one image at a time.

The baseline is the reference's way, one image after another, made as fast as it gets: the same
jitted computation (bound, `--steps` encoder steps, bound again) on a batch of one, called in a
Python loop over the batch. Run: python -m bench.regret [--batches 16,64] [--steps 20] [--samples 16]
[--repeats 5] [--json PATH] (--batch B times that one batch size).
"""

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import bench_parser, markdown_rows, publish, time_interleaved
from oodgen.models.vae import VAEModel
from oodgen.scorers.regret import regret_per_example
from oodgen.sharding import example_keys

LEARNING_RATE, WEIGHT_DECAY = 2e-4, 5e-5


def one_at_a_time(model, steps: int, samples: int, params, images, keys) -> jax.Array:
    """The regret of each image from its own call on a batch of one: f32[B], nats."""
    return jnp.concatenate([
        regret_per_example(model, steps, LEARNING_RATE, WEIGHT_DECAY, samples, params, images[i:i + 1], keys[i:i + 1])
        for i in range(images.shape[0])])


def main():
    parser = bench_parser(__doc__, batch=0, samples="16")
    parser.add_argument("--batches", default="16,64", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps on each image's encoder")
    args = parser.parse_args()
    batches = [args.batch] if args.batch else [int(v) for v in args.batches.split(",")]

    model = VAEModel()  # the default Fashion-MNIST architecture
    params = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 28, 28, 1), np.uint8))
    rows = []
    for b in batches:
        images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (b, 28, 28, 1)), jnp.uint8)
        keys = example_keys(jax.random.key(1), np.arange(b))
        for s in [int(v) for v in args.samples.split(",")]:
            timings = time_interleaved(
                {"one image at a time (reference)": lambda: one_at_a_time(model, args.steps, s, params, images, keys),
                 "vmap over examples": lambda: regret_per_example(model, args.steps, LEARNING_RATE, WEIGHT_DECAY, s,
                                                                  params, images, keys)},
                baseline="one image at a time (reference)", items_per_call=b, repeats=args.repeats,
                roles={"vmap over examples": "oodgen"})
            rows += markdown_rows(timings, f"B={b}, steps={args.steps}, S={s}")
            print("\n".join(rows[-2:]), flush=True)
    publish("regret", "Likelihood regret: per-example encoder fitting vmapped over the batch vs one image at a time",
            f"Model: `VAEModel()` (default Fashion-MNIST VAE); Adam lr {LEARNING_RATE}, L2 decay {WEIGHT_DECAY}; "
            "S importance samples for each of the two bounds.",
            f"python -m bench.regret --batches {','.join(map(str, batches))} --steps {args.steps} "
            f"--samples {args.samples} --repeats {args.repeats}", rows, args.no_write, args.json)


if __name__ == "__main__":
    main()
