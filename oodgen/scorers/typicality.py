"""The typicality test (Nalisnick et al. 2019b): is a batch's mean NLL too far from the entropy?

Ĥ estimates the entropy of the in-distribution data as its mean NLL (bits/dim). A batch of M images
has ε = |mean NLL(batch) − Ĥ| and is OOD when ε exceeds ε_α, the (1 − α) quantile of ε over K
bootstrap batches of in-distribution validation data. The test is two-sided: batches that are too
likely are flagged as well as batches that are too unlikely. The per-example score is the M = 1
statistic |NLL(x) − Ĥ|; higher = more OOD in both.
"""

import dataclasses
import math
from typing import ClassVar

import chex
import numpy as np

from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer
from oodgen.models.likelihoods import negative_log_likelihood_bpd
from oodgen.validation import check_images


def _check_batch_size(batch_size: int, what: str = "test_batch_size") -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise OodgenError(f"{what}={batch_size!r} must be a whole number >= 1 (the number of images per tested batch)")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise OodgenError(f"alpha={alpha!r} must be strictly between 0 and 1 (the false-positive rate, e.g. 0.01)")


def _check_num_bootstrap(num_bootstrap: int) -> None:
    if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, (int, np.integer)) or num_bootstrap < 1:
        raise OodgenError(f"num_bootstrap={num_bootstrap!r} must be a whole number >= 1 (e.g. 1000)")


def batch_epsilon(nll: np.ndarray, h_hat: float, batch_size: int) -> np.ndarray:
    """|mean NLL − Ĥ| of each consecutive batch: f[N] -> f64[ceil(N / batch_size)].

    Batch b holds nll[b·M : (b + 1)·M]; a ragged last batch is averaged over its own images, never dropped.
    """
    _check_batch_size(batch_size)
    nll = np.asarray(nll, np.float64).reshape(-1)
    if nll.size == 0:
        raise OodgenError("no NLLs to test: the image set is empty; pass at least one image")
    starts = np.arange(0, nll.size, batch_size)
    counts = np.diff(np.append(starts, nll.size))
    return np.abs(np.add.reduceat(nll, starts) / counts - h_hat)


def bootstrap_threshold(nll_validation: np.ndarray, h_hat: float, batch_size: int, num_bootstrap: int,
                        alpha: float, rng: np.random.Generator) -> float:
    """ε_α: the (1 − α) quantile (numpy's default linear interpolation) of ε over `num_bootstrap` batches.

    Draws indices once as `rng.integers(0, N, size=(num_bootstrap, batch_size))` (with replacement)
    from nll_validation f[N] (bits/dim); returns the threshold in bits/dim.
    """
    _check_batch_size(batch_size)
    _check_num_bootstrap(num_bootstrap)
    _check_alpha(alpha)
    nll_validation = np.asarray(nll_validation, np.float64).reshape(-1)
    if nll_validation.size == 0:
        raise OodgenError("no validation NLLs to bootstrap from; pass in-distribution images")
    indices = rng.integers(0, nll_validation.size, size=(num_bootstrap, batch_size))
    epsilon = np.abs(nll_validation[indices].mean(axis=1) - h_hat)
    return float(np.quantile(epsilon, 1.0 - alpha))


@dataclasses.dataclass(frozen=True)
class TypicalityState:
    """What `TypicalityScorer.fit` estimated; NLLs and thresholds in bits/dim.

    nll_entropy f32[⌊N/2⌋] (first half of the fit images, gives h_hat) and nll_validation
    f32[N − ⌊N/2⌋] (second half, gives threshold for batches of the scorer's test_batch_size).
    """
    params: chex.ArrayTree
    h_hat: float
    threshold: float
    nll_entropy: np.ndarray
    nll_validation: np.ndarray


@dataclasses.dataclass(frozen=True)
class TypicalityScorer(ModelScorer):
    """Typicality test with the model's importance-weighted NLL bound (bits/dim).

    `fit` splits the in-distribution images by position: the first ⌊N/2⌋ give Ĥ (their mean NLL,
    the paper's estimate on training data), the remaining N − ⌊N/2⌋ are the validation set for the
    bootstrap threshold (numpy Generator seeded by `seed`). The split is not shuffled: pass images
    in random order, not sorted by class. Needs N >= 2·test_batch_size.
    """
    test_batch_size: int = 2
    num_bootstrap: int = 1000
    alpha: float = 0.01
    name: str = "typicality"
    units: str = "|NLL − Ĥ| (bits/dim)"
    requires: ClassVar = (caps.LIKELIHOOD,)
    fits_on_data: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        _check_batch_size(self.test_batch_size)
        _check_num_bootstrap(self.num_bootstrap)
        _check_alpha(self.alpha)

    def nll(self, params: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """Per-example NLL bound in bits/dim: uint8 [N, H, W, C] -> f32[N]."""
        return self.map_model(negative_log_likelihood_bpd, params, images)

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> TypicalityState:
        in_dist = check_images(in_dist, self.model.image_shape, what="in-distribution fit images")
        n = in_dist.shape[0]
        if n < 2 * self.test_batch_size:
            raise OodgenError(
                f"typicality fit needs at least 2·test_batch_size = {2 * self.test_batch_size} in-distribution "
                f"images (half for Ĥ, half for the bootstrap threshold), got {n}; pass more images or lower "
                "test_batch_size")
        nll = self.nll(params, in_dist)
        bad = int(np.count_nonzero(~np.isfinite(nll)))
        if bad:
            raise OodgenError(f"the model gives {bad} non-finite NLLs on the in-distribution fit images; "
                              "check the parameters (a diverged or untrained checkpoint?)")
        nll_entropy, nll_validation = nll[:n // 2], nll[n // 2:]
        h_hat = float(np.mean(nll_entropy, dtype=np.float64))
        threshold = bootstrap_threshold(nll_validation, h_hat, self.test_batch_size, self.num_bootstrap,
                                        self.alpha, np.random.default_rng(self.seed))
        return TypicalityState(params, h_hat, threshold, nll_entropy, nll_validation)

    def score(self, state: TypicalityState, images: np.ndarray) -> np.ndarray:
        """|NLL(x) − Ĥ| in bits/dim, f32[N]."""
        return np.abs(self.nll(state.params, images).astype(np.float64) - state.h_hat).astype(np.float32)

    def batch_statistic(self, state: TypicalityState, images: np.ndarray,
                        test_batch_size: int | None = None) -> np.ndarray:
        """ε per consecutive batch of M images (default test_batch_size), bits/dim: f32[ceil(N / M)].

        A ragged last batch is averaged over its own (fewer) images; no image is dropped.
        """
        m = self.test_batch_size if test_batch_size is None else test_batch_size
        _check_batch_size(m)
        return batch_epsilon(self.nll(state.params, images), state.h_hat, m).astype(np.float32)

    def thresholds(self, state: TypicalityState, num_images: int) -> np.ndarray:
        """ε_α for each batch of `batch_test` on num_images images: f64[ceil(num_images / M)].

        Full batches use state.threshold; a ragged last batch of m < M images gets its own
        threshold, bootstrapped at size m from state.nll_validation (Generator seeded by `seed`),
        so it is tested at level α too.
        """
        m = self.test_batch_size
        num_batches = math.ceil(num_images / m)
        out = np.full(num_batches, state.threshold, np.float64)
        rest = num_images % m
        if rest:
            out[-1] = bootstrap_threshold(state.nll_validation, state.h_hat, rest, self.num_bootstrap,
                                          self.alpha, np.random.default_rng(self.seed))
        return out

    def batch_test(self, state: TypicalityState, images: np.ndarray) -> np.ndarray:
        """bool[ceil(N / M)]: True where the batch is OOD (ε > ε_α) at false-positive rate α."""
        epsilon = self.batch_statistic(state, images)
        return epsilon > self.thresholds(state, len(images)).astype(np.float32)
