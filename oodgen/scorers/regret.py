"""Likelihood regret (Xiao et al. 2020): how much a VAE's bound on one image improves when its encoder
is fitted to that image alone. Higher = more OOD.

For each example: NLL_before = −(importance-weighted bound with the trained parameters); a copy of the
encoder (the parameter group `params[model.encoder_module]`: the inference network, as the model's module
structure defines it; every decoder, top-down, prior and pixel parameter stays frozen) takes
`num_steps` Adam steps on that example's negative ELBO (`model.loss` on a batch of one, a fresh key
per step); NLL_after = −(the bound with the fitted encoder). Regret = NLL_before − NLL_after.

The reference fits one image at a time with a deep copy of the encoder. Here every example of a
batch is fitted at once: a `lax.scan` over steps inside a `vmap` over examples, compiled once. Both
bounds of an example use the same key (common random numbers: the same binarisation and posterior
noise), so the regret is not swamped by the bounds' sampling noise, and it is exactly 0 after 0 steps.

The optimiser is the reference's `torch.optim.Adam(lr, weight_decay)`: an L2 term added to the gradient
before the Adam moments (coupled), not AdamW's decoupled decay.
"""

import dataclasses
import functools
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from oodgen import sharding
from oodgen.models import likelihoods
from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer
from oodgen.validation import check_images

Params = dict[str, Any]


def encoder_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """Adam (b1 0.9, b2 0.999, eps 1e-8) with L2 weight decay added to the gradient, as torch's Adam."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))


def split_encoder(model, params: chex.ArrayTree) -> tuple[Params, Params]:
    """Top-level parameter groups -> ({encoder_module: the encoder's parameters}, every other group).

    The model declares the ENCODER capability and names its inference network's top-level module."""
    caps.check_pair("likelihood_regret", ((caps.ENCODER,),), model)
    name = model.encoder_module
    if name not in params:
        raise OodgenError(f"the parameters have no {name!r} group (top-level groups: {sorted(params)}); "
                          f"they are not parameters of this {model.kind}: restore them with its config")
    return {name: params[name]}, {k: group for k, group in params.items() if k != name}


def _fit_encoder(model, num_steps: int, learning_rate: float, weight_decay: float, encoder: Params,
                 frozen: Params, image: jax.Array, key: jax.Array) -> Params:
    """`num_steps` optimiser steps on one image's negative ELBO, step t keyed by split(fold_in(key, 1))[t]."""
    optimizer = encoder_optimizer(learning_rate, weight_decay)

    def loss(enc: Params, step_key: jax.Array) -> jax.Array:
        return model.loss({**frozen, **enc}, image[None], step_key[None])[0]

    def step(carry, step_key):
        enc, opt_state = carry
        grads = jax.grad(loss)(enc, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, enc)
        return (optax.apply_updates(enc, updates), opt_state), None

    step_keys = jax.random.split(jax.random.fold_in(key, 1), num_steps)
    (encoder, _), _ = jax.lax.scan(step, (encoder, optimizer.init(encoder)), step_keys)
    return encoder


def optimise_encoder(model, num_steps: int, learning_rate: float, weight_decay: float, params: chex.ArrayTree,
                     image: jax.Array, key: jax.Array) -> Params:
    """All parameters after fitting the encoder groups to one uint8 image [H, W, C] (key: one key).

    The other groups are returned as they came in. Pure; jit or vmap it with the first four static.
    """
    encoder, frozen = split_encoder(model, params)
    return {**frozen, **_fit_encoder(model, num_steps, learning_rate, weight_decay, encoder, frozen, image, key)}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def nll_before_after(model, num_steps: int, learning_rate: float, weight_decay: float, num_samples: int,
                     params: chex.ArrayTree, images: jax.Array, keys: jax.Array) -> jax.Array:
    """Per example, −(S-sample bound) with the trained and with the fitted encoder: uint8 [B, H, W, C],
    key[B] -> f32[B, 2] (columns before, after), nats. Both bounds of example i use keys[i]."""
    encoder, frozen = split_encoder(model, params)
    fit = functools.partial(_fit_encoder, model, num_steps, learning_rate, weight_decay)
    fitted = jax.vmap(fit, in_axes=(None, None, 0, 0))(encoder, frozen, images, keys)
    trained = jax.tree.map(lambda a: jnp.broadcast_to(a, (images.shape[0], *a.shape)), encoder)

    def nll(enc: Params, image: jax.Array, key: jax.Array) -> jax.Array:
        return -model.log_prob({**frozen, **enc}, image[None], key[None], num_samples)[0]

    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), trained, fitted)
    return jax.lax.map(lambda enc: jax.vmap(nll)(enc, images, keys), both).T  # one body for both: 0 steps give 0


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def regret_per_example(model, num_steps: int, learning_rate: float, weight_decay: float, num_samples: int,
                       params: chex.ArrayTree, images: jax.Array, keys: jax.Array) -> jax.Array:
    """Likelihood regret NLL_before − NLL_after per example: uint8 [B, H, W, C], key[B] -> f32[B], nats."""
    both = nll_before_after(model, num_steps, learning_rate, weight_decay, num_samples, params, images, keys)
    return both[:, 0] - both[:, 1]


@dataclasses.dataclass(frozen=True)
class LikelihoodRegretScorer(ModelScorer):
    """Likelihood regret in bits/dim; `num_samples` importance samples for each of the two bounds."""
    num_steps: int = 100
    learning_rate: float = 2e-4
    weight_decay: float = 5e-5
    name: str = "likelihood_regret"
    units: str = "regret (bits/dim)"
    requires: ClassVar = ((caps.ENCODER,), caps.LIKELIHOOD)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, (int, np.integer)) or self.num_steps < 0:
            raise OodgenError(f"num_steps={self.num_steps!r} must be a whole number >= 0 (the reference uses 100)")

    def nlls(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """−bound before and after fitting the encoder, in nats: f32[N, 2]; example i keyed by fold_in(seed, i)."""
        images = check_images(images, self.model.image_shape)
        fn = functools.partial(nll_before_after, self.model, int(self.num_steps), float(self.learning_rate),
                               float(self.weight_decay), self.num_samples)
        return sharding.map_batches(fn, images, rng=jax.random.key(self.seed), batch_size=self.batch_size,
                                    mesh=self.mesh, desc=self.name, params=state)

    def score_all(self, state: chex.ArrayTree, images: np.ndarray) -> dict[str, np.ndarray]:
        """In bits/dim: {"likelihood_regret": before − after, "regret_nll_before", "regret_nll_after"}."""
        both = np.asarray(likelihoods.bits_per_dim(self.nlls(state, images), self.model.num_dims))
        return {"likelihood_regret": both[:, 0] - both[:, 1], "regret_nll_before": both[:, 0],
                "regret_nll_after": both[:, 1]}

    def score(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """Likelihood regret in bits/dim, f32[N]."""
        return self.score_all(state, images)["likelihood_regret"]
