"""Layer-wise per-example gradient norms: fast path vs vmap(grad) vs a per-example loop vs the floor.

  - "per-example loop (reference)": one jitted backward pass per image, in a Python loop;
  - "vmap(grad), chunked": `oodgen.features.gradients.per_example_grad_sq_norms`;
  - "fast path": `oodgen.features.gradients_fast.fast_grad_sq_norms`;
  - "floor: one batched grad": the gradient of the mean loss (no per-example information).
Memory is XLA's temporary buffer size of each compiled function (compiled.memory_analysis()).
Run: python -m bench.grad_norms [--batch 64,256] [--models vae,hvae] [--repeats 3] [--json PATH]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench.runner import (RECORDED, add_json_flag, backend_section, machine_description, record, time_interleaved,
                          write_json, write_section)
from configs import hvae_fashion_mnist, vae_fashion_mnist
from oodgen.features.gradients import per_example_grad_sq_norms, tensor_names
from oodgen.features.gradients_fast import fast_grad_sq_norms, fast_path_coverage
from oodgen.models import build_model
from oodgen.sharding import example_keys

CONFIGS = {"vae": vae_fashion_mnist, "hvae": hvae_fashion_mnist}


def _temp_mib(fn, *args) -> float:
    analysis = fn.lower(*args).compile().memory_analysis()
    return getattr(analysis, "temp_size_in_bytes", float("nan")) / 2**20


def bench_model(name: str, batch: int, repeats: int, chunk_size: int) -> list[str]:
    config = CONFIGS[name].get_config()
    model = build_model(config.model, tuple(config.data.image_shape))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)), jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(0), images[:2])
    keys = example_keys(jax.random.key(1), jnp.arange(batch))

    fast = jax.jit(lambda p, x, k: fast_grad_sq_norms(model.loss, p, x, k, chunk_size))
    vmapped = jax.jit(lambda p, x, k: per_example_grad_sq_norms(model.loss, p, x, k, chunk_size))
    floor = jax.jit(jax.grad(lambda p, x, k: jnp.mean(model.loss(p, x, k))))
    one = jax.jit(lambda p, x, k: per_example_grad_sq_norms(model.loss, p, x, k, 1))

    def loop():
        return jnp.concatenate([one(params, images[i:i + 1], keys[i:i + 1]) for i in range(batch)])

    candidates = {
        "per-example loop (reference)": loop,
        "vmap(grad), chunked": lambda: vmapped(params, images, keys),
        "fast path": lambda: fast(params, images, keys),
        "floor: one batched grad": lambda: floor(params, images, keys),
    }
    memory = {"per-example loop (reference)": _temp_mib(one, params, images[:1], keys[:1]),
              "vmap(grad), chunked": _temp_mib(vmapped, params, images, keys),
              "fast path": _temp_mib(fast, params, images, keys),
              "floor: one batched grad": _temp_mib(floor, params, images, keys)}
    with jax.default_matmul_precision("highest"):  # agreement in full f32 (GPUs default to TF32)
        np.testing.assert_allclose(fast(params, images, keys), vmapped(params, images, keys), rtol=1e-3, atol=1e-9)
    timings = time_interleaved(candidates, baseline="per-example loop (reference)", items_per_call=batch,
                               repeats=repeats, roles={"fast path": "oodgen", "floor: one batched grad": "floor"},
                               temp_mib=memory)
    floor_time = next(t.median_s for t in timings if t.name.startswith("floor"))
    coverage = fast_path_coverage(model.loss, params, images, keys)
    fast_share = sum(v == "fast" for v in coverage.values())
    rows = []
    for setting, t in record(timings, f"{name}, B={batch}"):
        rows.append(f"| {setting} | {t.name} | {t.median_s * 1e3:.1f} ({t.p25_s * 1e3:.1f}–{t.p75_s * 1e3:.1f}) "
                    f"| {t.items_per_s:,.0f} | {t.speedup:.2f}× | {floor_time / t.median_s:.2f}× | "
                    f"{t.temp_mib:.1f} |")
    rows.append(f"| {name}, B={batch} | (fast path covers {fast_share} of {len(tensor_names(params))} tensors) "
                "| | | | | |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", default="64,256")
    parser.add_argument("--models", default="vae,hvae")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = add_json_flag(parser).parse_args()
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            rows += bench_model(name, batch, args.repeats, args.chunk_size)
            print("\n".join(rows[-5:]), flush=True)
    body = "\n".join([
        "### Layer-wise per-example gradient norms (every weight and bias tensor)",
        "",
        f"Machine: {machine_description()}. Models: the default `configs/vae_fashion_mnist.py` and "
        "`configs/hvae_fashion_mnist.py`; loss = the per-example negative ELBO. Speed-up is against the "
        "per-example loop; \"vs floor\" is the floor's time over this one's (1.00× = as fast as one ordinary "
        "batched gradient). Memory: XLA temporary buffers of the compiled function (the loop: one image).",
        f"Command: `python -m bench.grad_norms --batch {args.batch} --models {args.models} "
        f"--repeats {args.repeats} --chunk-size {args.chunk_size}`",
        "",
        "| setting | implementation | ms per call, median (25–75%) | images/s | speed-up vs loop | vs floor "
        "| temp memory (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows])
    write_json(args.json)
    RECORDED.clear()
    if not args.no_write:
        write_section(backend_section("grad_norms"), body)


if __name__ == "__main__":
    main()
