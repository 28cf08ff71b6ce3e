"""Scores over an ensemble or posterior samples (Choi et al. 2018; Daxberger & Hernández-Lobato 2019;
Glazunov & Zarras 2022), from log p_m(x), m = 1..M, of M parameter sets stacked [M, ...].

With l_m = log p_m(x) in nats (the model's importance-weighted bound, `num_samples` samples, the same
per-example keys for every member), moments over members with divisor M (population moments):

  ensemble_waic         −(mean_m l_m − var_m l_m)      WAIC (Choi et al.), low = OOD there; sign flipped
  ensemble_ll_std       std_m l_m                      members disagree on OOD data
  ensemble_expected_ll  −mean_m l_m                    the expected log-likelihood, sign flipped
  ensemble_disagreement −1 / Σ_m w_m²,  w_m = p_m(x) / Σ_j p_j(x)
  ensemble_entropy      Σ_m w_m log w_m                minus the entropy of the likelihoods, in nats

The disagreement score D(x) = 1 / Σ_m w_m² is the effective sample size of the normalised likelihood
weights (Daxberger & Hernández-Lobato 2019, used by Glazunov & Zarras 2022): M when all members give x
the same likelihood, 1 when one member dominates; low D = OOD there, so the score is −D, in [−M, −1].
It is computed in log space: log w_m = l_m − logsumexp_j l_j, D = exp(−logsumexp_m 2 log w_m).
The entropy of the likelihoods H(x) = −Σ_m w_m log w_m (METHODS.md, "entropy of the likelihoods") is
log M when the members agree and 0 when one dominates: its score is −H, in [−log M, 0].

All members are scored in one vmapped pass. The parameters come from ensemble members
(config.eval.ensemble.source = "members") or from `num_swag_samples` SWAG draws per member ("swag").
"""

import dataclasses
import functools
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from oodgen.training import ensemble, swag
from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer

SCORE_NAMES = ("ensemble_waic", "ensemble_ll_std", "ensemble_expected_ll", "ensemble_disagreement",
               "ensemble_entropy")


def ensemble_scores(log_p: jax.Array) -> jax.Array:
    """log p_m(x) f32[B, M] (nats) -> f32[B, 5]: the scores of SCORE_NAMES, in that order."""
    mean = jnp.mean(log_p, axis=-1)
    var = jnp.mean(jnp.square(log_p - mean[..., None]), axis=-1)
    log_w = log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True)
    effective_size = jnp.exp(-jax.nn.logsumexp(2.0 * log_w, axis=-1))
    negative_entropy = jnp.sum(jnp.exp(log_w) * log_w, axis=-1)
    return jnp.stack([-(mean - var), jnp.sqrt(var), -mean, -effective_size, negative_entropy], axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def member_log_probs(model, num_samples: int, member_loop: str, params: chex.ArrayTree, images: jax.Array,
                     keys: jax.Array) -> jax.Array:
    """log p_m(x) of every member of stacked `params` [M, ...], same keys for all: f32[B, M], nats.
    The members are vmapped or unrolled (`member_loop`, see oodgen.training.ensemble.resolve_member_loop)."""
    return ensemble.map_members(lambda p: model.log_prob(p, images, keys, num_samples), member_loop, params).T


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _scores(member_loop: str, model, num_samples: int, params: chex.ArrayTree, images: jax.Array,
            keys: jax.Array) -> jax.Array:
    return ensemble_scores(member_log_probs(model, num_samples, member_loop, params, images, keys))


@dataclasses.dataclass(frozen=True)
class EnsembleScorer(ModelScorer):
    """WAIC, LL standard deviation, expected LL, disagreement and likelihood entropy over stacked
    parameters [M, ...] (M ≥ 2).

    `fit(stacked params, in_dist)`; in `evaluate.py` the stack comes from `stacked_params(train state)`.
    `score` is ensemble_waic; `score_all` gives all five. Each call scores batch_size // M images (at least
    one), so memory stays about that of one model's batch.
    """
    source: str = "members"          # "members" (an ensemble) or "swag" (samples of each member's SWAG)
    num_swag_samples: int = 8        # SWAG draws per member
    member_loop: str = "auto"        # "vmap" or "unroll" the members ("auto": unroll on CPU); same scores
    name: str = "ensemble"
    units: str = "nats"
    requires: ClassVar = (caps.LIKELIHOOD,)
    needs_stacked_params: ClassVar[bool] = True
    score_units: ClassVar[dict[str, str]] = {
        "ensemble_waic": "−WAIC (nats)", "ensemble_ll_std": "std of log-likelihood (nats)",
        "ensemble_expected_ll": "−mean log-likelihood (nats)",
        "ensemble_disagreement": "−effective number of members",
        "ensemble_entropy": "−entropy of the normalised likelihoods (nats)"}

    def __post_init__(self):
        super().__post_init__()
        if self.source not in ensemble.SOURCES:
            raise OodgenError(f"config.eval.ensemble.source={self.source!r}; use 'members' or 'swag'")
        ensemble.resolve_member_loop(self.member_loop)
        if self.num_swag_samples < 2:
            raise OodgenError(f"config.eval.ensemble.num_swag_samples={self.num_swag_samples} must be at least 2")

    def stacked_params(self, train_state) -> chex.ArrayTree:
        """The parameter sets [S, ...] to score with, from a restored train state (oodgen.training.restore.restore_state):
        its members, or num_swag_samples SWAG draws per member (members × draws, member-major)."""
        if self.source == "members":
            return train_state.params
        statistics = getattr(train_state, "swag", None)
        if statistics is None:
            raise OodgenError("config.eval.ensemble.source='swag' but this checkpoint holds no SWAG statistics: "
                              "train with --config.swag.enabled=True, or use --config.eval.ensemble.source=members")
        collected = int(np.min(jax.device_get(statistics.count)))
        if collected < 2:
            raise OodgenError(f"SWAG collected {collected} iterate(s) by step {int(train_state.step)} (needs 2): "
                              "train longer or lower config.swag.start_step, or pass --config.eval.checkpoint=latest")
        key = jax.random.split(jax.random.key(self.seed))[1]
        if statistics.count.ndim == 0:
            return swag.swag_sample(statistics, key, self.num_swag_samples)
        keys = jax.random.split(key, statistics.count.shape[0])
        draws = jax.vmap(swag.swag_sample, in_axes=(0, 0, None))(statistics, keys, self.num_swag_samples)
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), draws)              # [M·S, ...]

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> chex.ArrayTree:
        """Checks that `params` are this model's parameters stacked [M, ...] with M ≥ 2 and keeps them."""
        del in_dist
        size = ensemble.stack_size(self.model, params)
        if size is None or size < 2:
            raise OodgenError(f"scorer 'ensemble' needs parameters of at least 2 models stacked [M, ...], got "
                              f"{'one model' if size is None else 'M=1'}: train with --config.ensemble.size=M "
                              "(M >= 2), or with --config.swag.enabled=True and --config.eval.ensemble.source=swag")
        return params

    def score_all(self, state: chex.ArrayTree, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 [N, H, W, C] -> {name: f32[N]} for the five SCORE_NAMES, higher = more OOD."""
        size = jax.tree.leaves(state)[0].shape[0]
        scorer = dataclasses.replace(self, batch_size=max(1, self.batch_size // size))
        scores = functools.partial(_scores, ensemble.resolve_member_loop(self.member_loop))
        values = scorer.map_model(scores, state, images)
        return {name: values[:, i] for i, name in enumerate(SCORE_NAMES)}

    def score(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """−WAIC in nats, f32[N]."""
        return self.score_all(state, images)["ensemble_waic"]
