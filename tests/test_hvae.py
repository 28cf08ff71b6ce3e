import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen.models.hvae import HVAEModel, _gaussian_kl
from oodgen.scorers.hierarchical import HierarchicalLLRScorer
from oodgen.sharding import example_keys

MODEL = HVAEModel(image_shape=(8, 8, 1), width=8, dense_width=16, latent_channels=(2,), latent_units=(4, 3))
bounds = jax.jit(MODEL.bounds, static_argnums=3)
log_prob = jax.jit(MODEL.log_prob, static_argnums=3)
elbo_terms = jax.jit(MODEL.elbo_terms)


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)), jnp.uint8)


@pytest.fixture(scope="module")
def params(images):
    return jax.jit(MODEL.init)(jax.random.key(0), images)


def test_shapes_follow_the_docstrings(params, images):
    log_px, kl = elbo_terms(params, images, jax.random.key(1))
    chex.assert_shape(log_px, (5,))
    chex.assert_shape(kl, (3, 5))
    chex.assert_shape(bounds(params, images, jax.random.key(1), 4), (3, 5))
    chex.assert_shape(log_prob(params, images, jax.random.key(1), 4), (5,))


def test_bound_with_k_zero_is_the_full_bound(params, images):
    rng = jax.random.key(2)
    np.testing.assert_allclose(bounds(params, images, rng, 4)[0], log_prob(params, images, rng, 4), rtol=1e-6)


@pytest.mark.parametrize("prior_levels", ["mode", "sample"])
def test_all_k_in_one_pass_equals_a_loop_over_k(params, images, prior_levels):
    model = HVAEModel(**{**MODEL.__dict__, "prior_levels": prior_levels})
    rng = jax.random.key(3)
    together = jax.jit(model.bounds, static_argnums=3)(params, images, rng, 3)
    bound_k = jax.jit(model.bound, static_argnums=4)  # k traced: one compilation for every k
    looped = jnp.stack([bound_k(params, images, rng, k, 3) for k in range(model.num_levels)])
    np.testing.assert_allclose(together, looped, rtol=1e-5)
    assert not np.allclose(together[0], together[1])  # the k axis really changes the bound


def test_mode_and_sample_differ_only_for_k_above_zero(params, images):
    sample = HVAEModel(**{**MODEL.__dict__, "prior_levels": "sample"})
    rng = jax.random.key(4)
    a, b = bounds(params, images, rng, 2), jax.jit(sample.bounds, static_argnums=3)(params, images, rng, 2)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    assert not np.allclose(a[1:], b[1:])


def _seeds(fn, num_seeds):
    return jax.jit(jax.vmap(lambda seed: fn(jax.random.key(seed))))(jnp.arange(num_seeds))


def test_importance_weighted_bound_is_at_least_the_elbo_on_average(params, images):
    elbo = _seeds(lambda key: MODEL.log_prob(params, images, key, 1), 40).mean()
    iwae = _seeds(lambda key: MODEL.log_prob(params, images, key, 32), 40).mean()
    assert iwae > elbo


def test_per_level_kls_are_nonnegative_and_match_the_sampled_kl_term(params, images):
    """E over noise of the one-sample log weight equals log p(x|z) − Σ_i KL_i with analytic KLs."""
    log_px, kl = _seeds(lambda key: MODEL.elbo_terms(params, images, key), 4000)
    assert bool(jnp.all(kl >= 0))
    sampled = _seeds(lambda key: MODEL.log_prob(params, images, key, 1), 4000)  # same noise, same z
    difference = sampled - (log_px - kl.sum(axis=1))                            # Σ_i (log p − log q + KL_i)
    standard_error = difference.std(axis=0) / math.sqrt(4000)
    np.testing.assert_array_less(jnp.abs(difference.mean(axis=0)), 4 * standard_error + 1e-4)


def test_gaussian_kl_matches_float64_closed_form():
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    sq, sp = rng.uniform(0.2, 2, size=(2, 3, 4)), rng.uniform(0.2, 2, size=(2, 3, 4))
    expected = (np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).reshape(2, -1).sum(1)
    got = _gaussian_kl(*(jnp.asarray(a, jnp.float32) for a in (mq, sq, mp, sp)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(_gaussian_kl(*(jnp.asarray(a, jnp.float32) for a in (mq, sq, mq, sq))), 0, atol=1e-6)


def test_an_example_scores_the_same_alone_and_in_a_batch(params, images):
    keys = example_keys(jax.random.key(5), jnp.arange(5))
    batch = bounds(params, images, keys, 4)
    alone = jnp.concatenate([bounds(params, images[i:i + 1], keys[i:i + 1], 4) for i in range(5)], axis=1)
    np.testing.assert_allclose(batch, alone, rtol=1e-5)


def test_scorer_reports_llr_and_bounds_for_every_k(params, images):
    scorer = HierarchicalLLRScorer(MODEL, num_samples=4, batch_size=2, seed=9)
    scores = scorer.score_all(params, np.asarray(images))
    assert sorted(scores) == ["llr_k1", "llr_k2", "log_likelihood", "neg_bound_k1", "neg_bound_k2", "neg_elbo"]
    expected = bounds(params, images, example_keys(jax.random.key(9), jnp.arange(5)), 4)
    to_bpd = 1 / (64 * math.log(2))
    np.testing.assert_allclose(scores["log_likelihood"], -expected[0] * to_bpd, rtol=1e-5)
    np.testing.assert_allclose(scores["llr_k2"], (expected[0] - expected[2]) * to_bpd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scorer.score(params, np.asarray(images)), scores["llr_k2"])
    log_w = MODEL.log_weights(params, images, example_keys(jax.random.key(9), jnp.arange(5)), 4)  # [L, B, S]
    np.testing.assert_allclose(scores["neg_elbo"], -log_w[0].mean(-1) * to_bpd, rtol=1e-5)
    assert np.all(scores["neg_elbo"] >= scores["log_likelihood"] - 1e-6)  # Jensen, sample by sample


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        HVAEModel(image_shape=(10, 10, 1))
    with pytest.raises(ValueError, match="prior_levels"):
        HVAEModel(prior_levels="mean")
    with pytest.raises(ValueError, match="at least 2"):
        HVAEModel(latent_channels=(), latent_units=(4,))
