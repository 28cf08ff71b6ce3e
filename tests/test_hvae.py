import dataclasses
import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen.models import likelihoods
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
# An independent reference for L^{>k} (Havtorn et al. 2021): a plain loop over k, importance samples and
# levels, with every density, the mode substitution and the log-mean-exp written out in float64.
# ---------------------------------------------------------------------------------------------------------

# The same network as MODEL (so the fixtures' parameters and compilations are shared), and the same one with
# a discretised logistic mixture likelihood (it differs only in the decoder's output layer).
LOGISTIC = HVAEModel(**{**MODEL.__dict__, "likelihood": "discretized_logistic_mixture", "num_mixtures": 3})
REF_MODELS = {"bernoulli": MODEL, "discretized_logistic_mixture": LOGISTIC}


def _with_prior_levels(model, prior_levels):
    return HVAEModel(**{**model.__dict__, "prior_levels": prior_levels})


def _np_gaussian_log_prob(z, mean, std):
    """log N(z; mean, std²) in float64, summed over all but the batch axis: f64[B]."""
    per_dim = -0.5 * ((z - mean) / std) ** 2 - 0.5 * np.log(2 * np.pi) - np.log(std)
    return per_dim.reshape(per_dim.shape[0], -1).sum(axis=1)


def _np_gaussian_kl(mean_q, std_q, mean_p, std_p):
    """KL(N(mean_q, std_q²) || N(mean_p, std_p²)) in float64, summed over all but the batch axis: f64[B]."""
    per_dim = np.log(std_p) - np.log(std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5
    return per_dim.reshape(per_dim.shape[0], -1).sum(axis=1)


def _np_log_mean_exp(a, axis):
    top = a.max(axis=axis, keepdims=True)
    return np.log(np.exp(a - top).mean(axis=axis)) + np.squeeze(top, axis=axis)


def _pixel_shuffle(x):
    """[B, H, W, 4C] -> [B, 2H, 2W, C]: output pixel (2h + a, 2w + b) takes channels (a, b) of (h, w)."""
    b, h, w, c4 = x.shape
    x = x.reshape(b, h, w, 2, 2, c4 // 4)
    return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, c4 // 4)


@functools.lru_cache(maxsize=None)
def _layer(model, name, i=None):
    """One piece of the network, from the module's own sub-layers, jitted on its own: (params, *args) -> out.

    Only the network's layers come from the module; which of them runs when, and on what z, is the
    reference's business. `i` is the 0-based layer index of level i + 1.
    """
    num_conv = len(model.latent_channels)
    grid = (model.image_shape[0] // 2 ** (num_conv + 1), model.image_shape[1] // 2 ** (num_conv + 1))

    def fn(net, *args):
        enc, dec = net.encoder, net.decoder
        if name == "bottom_up":
            return enc(args[0])
        if name == "top_posterior":                         # the top level's q sees h_L alone
            return enc.posterior(i, args[0])
        if name == "prior_and_posterior":                   # p(z_i | t) and q(z_i | t, h_i)
            t, h = args
            return dec.priors[i](t), enc.posterior(i, jnp.concatenate([t, h], axis=-1))
        if name == "dense_to_map":                          # the dense state -> the top conv level's map
            t = dec.from_dense(nn.swish(args[0])).reshape(args[0].shape[0], *grid, model.width)
            return _pixel_shuffle(dec.up_from_dense(nn.swish(t)))
        if name == "take_z":                                # t (or nothing, at the top) + z_i, then blocks
            t, z = args if len(args) == 2 else (None, args[0])
            t = dec.z_in[i](z) if t is None else t + dec.z_in[i](z)
            for block in dec.down_blocks[i]:
                t = block(t)
            return _pixel_shuffle(dec.upsample[i](nn.swish(t))) if i < num_conv else t
        if name == "decode":
            return dec(args[0])
        raise ValueError(name)

    return jax.jit(lambda params, *args: nn.apply(fn, model.net)({"params": params}, *args))


def _reference_inputs(model, images, rng, num_samples):
    """Re-derives (does NOT call) `HVAEModel._prepare`: one key per example, split into a data key
    (Bernoulli: a dynamic binarisation x ~ Bernoulli(pixel / 255); logistic: pixel * 2/255 - 1, no noise)
    and a noise key, split into one key per level (bottom to top), each drawing that level's S standard
    normals. Returns (target f32[B, H, W, C], eps[level][s] f64[B, *latent_shape])."""
    height, width, _ = model.image_shape
    shapes = [(height // 2 ** (n + 1), width // 2 ** (n + 1), c) for n, c in enumerate(model.latent_channels)]
    shapes += [(u,) for u in model.latent_units]
    keys = jax.random.split(rng, images.shape[0])
    pixels = np.asarray(images)
    targets, eps = [], [[[] for _ in range(num_samples)] for _ in shapes]
    for b in range(images.shape[0]):
        data_key, noise_key = jax.random.split(keys[b])
        if model.likelihood == "bernoulli":
            probs = pixels[b].astype(np.float32) / np.float32(255)
            targets.append(np.asarray(jax.random.bernoulli(data_key, probs), np.float32))
        else:
            targets.append(pixels[b].astype(np.float32) * np.float32(2 / 255) - np.float32(1))
        level_keys = jax.random.split(noise_key, len(shapes))
        for level, shape in enumerate(shapes):
            draws = np.asarray(jax.random.normal(level_keys[level], (num_samples, *shape)), np.float64)
            for s in range(num_samples):
                eps[level][s].append(draws[s])
    return np.stack(targets), [[np.stack(examples) for examples in per_sample] for per_sample in eps]


def _reference_log_px(model, out, target, images):
    """log p(x | decoder output) in float64, summed per example: f64[B]."""
    if model.likelihood == "bernoulli":
        logits, x = np.asarray(out, np.float64), np.asarray(target, np.float64)
        per_pixel = x * logits - np.logaddexp(0.0, logits)  # log sigmoid(l)^x (1 - sigmoid(l))^(1 - x)
    else:
        per_pixel = np.asarray(likelihoods.discretized_logistic_mixture_log_prob(images, out, model.num_mixtures),
                               np.float64)
    return per_pixel.reshape(per_pixel.shape[0], -1).sum(axis=1)


def reference_bounds(model, params, images, rng, num_samples):
    """L^{>k} for k = 0 .. L-1 by a plain loop: f64[L, B]; plus (log p(x|z) f64[B], analytic KLs f64[L, B])
    of the k = 0, s = 0 pass.

    For every k and importance sample s, one top-down pass from level L (standard normal prior) to level 1.
    A level j <= k (1-based) is not inferred: z_j is its conditional prior's mode (prior_levels="mode") or
    the prior's mean + std * eps_j ("sample"), and it adds nothing to the log weight. A level j > k takes
    the posterior sample z_j = mean_q + std_q * eps_j and adds log p(z_j | z_{>j}) - log q(z_j | z_{>j}, x).
    The log weight then adds log p(x | z), and L^{>k} = log (1/S) Σ_s exp(log weight_s).
    """
    # Every layer but the pixel output is the same for both likelihoods and both prior_levels: one
    # compilation each, fed the parameters without the output layer's.
    body_model = dataclasses.replace(model, likelihood="bernoulli", num_mixtures=HVAEModel.num_mixtures,
                                     prior_levels="mode")
    body = {"encoder": params["encoder"],
            "decoder": {name: value for name, value in params["decoder"].items() if name != "out"}}

    def layer(name, i=None):
        return functools.partial(_layer(body_model, name, i), body)

    def decode(t):
        return _layer(dataclasses.replace(model, prior_levels="mode"), "decode")(params, t)

    target, eps = _reference_inputs(model, images, rng, num_samples)
    hs = layer("bottom_up")(jnp.asarray(target))
    num_levels, num_conv, batch = model.num_levels, len(model.latent_channels), images.shape[0]
    result, first_pass = np.zeros((num_levels, batch)), None
    for k in range(num_levels):
        log_w = np.zeros((num_samples, batch))
        for s in range(num_samples):
            t, kls = None, np.zeros((num_levels, batch))
            for j in range(num_levels, 0, -1):  # level j, top down; its layers have index j - 1
                i = j - 1
                if j == num_levels:
                    mean_p, std_p = np.zeros_like(eps[i][s]), np.ones_like(eps[i][s])
                    mean_q, std_q = layer("top_posterior", i)(hs[i])
                else:
                    if j == num_conv:
                        t = layer("dense_to_map")(t)
                    (mean_p, std_p), (mean_q, std_q) = layer("prior_and_posterior", i)(t, hs[i])
                mean_p, std_p, mean_q, std_q = (np.asarray(a, np.float64) for a in (mean_p, std_p, mean_q, std_q))
                if j > k:    # inferred: a posterior sample, with its log-ratio term
                    z = mean_q + std_q * eps[i][s]
                    log_w[s] += _np_gaussian_log_prob(z, mean_p, std_p) - _np_gaussian_log_prob(z, mean_q, std_q)
                    kls[i] = _np_gaussian_kl(mean_q, std_q, mean_p, std_p)
                elif model.prior_levels == "mode":
                    z = mean_p   # the mode of a Gaussian; no term
                else:
                    z = mean_p + std_p * eps[i][s]
                args = (jnp.asarray(z, jnp.float32),) if t is None else (t, jnp.asarray(z, jnp.float32))
                t = layer("take_z", i)(*args)
            log_px = _reference_log_px(model, decode(t), target, images)
            log_w[s] += log_px
            if k == 0 and s == 0:
                first_pass = (log_px, kls)
        result[k] = _np_log_mean_exp(log_w, axis=0)
    return result, first_pass


@pytest.fixture(scope="module")
def ref_params(params):
    """The fixture's parameters perturbed, so that priors and posteriors are far from N(0, 1) and from each
    other (the Gaussian heads start near N(0, 1), which would hide e.g. a mode / posterior mean mix-up);
    the logistic model's take a random decoder output layer of the right width."""
    rng = np.random.default_rng(13)
    perturbed = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.normal(size=a.shape), a.dtype), params)
    features = LOGISTIC.pixels.out_features
    kernel = perturbed["decoder"]["out"]["kernel"]
    out = {"kernel": jnp.asarray(0.2 * rng.normal(size=(*kernel.shape[:-1], features)), jnp.float32),
           "bias": jnp.asarray(0.2 * rng.normal(size=(features,)), jnp.float32)}
    logistic = {**perturbed, "decoder": {**perturbed["decoder"], "out": out}}
    return {"bernoulli": perturbed, "discretized_logistic_mixture": logistic}


REF_RNG = 14


@pytest.fixture(scope="module")
def reference(ref_params, images):
    """reference_bounds(likelihood, prior_levels, S) on the fixture's images, memoised."""
    cache = {}

    def get(likelihood, prior_levels, num_samples):
        key = (likelihood, prior_levels, num_samples)
        if key not in cache:
            model = _with_prior_levels(REF_MODELS[likelihood], prior_levels)
            cache[key] = reference_bounds(model, ref_params[likelihood], images, jax.random.key(REF_RNG),
                                          num_samples)
        return cache[key]
    return get


@pytest.mark.parametrize("likelihood, prior_levels, num_samples", [
    ("bernoulli", "mode", 1), ("bernoulli", "mode", 4), ("bernoulli", "sample", 4),
    ("discretized_logistic_mixture", "mode", 4)])
def test_bounds_match_an_independent_float64_reference(reference, ref_params, images, likelihood, prior_levels,
                                                       num_samples):
    model = _with_prior_levels(REF_MODELS[likelihood], prior_levels)
    expected, _ = reference(likelihood, prior_levels, num_samples)
    fn = bounds if model is MODEL else jax.jit(model.bounds, static_argnums=3)  # MODEL's: compiled above
    got = np.asarray(fn(ref_params[likelihood], images, jax.random.key(REF_RNG), num_samples))
    assert got.shape == expected.shape == (model.num_levels, images.shape[0])
    assert np.all(np.isfinite(expected))
    for k in range(model.num_levels):
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-4, err_msg=f"L^{{>{k}}}")
        # What the scorer reports is the ratio L - L^{>k}: it must match on its own scale too.
        np.testing.assert_allclose(got[0] - got[k], expected[0] - expected[k], rtol=1e-3, atol=2e-3,
                                   err_msg=f"L - L^{{>{k}}}")
    # The reference is not degenerate: each k moves the bound of every example.
    assert np.all(np.abs(np.diff(expected, axis=0)) > 0.05)


@pytest.mark.parametrize("likelihood", list(REF_MODELS))
def test_reference_prior_mode_and_prior_sample_differ_only_for_k_above_zero(reference, likelihood):
    mode, _ = reference(likelihood, "mode", 4)
    sample, _ = reference(likelihood, "sample", 4)
    np.testing.assert_allclose(mode[0], sample[0], rtol=1e-12)  # k = 0: no level is taken from the prior
    assert np.all(np.abs(mode[1:] - sample[1:]) > 0.05)


@pytest.mark.parametrize("num_samples", [1, 4])
def test_reference_k0_is_log_prob_and_its_terms_are_the_elbo_terms(reference, ref_params, images, num_samples):
    """The reference's k = 0 is L itself: `log_prob` with the same S and key must equal it. With S = 1 the
    reference's k = 0 pass uses the same noise as `elbo_terms`, so its log p(x|z) and its analytic per-level
    KLs (computed in the reference, though the bound does not use them) must equal elbo_terms' outputs.
    (The one-sample ELBO log_px - Σ KL is NOT the S = 1 bound: the analytic KL is not the sampled log ratio.)"""
    params, rng = ref_params["bernoulli"], jax.random.key(REF_RNG)
    expected, (ref_log_px, ref_kl) = reference("bernoulli", "mode", num_samples)
    np.testing.assert_allclose(log_prob(params, images, rng, num_samples), expected[0], rtol=1e-4)
    if num_samples == 1:
        log_px, kl = elbo_terms(params, images, rng)
        np.testing.assert_allclose(log_px, ref_log_px, rtol=1e-4)
        np.testing.assert_allclose(kl, ref_kl, rtol=1e-4, atol=1e-4)
        assert np.all(ref_kl > 0.01)
