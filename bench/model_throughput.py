"""Training and scoring throughput of every model at its default configuration, the default VAE as baseline.

  - "train step": value_and_grad of the mean training loss and an Adam update, jitted (batch `--batch`);
  - "log_prob": the model's log-likelihood (bound, one sample) of a batch of `--score-batch` images.
Run: python -m bench.model_throughput [--batch 64] [--score-batch 500] [--models vae,hvae,pixelcnn,...]
[--json PATH]. Roles: the first model is the "baseline" (speed-ups are against it), the others "other".
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.runner import add_json_flag, markdown_rows, publish, time_interleaved
from configs import glow_fashion_mnist, hvae_fashion_mnist, pixelcnn_fashion_mnist, vae_fashion_mnist
from oodgen.models import build_model
from oodgen.sharding import example_keys

CONFIGS = {
    "vae": lambda: vae_fashion_mnist.get_config(),
    "hvae": lambda: hvae_fashion_mnist.get_config(),
    "pixelcnn": lambda: pixelcnn_fashion_mnist.get_config(),
    "local_pixelcnn": lambda: pixelcnn_fashion_mnist.get_config("local"),
    "glow": lambda: glow_fashion_mnist.get_config(),
}


def model_functions(name: str, batch: int, score_batch: int):
    """(train step thunk, log_prob thunk, number of parameters) for the default config of `name`."""
    config = CONFIGS[name]()
    model = build_model(config.model, tuple(config.data.image_shape))
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (max(batch, score_batch), 28, 28, 1)), jnp.uint8)
    params = jax.jit(model.init)(jax.random.key(0), images[:batch])
    optimizer = optax.adam(1e-4)
    opt_state = optimizer.init(params)
    train_keys = example_keys(jax.random.key(1), jnp.arange(batch))
    score_keys = example_keys(jax.random.key(2), jnp.arange(score_batch))

    @jax.jit
    def step(p, state, x, k):
        loss, grads = jax.value_and_grad(lambda q: jnp.mean(model.loss(q, x, k)))(p)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    log_prob = jax.jit(lambda p, x, k: model.log_prob(p, x, k, 1))
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    return (lambda: step(params, opt_state, images[:batch], train_keys),
            lambda: log_prob(params, images[:score_batch], score_keys), num_params)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--score-batch", type=int, default=500)
    parser.add_argument("--models", default="vae,hvae,pixelcnn,local_pixelcnn,glow")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = add_json_flag(parser).parse_args()
    names = args.models.split(",")
    functions = {name: model_functions(name, args.batch, args.score_batch) for name in names}
    labels = {name: f"{name} ({functions[name][2] / 1e3:,.0f}k params)" for name in names}
    rows = []
    for what, index, items in (("train step", 0, args.batch), ("log_prob", 1, args.score_batch)):
        timings = time_interleaved({labels[n]: functions[n][index] for n in names}, baseline=labels[names[0]],
                                   items_per_call=items, repeats=args.repeats)
        rows += markdown_rows(timings, f"{what}, B={items}")
        print("\n".join(rows[-len(names):]), flush=True)
    publish("model_throughput", "Training and scoring throughput of each model (default configs)",
            f"Default configs of `configs/` (Fashion-MNIST 28×28×1); speed-up is against `{names[0]}`. "
            "Train step: gradient of the mean training loss + Adam, jitted; log_prob: one sample / "
            "dequantisation draw, exact for PixelCNN++ and the local PixelCNN.",
            f"python -m bench.model_throughput --batch {args.batch} --score-batch {args.score_batch} "
            f"--models {args.models} --repeats {args.repeats}", rows, args.no_write, args.json)


if __name__ == "__main__":
    main()
