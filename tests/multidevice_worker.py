"""Run in a subprocess (with XLA_FLAGS setting the CPU device count): every registered scorer on tiny models,
the order of `map_batches` outputs, and one training step; writes everything to an .npz.

Usage: python tests/multidevice_worker.py OUT.npz

Scorers run on 13 images of 8x8 in batches of 4 (rounded up to a multiple of the device count), so the last
batch is ragged and the batches differ between device counts; per-example keys depend only on the index.
Keys in the .npz: `score/<scorer>/<name>` for every scorer in `oodgen.scorers.SCORERS` (`covered` lists them),
`order`, `loss`, `moved`, `param/<path>`, `device_count`, and for one step of a 2-member ensemble (each
member its own batch, split over the devices; members vmapped or unrolled) `ensemble_loss/<loop>`,
`ensemble_param/<loop>/<path>`.
"""

import functools
import sys
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs.vae_fashion_mnist import get_config
from oodgen import sharding
from oodgen.models import DDPMModel, HVAEModel, LocalPixelCNNModel, PixelCNNPPModel, ScoreNetModel, VAEModel
from oodgen.scorers import (SCORERS, BackgroundRatioScorer, build_scorer, ComposedScorer, DDPMReconstructionScorer,
                            EnsembleScorer, GradientNormScorer, HierarchicalLLRScorer, InputComplexityScorer,
                            LikelihoodRegretScorer, LikelihoodScorer, LocalRatioScorer, MSMAScorer, TypicalityScorer)
from oodgen.scorers.hierarchical import KLPerLevelScorer
from oodgen.scorers.ratios import Reference
from oodgen.training.loop import TrainState, make_ensemble_train_step, make_optimizer, make_train_step

SHAPE = (8, 8, 1)
BATCH = 4
COMMON = dict(num_samples=2, batch_size=BATCH, seed=3)
# Densities fitted on features gathered from all devices; gmm (cross-validated EM) would only add fitting time.
DENSITIES = ("gaussian_log", "knn")

VAE = VAEModel(image_shape=SHAPE, latent_dim=3, channels=(4,))
VAE_8BIT = VAEModel(image_shape=SHAPE, latent_dim=3, channels=(4,), likelihood="discretized_logistic_mixture",
                    num_mixtures=2)  # input complexity needs a likelihood of the 8-bit pixels
HVAE = HVAEModel(image_shape=SHAPE, width=4, dense_width=8, latent_channels=(2,), latent_units=(3, 2))
PIXELCNN = PixelCNNPPModel(image_shape=SHAPE, num_filters=8, num_resnets=1, num_scales=2, num_mixtures=2)
LOCAL = LocalPixelCNNModel(image_shape=SHAPE, horizon=2, num_filters=8, num_blocks=1, num_mixtures=2)
SCORE_NET = ScoreNetModel(image_shape=SHAPE, num_filters=4, num_sigmas=4, sigma_max=0.5, sigma_min=0.05)
DDPM = DDPMModel(image_shape=SHAPE, num_filters=4, num_timesteps=20)


@functools.cache
def init(model, seed: int = 0):
    """Random parameters with the structure of `model.init`'s, N(0, 0.1²) from `seed`: no init to compile."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, *SHAPE), jnp.uint8))
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape), s.dtype), shapes)


def scores_of(scorer, state, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every score the scorer gives."""
    return scorer.score_all(state, images)


def run_scorers(mesh, images: np.ndarray, fit_images: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """{scorer name: {output name: f32[N] or f32[N, F]}} for every registered scorer."""
    fit = lambda scorer, params: scorer.fit(params, fit_images)  # noqa: E731
    out = {}

    scorer = LikelihoodScorer(VAE, mesh=mesh, **COMMON)
    out["log_likelihood"] = scores_of(scorer, fit(scorer, init(VAE)), images)

    scorer = HierarchicalLLRScorer(HVAE, mesh=mesh, **COMMON)
    state = fit(scorer, init(HVAE))
    out["hvae_llr"] = {**scores_of(scorer, state, images), "features": scorer.features(state, images)}
    scorer = KLPerLevelScorer(HVAE, mesh=mesh, **COMMON)
    out["kl_per_level"] = scores_of(scorer, fit(scorer, init(HVAE)), images)

    scorer = TypicalityScorer(VAE, mesh=mesh, num_bootstrap=50, **COMMON)
    state = fit(scorer, init(VAE))
    out["typicality"] = {**scores_of(scorer, state, images), "threshold": np.float32([state.h_hat, state.threshold])}

    scorer = GradientNormScorer(VAE, mesh=mesh, kernel="flops", densities=DENSITIES, **COMMON)
    state = fit(scorer, init(VAE))
    out["grad_norms"] = {**scores_of(scorer, state, images), "features": scorer.features(state.params, images)}
    # vmap(grad) over groups of 2 images (the groups must stay whole on one device)
    scorer = GradientNormScorer(VAE, mesh=mesh, method="vmap", group_size=2, densities=("knn",), **COMMON)
    out["grad_norms"].update(scores_of(scorer, fit(scorer, init(VAE)), images))

    scorer = LikelihoodRegretScorer(VAE, mesh=mesh, num_steps=3, learning_rate=1e-2, **COMMON)
    out["likelihood_regret"] = scores_of(scorer, fit(scorer, init(VAE)), images)

    scorer = InputComplexityScorer(VAE_8BIT, mesh=mesh, **COMMON)
    out["input_complexity"] = scores_of(scorer, fit(scorer, init(VAE_8BIT)), images)

    # Evaluation resolves the ratio scorers' reference models from workdirs; here they are built directly.
    scorer = BackgroundRatioScorer(VAE, mesh=mesh, reference=Reference(VAE, init(VAE, 1)), **COMMON)
    out["background_ratio"] = scores_of(scorer, fit(scorer, init(VAE)), images)

    scorer = LocalRatioScorer(PIXELCNN, mesh=mesh, reference=Reference(LOCAL, init(LOCAL)), **COMMON)
    out["local_ratio"] = scores_of(scorer, fit(scorer, init(PIXELCNN)), images)

    scorer = MSMAScorer(SCORE_NET, mesh=mesh, densities=DENSITIES, **COMMON)
    state = fit(scorer, init(SCORE_NET))
    out["msma"] = {**scores_of(scorer, state, images), "features": scorer.features(state.params, images)}

    scorer = DDPMReconstructionScorer(DDPM, mesh=mesh, num_sampling_steps=4, start_every=2, **COMMON)
    state = fit(scorer, init(DDPM))
    out["ddpm_reconstruction"] = {**scores_of(scorer, state, images), "errors": scorer.errors(state.params, images)}

    scorer = EnsembleScorer(VAE, mesh=mesh, **COMMON)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), init(VAE), init(VAE, 1))
    out["ensemble"] = scores_of(scorer, fit(scorer, stacked), images)

    eval_config = ml_collections.ConfigDict(dict(**COMMON, grad_norms=dict(kernel="flops", densities=DENSITIES)))
    scorer = ComposedScorer(VAE, mesh=mesh, features=("log_likelihood", "grad_norms"), density="knn",
                            build_part=lambda part: build_scorer(part, VAE, eval_config, mesh), **COMMON)
    state = fit(scorer, init(VAE))
    out["composed"] = {**scores_of(scorer, state, images), "features": scorer.features_of(state, images)}
    return out


def flat_params(params) -> dict[str, np.ndarray]:
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}


def ensemble_step(mesh, optimizer, train_images: np.ndarray, member_loop: str) -> tuple[np.ndarray, dict]:
    """One train step of 2 stacked members (vmapped or unrolled), member m on its own 8 images: (loss, params)."""
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), init(VAE), init(VAE, 1))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.vmap(optimizer.init)(params))
    state = sharding.replicate(state, mesh)
    batch = sharding.shard_batch(train_images, np.arange(16).reshape(2, 8)[:, ::-1], mesh)   # [M=2, B=8, ...]
    state, metrics = make_ensemble_train_step(VAE, optimizer, mesh, member_loop=member_loop)(
        state, batch, jax.random.split(jax.random.key(6), 2))
    return np.asarray(metrics["loss"]), flat_params(state.params)


def main(out_path: str) -> None:
    warnings.simplefilter("ignore")  # dropped constant features etc.: the same on every device count
    mesh = sharding.data_mesh()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (13, *SHAPE)).astype(np.uint8)
    fit_images = rng.integers(0, 256, (24, *SHAPE)).astype(np.uint8)

    ids = np.arange(37, dtype=np.uint8)[:, None, None, None] * np.ones((1, *SHAPE), np.uint8)
    first_pixel = jax.jit(lambda params, x, keys: x[:, 0, 0, 0].astype(jnp.float32))
    order = sharding.map_batches(first_pixel, ids, rng=jax.random.key(0), batch_size=16, mesh=mesh)

    scores = run_scorers(mesh, images, fit_images)
    flat_scores = {f"score/{scorer}/{name}": np.asarray(v) for scorer, per in scores.items() for name, v in per.items()}

    optimizer = make_optimizer(get_config("tiny").train)
    train_images = rng.integers(0, 256, (16, *SHAPE)).astype(np.uint8)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=init(VAE), opt_state=optimizer.init(init(VAE)))
    initial = jax.device_get(state.params)
    state = sharding.replicate(state, mesh)
    batch = sharding.shard_batch(train_images, np.arange(16), mesh)
    assert len(batch.sharding.device_set) == jax.device_count()
    state, metrics = make_train_step(VAE, optimizer, mesh)(state, batch, jax.random.key(5))
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(initial), jax.tree.leaves(jax.device_get(state.params))))
    flat = flat_params(state.params)
    ensemble = {}
    for loop in ("vmap", "unroll"):
        loss, params = ensemble_step(mesh, optimizer, train_images, loop)
        ensemble.update({f"ensemble_loss/{loop}": loss, **{f"ensemble_param/{loop}/{k}": v for k, v in params.items()}})
    np.savez(out_path, device_count=jax.device_count(), order=order, covered=np.array(sorted(scores)),
             registered=np.array(sorted(SCORERS)), loss=np.asarray(metrics["loss"]), moved=moved,
             **ensemble,
             **flat_scores, **{f"param/{k}": v for k, v in flat.items()})


if __name__ == "__main__":
    main(sys.argv[1])
