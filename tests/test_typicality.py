import math

import jax
import numpy as np
import pytest

from oodgen.errors import OodgenError
from oodgen.models.vae import VAEModel
from oodgen.scorers.likelihood import LikelihoodScorer
from oodgen.scorers.typicality import TypicalityScorer, batch_epsilon, bootstrap_threshold

MODEL = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,))
SEED = 5


@pytest.fixture(scope="module")
def params():
    return MODEL.init(jax.random.key(0), np.zeros((2, 8, 8, 1), np.uint8))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return {"fit": rng.integers(0, 256, (13, 8, 8, 1)).astype(np.uint8),
            "test": rng.integers(0, 256, (7, 8, 8, 1)).astype(np.uint8)}


@pytest.fixture(scope="module")
def fitted(params, images):
    scorer = TypicalityScorer(MODEL, num_samples=2, batch_size=8, seed=SEED, test_batch_size=3,
                              num_bootstrap=200, alpha=0.1)
    return scorer, scorer.fit(params, images["fit"])


@pytest.fixture(scope="module")
def reference_nll(params, images):
    likelihood = LikelihoodScorer(MODEL, num_samples=2, batch_size=8, seed=SEED)
    return {name: np.asarray(likelihood.score(params, x), np.float64) for name, x in images.items()}


def naive_quantile(values, q):
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def naive_threshold(nll_validation, h_hat, batch_size, num_bootstrap, alpha, seed):
    indices = np.random.default_rng(seed).integers(0, len(nll_validation), size=(num_bootstrap, batch_size))
    epsilons = []
    for row in indices:
        total = 0.0
        for i in row:
            total += float(nll_validation[i])
        epsilons.append(abs(total / batch_size - h_hat))
    return naive_quantile(epsilons, 1 - alpha)


def test_fit_splits_into_entropy_and_validation_halves(fitted, reference_nll):
    _, state = fitted
    nll = reference_nll["fit"]
    np.testing.assert_allclose(state.nll_entropy, nll[:6], rtol=1e-5)
    np.testing.assert_allclose(state.nll_validation, nll[6:], rtol=1e-5)
    assert state.h_hat == pytest.approx(np.mean(nll[:6]), rel=1e-5)


def test_score_is_distance_of_nll_from_entropy(fitted, images, reference_nll):
    scorer, state = fitted
    scores = scorer.score(state, images["test"])
    h_hat = np.mean(reference_nll["fit"][:6])
    assert scores.dtype == np.float32 and scores.shape == (7,)
    np.testing.assert_allclose(scores, np.abs(reference_nll["test"] - h_hat), rtol=1e-5, atol=1e-6)


def test_threshold_matches_naive_bootstrap_loop(fitted, reference_nll):
    _, state = fitted
    nll = reference_nll["fit"]
    expected = naive_threshold(nll[6:], np.mean(nll[:6]), 3, 200, 0.1, SEED)
    assert state.threshold == pytest.approx(expected, rel=1e-5)


def test_ragged_last_batch_is_tested_at_its_own_size(fitted, images, reference_nll):
    scorer, state = fitted
    nll, h_hat = reference_nll["test"], np.mean(reference_nll["fit"][:6])
    epsilon = scorer.batch_statistic(state, images["test"])
    expected = [abs(nll[0:3].mean() - h_hat), abs(nll[3:6].mean() - h_hat), abs(nll[6] - h_hat)]
    np.testing.assert_allclose(epsilon, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scorer.batch_statistic(state, images["test"], test_batch_size=1),
                               scorer.score(state, images["test"]), rtol=1e-6)
    thresholds = scorer.thresholds(state, 7)
    last = naive_threshold(state.nll_validation, state.h_hat, 1, 200, 0.1, SEED)
    np.testing.assert_allclose(thresholds, [state.threshold, state.threshold, last], rtol=1e-5)
    assert last != pytest.approx(state.threshold)
    np.testing.assert_array_equal(scorer.batch_test(state, images["test"]), epsilon > thresholds)


def test_batch_epsilon_keeps_ragged_batch():
    nll = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    np.testing.assert_allclose(batch_epsilon(nll, 2.0, 2), [0.5, 1.5, 8.0])


def binomial_tolerance(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n)


def test_false_positive_rate_and_power_match_theory():
    rng = np.random.default_rng(1)
    mu, sigma, m, alpha, n_batches = 3.0, 0.2, 4, 0.05, 4000
    fit = rng.normal(mu, sigma, 100_000)
    h_hat = fit[:50_000].mean()
    threshold = bootstrap_threshold(fit[50_000:], h_hat, m, 50_000, alpha, rng)

    in_dist = rng.normal(mu, sigma, n_batches * m)
    rate = np.mean(batch_epsilon(in_dist, h_hat, m) > threshold)
    assert abs(rate - alpha) < binomial_tolerance(alpha, n_batches)

    z = 1.959964  # two-sided 5% critical value; a shift of 3 standard errors of the batch mean
    power = 0.5 * (math.erfc((z - 3) / math.sqrt(2)) + math.erfc((z + 3) / math.sqrt(2)))
    shift = 3 * sigma / math.sqrt(m)
    for sign in (1, -1):  # too likely is as atypical as too unlikely
        shifted = rng.normal(mu + sign * shift, sigma, n_batches * m)
        rate = np.mean(batch_epsilon(shifted, h_hat, m) > threshold)
        assert abs(rate - power) < binomial_tolerance(power, n_batches)
        assert rate > 0.8


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": -0.5}, "alpha"),
    ({"test_batch_size": 0}, "test_batch_size"), ({"test_batch_size": 1.5}, "test_batch_size"),
    ({"num_bootstrap": 0}, "num_bootstrap"),
])
def test_bad_arguments_raise_one_line(kwargs, match):
    with pytest.raises(OodgenError, match=match) as info:
        TypicalityScorer(MODEL, **kwargs)
    assert "\n" not in str(info.value)


def test_too_few_fit_images(params):
    scorer = TypicalityScorer(MODEL, num_samples=1, test_batch_size=4)
    with pytest.raises(OodgenError, match="at least 2·test_batch_size = 8") as info:
        scorer.fit(params, np.zeros((7, 8, 8, 1), np.uint8))
    assert "\n" not in str(info.value) and "pass more images" in str(info.value)


def test_bad_override_and_pure_function_arguments(fitted, images):
    scorer, state = fitted
    with pytest.raises(OodgenError, match="test_batch_size"):
        scorer.batch_statistic(state, images["test"], test_batch_size=0)
    with pytest.raises(OodgenError, match="alpha"):
        bootstrap_threshold(np.ones(4), 1.0, 2, 10, 1.5, np.random.default_rng(0))
    with pytest.raises(OodgenError, match="empty"):
        batch_epsilon(np.zeros(0), 1.0, 2)
