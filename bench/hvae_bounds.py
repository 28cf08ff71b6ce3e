"""HVAE L^{>k}: every k and every importance sample in one compiled call vs the reference's loops.

The reference runs one program per k and, inside it, one forward pass per importance sample. Here:
  - "loop over k and S (reference)": a compiled single-sample, single-k pass called K·S times;
  - "loop over k, S vmapped": one call per k with S as a vmapped axis;
  - "all k, all S in one call": `HVAEModel.bounds`.
Run: python -m bench.hvae_bounds [--batch 64] [--samples 1,8,32] [--repeats 5] [--json PATH]
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import bench_parser, markdown_rows, publish, time_interleaved
from configs.hvae_fashion_mnist import get_config
from oodgen.models import build_model


def main():
    args = bench_parser(__doc__, batch=64, samples="1,8,32").parse_args()

    config = get_config()
    model = build_model(config.model, tuple(config.data.image_shape))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (args.batch, 28, 28, 1)), jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(0), images[:2])
    rng = jax.random.key(1)
    levels = model.num_levels

    single = jax.jit(lambda p, x, key, k: model.bound(p, x, key, k, 1))          # one sample, one k
    per_k = jax.jit(model.bound, static_argnums=4)                                 # S vmapped, one k
    together = jax.jit(model.bounds, static_argnums=3)                             # all k, all S

    def loop_k_and_s(s):
        out = []
        for k in range(levels):
            log_w = jnp.stack([single(params, images, jax.random.fold_in(rng, i), k) for i in range(s)])
            out.append(jax.nn.logsumexp(log_w, axis=0) - math.log(s))
        return jnp.stack(out)

    rows = []
    for s in [int(v) for v in args.samples.split(",")]:
        timings = time_interleaved(
            {"loop over k and S (reference)": lambda: loop_k_and_s(s),
             "loop over k, S vmapped": lambda: jnp.stack([per_k(params, images, rng, k, s) for k in range(levels)]),
             "all k, all S in one call": lambda: together(params, images, rng, s)},
            baseline="loop over k and S (reference)", items_per_call=args.batch, repeats=args.repeats,
            roles={"all k, all S in one call": "oodgen"})
        rows += markdown_rows(timings, f"B={args.batch}, S={s}, K={levels}")
        print("\n".join(rows[-3:]), flush=True)
    publish("hvae_bounds", "HVAE: L^{>k} for every k and S importance samples in one call vs loops",
            f"Model: `configs/hvae_fashion_mnist.py` (3 levels, width {config.model.width}); K = {levels} bounds "
            "(k = 0, 1, 2) per image; images/s counts images, each with all K bounds.",
            f"python -m bench.hvae_bounds --batch {args.batch} --samples {args.samples} --repeats {args.repeats}",
            rows, args.no_write, args.json)


if __name__ == "__main__":
    main()
