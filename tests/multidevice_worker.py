"""Run in a subprocess (with XLA_FLAGS setting the CPU device count): scores and one training step.

Usage: python tests/multidevice_worker.py OUT.npz
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from oodgen import sharding
from oodgen.models.vae import VAEModel
from oodgen.scorers.likelihood import LikelihoodScorer
from oodgen.training import create_train_state, make_optimizer, make_train_step
from configs.vae_fashion_mnist import get_config


def main(out_path: str) -> None:
    mesh = sharding.data_mesh()
    model = VAEModel(latent_dim=4, channels=(8, 8))
    images = np.random.default_rng(0).integers(0, 256, (37, 28, 28, 1)).astype(np.uint8)
    ids = np.arange(37, dtype=np.uint8)[:, None, None, None] * np.ones((1, 28, 28, 1), np.uint8)

    first_pixel = jax.jit(lambda params, x, keys: x[:, 0, 0, 0].astype(jnp.float32))
    order = sharding.map_batches(first_pixel, ids, rng=jax.random.key(0), batch_size=16, mesh=mesh)

    optimizer = make_optimizer(get_config("tiny").train)
    state = create_train_state(model, optimizer, jax.random.key(0), images[:16])
    scorer = LikelihoodScorer(model, num_samples=4, batch_size=16, seed=3, mesh=mesh)
    scores = scorer.score(state.params, images)

    initial = jax.device_get(state.params)
    state = jax.device_put(state, sharding.replicated(mesh))
    step = make_train_step(model, optimizer, mesh)
    batch = jax.device_put(images[:16], sharding.data_sharding(mesh))
    assert len(batch.sharding.device_set) == jax.device_count()
    state, metrics = step(state, batch, jax.random.key(5))
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(initial), jax.tree.leaves(jax.device_get(state.params))))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(state.params)}
    np.savez(out_path, device_count=jax.device_count(), order=order, scores=scores,
             loss=np.asarray(metrics["loss"]), moved=moved, **{f"param/{k}": v for k, v in flat.items()})


if __name__ == "__main__":
    main(sys.argv[1])
