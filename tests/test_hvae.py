import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen import likelihoods
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


# ---------------------------------------------------------------------------------------------------------
# An independent reference for L^{>k} (Havtorn et al. 2021), written out plainly in float64.
# ---------------------------------------------------------------------------------------------------------

REF_BASE = dict(image_shape=(28, 28, 1), width=8, dense_width=16, latent_channels=(2,), latent_units=(4, 2))
REF_MODELS = {
    "bernoulli": HVAEModel(**REF_BASE),
    "discretized_logistic_mixture": HVAEModel(**REF_BASE, likelihood="discretized_logistic_mixture",
                                              num_mixtures=3),
}


def _with_prior_levels(model, prior_levels):
    return HVAEModel(**{**model.__dict__, "prior_levels": prior_levels})


def _np_gaussian_log_prob(z, mean, std):
    """log N(z; mean, std²) in float64, summed over all but the batch axis: f64[B]."""
    z, mean, std = (np.asarray(a, np.float64) for a in (z, mean, std))
    per_dim = -0.5 * ((z - mean) / std) ** 2 - 0.5 * np.log(2 * np.pi) - np.log(std)
    return per_dim.reshape(per_dim.shape[0], -1).sum(axis=1)


def _np_gaussian_kl(mean_q, std_q, mean_p, std_p):
    """KL(N(mean_q, std_q²) || N(mean_p, std_p²)) in float64, summed over all but the batch axis."""
    mq, sq, mp, sp = (np.asarray(a, np.float64) for a in (mean_q, std_q, mean_p, std_p))
    per_dim = np.log(sp) - np.log(sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5
    return per_dim.reshape(per_dim.shape[0], -1).sum(axis=1)


def _np_log_mean_exp(a, axis):
    a = np.asarray(a, np.float64)
    top = a.max(axis=axis, keepdims=True)
    return np.log(np.exp(a - top).mean(axis=axis)) + np.squeeze(top, axis=axis)


def _pixel_shuffle(x):
    """[B, H, W, 4C] -> [B, 2H, 2W, C]: output pixel (2h + a, 2w + b) takes channels (a, b) of (h, w)."""
    b, h, w, c4 = x.shape
    x = x.reshape(b, h, w, 2, 2, c4 // 4)
    return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, c4 // 4)


def _reference_inputs(model, images, rng, num_samples):
    """Re-derives (does NOT call) what `HVAEModel._prepare` does: one key per example, each split into a
    data key (dynamic binarisation for Bernoulli; a fixed map to [-1, 1] for the logistic mixture) and a
    noise key, which is split into one key per level, each drawing that level's S standard normals.
    Returns (target f32[B, H, W, C], eps: per level a list over samples s of f64[B, *shape])."""
    num_levels = model.num_levels
    shapes = [(28 // 2, 28 // 2, 2), (4,), (2,)]  # z_1 (conv, half resolution), z_2, z_3 (dense)
    assert model.latent_channels == (2,) and model.latent_units == (4, 2) and model.image_shape == (28, 28, 1)
    keys = jax.random.split(rng, images.shape[0])
    targets, eps = [], [[[] for _ in range(num_samples)] for _ in range(num_levels)]
    for b in range(images.shape[0]):
        data_key, noise_key = jax.random.split(keys[b])
        if model.likelihood == "bernoulli":
            probs = np.asarray(images[b], np.float32) / np.float32(255)
            targets.append(np.asarray(jax.random.bernoulli(data_key, jnp.asarray(probs)), np.float32))
        else:
            targets.append(np.asarray(images[b], np.float32) * np.float32(2 / 255) - np.float32(1))
        level_keys = jax.random.split(noise_key, num_levels)
        for i, shape in enumerate(shapes):
            draws = np.asarray(jax.random.normal(level_keys[i], (num_samples, *shape)), np.float64)
            for s in range(num_samples):
                eps[i][s].append(draws[s])
    eps = [[np.stack(per_example) for per_example in per_sample] for per_sample in eps]
    return np.stack(targets), eps


def _reference_log_px(model, out, target, images):
    """log p(x | decoder output) in float64, summed per example: f64[B]."""
    if model.likelihood == "bernoulli":
        logits, x = np.asarray(out, np.float64), np.asarray(target, np.float64)
        per_pixel = x * logits - np.logaddexp(0.0, logits)  # log sigmoid(l)^x (1 - sigmoid(l))^(1-x)
    else:
        per_pixel = np.asarray(likelihoods.discretized_logistic_mixture_log_prob(images, out, model.num_mixtures),
                               np.float64)
    return per_pixel.reshape(per_pixel.shape[0], -1).sum(axis=1)


def reference_bounds(model, params, images, rng, num_samples):
    """L^{>k} for k = 0 .. L-1 by a plain loop: f64[L, B], plus (log p(x|z), analytic KLs f64[L, B]) of
    the k = 0, s = 0 pass. Only the network's layers come from the module; the bookkeeping is here.

    For every k and importance sample s, a top-down pass from level L (standard normal prior) to level 1:
    level j (1-based) with j <= k takes its conditional prior's mode (or, with prior_levels="sample", the
    prior's mean + std * eps) and adds nothing to the log weight; a level j > k takes the posterior sample
    mean_q + std_q * eps and adds log p(z_j | z_{>j}) - log q(z_j | z_{>j}, x). The log weight adds
    log p(x | z), and L^{>k} = log (1/S) sum_s exp(log weight_s).
    """
    net = model.net.bind({"params": params})
    enc, dec = net.encoder, net.decoder
    target, eps = _reference_inputs(model, images, rng, num_samples)
    hs = enc(jnp.asarray(target))
    num_levels, num_conv, batch = model.num_levels, len(model.latent_channels), images.shape[0]
    grid = (28 // 4, 28 // 4)
    result, first_pass = np.zeros((num_levels, batch)), None
    for k in range(num_levels):
        log_w = np.zeros((num_samples, batch))
        for s in range(num_samples):
            t, kls = None, np.zeros((num_levels, batch))
            for j in range(num_levels, 0, -1):  # 1-based level j, from the top down; layer index j - 1
                i = j - 1
                if j == num_conv:  # the top conv level: the dense state becomes a 7x7 map, then 14x14
                    t = dec.from_dense(jax.nn.swish(t)).reshape(batch, *grid, model.width)
                    t = _pixel_shuffle(dec.up_from_dense(jax.nn.swish(t)))
                if j == num_levels:
                    mean_p, std_p = np.zeros_like(eps[i][s]), np.ones_like(eps[i][s])
                    mean_q, std_q = enc.posterior(i, hs[i])
                else:
                    mean_p, std_p = dec.priors[i](t)
                    mean_q, std_q = enc.posterior(i, jnp.concatenate([t, hs[i]], axis=-1))
                mean_p, std_p, mean_q, std_q = (np.asarray(a, np.float64) for a in (mean_p, std_p, mean_q, std_q))
                if j > k:  # inferred: a posterior sample, with its log-ratio term
                    z = mean_q + std_q * eps[i][s]
                    log_w[s] += _np_gaussian_log_prob(z, mean_p, std_p) - _np_gaussian_log_prob(z, mean_q, std_q)
                    kls[i] = _np_gaussian_kl(mean_q, std_q, mean_p, std_p)
                elif model.prior_levels == "mode":  # not inferred: the prior's mode, no term
                    z = mean_p
                else:
                    z = mean_p + std_p * eps[i][s]
                zf = dec.z_in[i](jnp.asarray(z, jnp.float32))
                t = zf if t is None else t + zf
                for block in dec.down_blocks[i]:
                    t = block(t)
                if j <= num_conv:
                    t = _pixel_shuffle(dec.upsample[i](jax.nn.swish(t)))
            log_px = _reference_log_px(model, dec(t), target, images)
            log_w[s] += log_px
            if k == 0 and s == 0:
                first_pass = (log_px, kls)
        result[k] = _np_log_mean_exp(log_w, axis=0)
    return result, first_pass


@pytest.fixture(scope="module")
def ref_images():
    return jnp.asarray(np.random.default_rng(11).integers(0, 256, (3, 28, 28, 1)), jnp.uint8)


@pytest.fixture(scope="module")
def ref_params(ref_images):
    """Initial parameters, perturbed so that priors and posteriors are far from N(0, 1) and from each other
    (at initialisation the Gaussian heads start near N(0, 1), which would hide a mode/mean mix-up)."""
    out = {}
    for name, model in REF_MODELS.items():
        params = jax.jit(model.init)(jax.random.key(12), ref_images)
        leaves, tree = jax.tree_util.tree_flatten(params)
        noise_keys = jax.random.split(jax.random.key(13), len(leaves))
        leaves = [leaf + 0.3 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, noise_keys)]
        out[name] = jax.tree_util.tree_unflatten(tree, leaves)
    return out


@pytest.fixture(scope="module")
def reference(ref_params, ref_images):
    """Memoised reference_bounds, keyed by (likelihood, prior_levels, S)."""
    cache = {}

    def get(likelihood, prior_levels, num_samples):
        key = (likelihood, prior_levels, num_samples)
        if key not in cache:
            model = _with_prior_levels(REF_MODELS[likelihood], prior_levels)
            cache[key] = reference_bounds(model, ref_params[likelihood], ref_images, jax.random.key(14), num_samples)
        return cache[key]
    return get


@pytest.mark.parametrize("likelihood", list(REF_MODELS))
@pytest.mark.parametrize("prior_levels", ["mode", "sample"])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_bounds_match_an_independent_float64_reference(reference, ref_params, ref_images, likelihood,
                                                       prior_levels, num_samples):
    model = _with_prior_levels(REF_MODELS[likelihood], prior_levels)
    expected, _ = reference(likelihood, prior_levels, num_samples)
    got = jax.jit(model.bounds, static_argnums=3)(ref_params[likelihood], ref_images, jax.random.key(14),
                                                   num_samples)
    assert np.all(np.isfinite(expected))
    for k in range(model.num_levels):
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-4, err_msg=f"L^{{>{k}}}")
        # The likelihood ratio L - L^{>k} is what the scorer reports: it must match too, not only the sum.
        np.testing.assert_allclose(got[0] - got[k], expected[0] - expected[k], rtol=1e-3, atol=2e-2,
                                   err_msg=f"L - L^{{>{k}}}")
    # The reference is not degenerate: every k gives a different bound.
    for k in range(1, model.num_levels):
        assert np.all(np.abs(expected[k] - expected[k - 1]) > 0.1)


@pytest.mark.parametrize("likelihood", list(REF_MODELS))
def test_prior_mode_and_prior_sample_references_differ_where_they_must(reference, likelihood):
    mode, _ = reference(likelihood, "mode", 3)
    sample, _ = reference(likelihood, "sample", 3)
    np.testing.assert_allclose(mode[0], sample[0], rtol=1e-12)  # k = 0: nothing is taken from the prior
    assert np.all(np.abs(mode[1:] - sample[1:]) > 0.1)


@pytest.mark.parametrize("likelihood", list(REF_MODELS))
@pytest.mark.parametrize("num_samples", [1, 3])
def test_reference_k0_is_log_prob_and_its_terms_are_the_elbo_terms(reference, ref_params, ref_images,
                                                                   likelihood, num_samples):
    """k = 0 of the reference is L itself: `log_prob` with the same S and key. With S = 1 the reference's
    k = 0 pass uses the same noise as `elbo_terms`, so its log p(x|z) and its analytic per-level KLs
    (computed in the reference, not used by the bound) must equal elbo_terms' exactly (to float32)."""
    model = REF_MODELS[likelihood]
    params, rng = ref_params[likelihood], jax.random.key(14)
    expected, (ref_log_px, ref_kl) = reference(likelihood, "mode", num_samples)
    got = jax.jit(model.log_prob, static_argnums=3)(params, ref_images, rng, num_samples)
    np.testing.assert_allclose(got, expected[0], rtol=1e-4)
    if num_samples == 1:
        log_px, kl = jax.jit(model.elbo_terms)(params, ref_images, rng)
        np.testing.assert_allclose(log_px, ref_log_px, rtol=1e-4)
        np.testing.assert_allclose(kl, ref_kl, rtol=1e-4, atol=1e-3)
        assert np.all(ref_kl > 0)
