"""Training objectives: the mean negative bound, and the ELBO with KL warm-up and free nats.

An objective is `(params, images uint8 [B, ...], keys key[B], step) -> (loss, metrics)`, where
`metrics["neg_elbo"]` is the unmodified negative ELBO (nats, batch mean) that progress reports show
(`metrics["denoising_loss"]` for a model whose loss is a denoising surrogate).
A background model (Ren et al. 2019) wraps an objective with input perturbation and an L2 penalty.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from oodgen.models import capabilities as caps
from oodgen.data.perturbation import perturb

Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def mean_negative_bound(model, params, images: jax.Array, keys: jax.Array,
                        step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean_b model.loss: the plain maximum-likelihood objective of any likelihood model, reported as
    "neg_elbo" (nats); for a denoising surrogate the mean denoising loss, reported as "denoising_loss"."""
    del step
    loss = jnp.mean(model.loss(params, images, keys))
    return loss, {"neg_elbo" if caps.likelihood_kind(model.capabilities) else "denoising_loss": loss}


@dataclasses.dataclass(frozen=True)
class KLSchedule:
    """β (KL weight) and λ (free nats per level) as functions of the step.

    β rises linearly from 0 to 1 over `warmup_steps` (0: always 1). λ is `free_nats` for
    `free_nats_steps`, then falls linearly to 0 over `free_nats_anneal_steps`.
    """
    warmup_steps: int = 0
    free_nats: float = 0.0
    free_nats_steps: int = 0
    free_nats_anneal_steps: int = 0

    def beta(self, step: jax.Array) -> jax.Array:
        """KL weight β at `step` (int scalar), f32 scalar in [0, 1]."""
        if self.warmup_steps <= 0:
            return jnp.float32(1.0)
        return jnp.minimum(1.0, (step + 1) / self.warmup_steps).astype(jnp.float32)

    def free_nats_at(self, step: jax.Array) -> jax.Array:
        """Free nats λ per level at `step`, f32 scalar (nats)."""
        past = jnp.maximum(step - self.free_nats_steps, 0)
        fraction = 1.0 if self.free_nats_anneal_steps <= 0 else past / self.free_nats_anneal_steps
        remaining = jnp.where(step < self.free_nats_steps, 1.0, jnp.maximum(0.0, 1.0 - fraction))
        return (self.free_nats * remaining).astype(jnp.float32)


def annealed_elbo(model, schedule: KLSchedule, params, images: jax.Array, keys: jax.Array,
                  step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """−E[log p(x|z)] + β Σ_i max(KL_i, λ), with KL_i the batch-mean KL of level i (analytic)."""
    log_px, kl = model.elbo_terms(params, images, keys)             # [B], [L, B]
    kl_per_level = jnp.mean(kl, axis=1)                              # [L]
    beta, free = schedule.beta(step), schedule.free_nats_at(step)
    loss = -jnp.mean(log_px) + beta * jnp.sum(jnp.maximum(kl_per_level, free))
    metrics = {"neg_elbo": jnp.mean(kl.sum(axis=0) - log_px), "beta": beta, "free_nats": free,
               **{f"kl_{i + 1}": v for i, v in enumerate(kl_per_level)}}
    return loss, metrics


def l2_penalty(params) -> jax.Array:
    """Σ ‖W‖² over the weight matrices and kernels (leaves with ≥ 2 axes; biases and scales excluded)."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params) if leaf.ndim >= 2)


def background_objective(objective: Objective, perturbation_rate: float, l2_weight: float, params,
                         images: jax.Array, keys: jax.Array, step: jax.Array) -> tuple[jax.Array, dict]:
    """`objective` on images perturbed at rate μ, plus l2_weight · Σ‖W‖² (the background model's loss).

    Perturbation keys are derived from the per-example keys, so they never repeat the objective's own."""
    perturbed = perturb(jax.vmap(lambda k: jax.random.fold_in(k, 7919))(keys), images, perturbation_rate)
    loss, metrics = objective(params, perturbed, keys, step)
    penalty = l2_weight * l2_penalty(params)
    return loss + penalty, {**metrics, "l2_penalty": penalty}


def make_objective(model, train_config: ml_collections.ConfigDict) -> Objective:
    """The annealed ELBO for models with per-level KL terms (`elbo_terms`), else the mean bound; wrapped
    as a background model's objective when `train_config.perturbation_rate` or `l2_weight` is non-zero."""
    objective = _base_objective(model, train_config)
    rate, l2_weight = train_config.get("perturbation_rate", 0.0), train_config.get("l2_weight", 0.0)
    if rate or l2_weight:
        return functools.partial(background_objective, objective, rate, l2_weight)
    return objective


def _base_objective(model, train_config: ml_collections.ConfigDict) -> Objective:
    if caps.LATENT_LEVELS not in model.capabilities:
        return functools.partial(mean_negative_bound, model)
    schedule = KLSchedule(warmup_steps=train_config.get("kl_warmup_steps", 0),
                          free_nats=train_config.get("free_nats", 0.0),
                          free_nats_steps=train_config.get("free_nats_steps", 0),
                          free_nats_anneal_steps=train_config.get("free_nats_anneal_steps", 0))
    return functools.partial(annealed_elbo, model, schedule)
