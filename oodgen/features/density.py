"""Auxiliary densities on per-example feature vectors f[N, F]: fitted on in-distribution features.

Each density is a frozen dataclass of hyper-parameters whose `fit(features f[N, F])` returns a fitted
frozen dataclass with `score(features f[M, F]) -> f64[M]` (higher = more OOD: −log density, or a
distance) and, where it is a density, `log_density(features f[M, F]) -> f64[M]` in nats.

Features that are constant or non-finite at fit time (or non-positive, for densities that need positive
features) are dropped with a warning; the fitted object keeps the indices of the rest (`selection.kept`)
and applies the same selection when scoring, so score-time features keep the original width F.
"""

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from scipy.special import gammaln, xlogy
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.neighbors import NearestNeighbors

from oodgen.errors import OodgenError

_MAX_LISTED = 20


class FittedDensity(Protocol):
    def score(self, features: np.ndarray) -> np.ndarray:
        """f64[M] for features f[M, F]; higher = more OOD."""


class Density(Protocol):
    def fit(self, features: np.ndarray) -> FittedDensity:
        """Fitted state from in-distribution features f[N, F]."""


def _as_matrix(features: Any, what: str) -> np.ndarray:
    """Features as f64[N, F], or OodgenError if not a non-empty 2-D numeric array."""
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise OodgenError(f"{what}: cannot be read as a numeric array ({e}); pass floats f[N, F]") from None
    if x.ndim != 2:
        hint = " (one feature per example: use x[:, None])" if x.ndim == 1 else ""
        raise OodgenError(f"{what}: expected a 2-D array f[N, F] of per-example features, got shape {x.shape}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise OodgenError(f"{what}: got shape {x.shape}; pass at least one example with at least one feature")
    return x


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureSelection:
    """Which of the `num_features` input columns a fitted density uses (`kept`, i[K] ascending)."""
    num_features: int
    kept: np.ndarray
    positive: bool = False

    def apply(self, features: Any, what: str = "features") -> np.ndarray:
        """f[M, F] -> f64[M, K], the kept columns; OodgenError on wrong width or bad values in them."""
        x = _as_matrix(features, what)
        if x.shape[1] != self.num_features:
            raise OodgenError(f"{what}: expected {self.num_features} features per example (the width at fit "
                              f"time), got {x.shape[1]}; pass features computed the same way as the fit set")
        x = x[:, self.kept]
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise OodgenError(f"{what}: {bad} of {x.size} used feature values are NaN or infinite; "
                              "fix or drop those examples before scoring")
        if self.positive:
            bad = int(np.count_nonzero(x <= 0))
            if bad:
                raise OodgenError(f"{what}: {bad} of {x.size} used feature values are <= 0 but this density "
                                  "needs positive features (e.g. squared gradient norms); add a small floor")
        return x


def usable_columns(x: np.ndarray, name: str, positive: bool, log: bool = False,
                   column_names: Sequence[str] | None = None,
                   hint: str = "check the feature extraction or fit on more varied examples") -> np.ndarray:
    """Indices i[K] of the usable columns of fit features f64[N, F]; warns naming the others.

    Unusable: a non-finite value, a value <= 0 when `positive`, or constant (after log, when `log`).
    Columns are named by `column_names` or by index. OodgenError (ending in `hint`) when none is left.
    """
    non_finite = ~np.isfinite(x).all(axis=0)
    non_positive = ~non_finite & (x <= 0).any(axis=0) if positive else np.zeros_like(non_finite)
    valid = ~non_finite & ~non_positive
    t = np.log(np.where(valid, x, 1.0)) if log else np.where(valid, x, 0.0)
    constant = valid & (t.max(axis=0) == t.min(axis=0))
    kept = np.flatnonzero(valid & ~constant)

    def listed(mask: np.ndarray) -> str:
        indices = np.flatnonzero(mask)
        shown = [str(i) if column_names is None else column_names[i] for i in indices[:_MAX_LISTED]]
        return f"[{', '.join(shown)}{', ...' if indices.size > _MAX_LISTED else ''}]"

    reasons = [f"{int(mask.sum())} {why} {listed(mask)}"
               for mask, why in ((non_finite, "with non-finite values"), (non_positive, "with values <= 0"),
                                 (constant, "with zero variance")) if mask.any()]
    if kept.size == 0:
        raise OodgenError(f"{name}: no usable feature among {x.shape[1]} ({'; '.join(reasons)}); {hint}")
    if reasons:
        warnings.warn(f"{name}: dropped {x.shape[1] - kept.size} of {x.shape[1]} features "
                      f"({'; '.join(reasons)}); they are ignored when scoring", stacklevel=4)
    return kept


def select_features(features: Any, name: str, min_examples: int, positive: bool = False,
                    log: bool = False) -> tuple[FeatureSelection, np.ndarray]:
    """Drops unusable columns of fit features f[N, F]; returns (selection, kept columns f64[N, K]).

    Dropped (with a warning): columns with a non-finite value, with a value <= 0 when `positive` or `log`,
    or constant after the optional log transform. OodgenError when N < min_examples or nothing is left.
    """
    x = _as_matrix(features, f"{name}: fit features")
    if x.shape[0] < min_examples:
        raise OodgenError(f"{name}: needs at least {min_examples} fit examples, got {x.shape[0]}; "
                          "fit on more in-distribution examples")
    kept = usable_columns(x, name, positive or log, log=log)
    return FeatureSelection(x.shape[1], kept, positive or log), x[:, kept]


@dataclasses.dataclass(frozen=True, eq=False)
class Standardizer:
    """z = (x − mean) / scale per feature; mean, scale f64[K] are the fit set's mean and std (ddof=0)."""
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        return cls(x.mean(axis=0), x.std(axis=0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale

    @property
    def log_det(self) -> float:
        """log |dz/dx| = −Σ log scale; add it to a log density of z to get one of x."""
        return float(-np.log(self.scale).sum())


def chi_square_log_pdf(x: np.ndarray, dofs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """log density of s·χ²_k at x > 0, elementwise (broadcasting): log χ²_k(x/s) − log s, in nats.

    Written with gammaln/xlogy so it stays accurate for k in the 10^5s and at k = 2, x → 0.
    """
    y = x / scales
    half_k = 0.5 * dofs
    return xlogy(half_k - 1.0, y) - 0.5 * y - half_k * np.log(2.0) - gammaln(half_k) - np.log(scales)


def gaussian_log_pdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log N(x; mean, std²) elementwise (broadcasting), in nats."""
    z = (x - mean) / std
    return -0.5 * z * z - np.log(std) - 0.5 * np.log(2.0 * np.pi)


class _ScoredByDensity:
    """Fitted densities whose score is −log density."""

    def score(self, features: Any) -> np.ndarray:
        """f[M, F] -> f64[M]: −log density (higher = more OOD)."""
        return -self.log_density(features)


@dataclasses.dataclass(frozen=True, eq=False)
class FittedGaussianLog(_ScoredByDensity):
    """Independent Gaussians on log f_l: mean, std f64[K] over the fit set (maximum likelihood, ddof=0)."""
    selection: FeatureSelection
    mean: np.ndarray
    std: np.ndarray
    of_log: bool = True

    def log_density(self, features: Any) -> np.ndarray:
        """f[M, F] -> f64[M]: Σ_l log N(log x_l; μ_l, σ_l) (density of log x), minus Σ_l log x_l if not of_log."""
        x = self.selection.apply(features)
        log_x = np.log(x)
        log_p = gaussian_log_pdf(log_x, self.mean, self.std).sum(axis=1)
        return log_p if self.of_log else log_p - log_x.sum(axis=1)


@dataclasses.dataclass(frozen=True)
class GaussianLogDensity:
    """Dauncey et al.'s table method for positive features (squared gradient norms per parameter tensor).

    An independent Gaussian per feature on log f_l. With `of_log` (default) the log density is that of
    log x, Σ_l log N(log x_l; μ_l, σ_l), as in the paper; otherwise that of x itself, which adds the
    Jacobian −Σ_l log x_l. Features must be positive.
    """
    of_log: bool = True

    def fit(self, features: Any) -> FittedGaussianLog:
        """Fits on f[N, F], N >= 2."""
        selection, x = select_features(features, "gaussian_log", min_examples=2, log=True)
        log_x = np.log(x)
        return FittedGaussianLog(selection, log_x.mean(axis=0), log_x.std(axis=0), self.of_log)


@dataclasses.dataclass(frozen=True, eq=False)
class FittedChiSquare(_ScoredByDensity):
    """f_l ≈ s_l · χ²_{k_l}: dofs k and scales s f64[K] for the kept features."""
    selection: FeatureSelection
    dofs: np.ndarray
    scales: np.ndarray
    of_log: bool = False

    def log_density(self, features: Any) -> np.ndarray:
        """f[M, F] -> f64[M]: Σ_l [log χ²_{k_l}(x_l/s_l) − log s_l] (density of x), plus Σ_l log x_l if of_log."""
        x = self.selection.apply(features)
        log_p = chi_square_log_pdf(x, self.dofs, self.scales).sum(axis=1)
        return log_p + np.log(x).sum(axis=1) if self.of_log else log_p


@dataclasses.dataclass(frozen=True)
class ChiSquareDensity:
    """Scaled chi-square per feature: f_l ≈ s_l · χ²_{k_l}, s_l = mean(f_l) / k_l (also the MLE of s_l).

    `dofs` k_l, one per input feature: the number of entries of parameter tensor l. The log density is
    that of f by default; `of_log=True` gives that of log f, whose Jacobian is + Σ_l log f_l (the
    reference code added log(log f_l) there, which is wrong). Features must be positive.
    """
    dofs: Sequence[float]
    of_log: bool = False

    def __post_init__(self):
        k = np.asarray(self.dofs, dtype=np.float64)
        if k.ndim != 1 or k.size == 0 or not np.all(np.isfinite(k) & (k > 0)):
            raise OodgenError(f"chi_square: dofs must be a non-empty list of positive numbers (entries per "
                              f"parameter tensor), got {self.dofs!r}")

    def fit(self, features: Any) -> FittedChiSquare:
        """Fits on f[N, F], N >= 2, F = len(dofs)."""
        dofs = np.asarray(self.dofs, dtype=np.float64)
        x = _as_matrix(features, "chi_square: fit features")
        if x.shape[1] != dofs.size:
            raise OodgenError(f"chi_square: got {dofs.size} dofs but {x.shape[1]} features per example; "
                              "pass one dof (tensor size) per feature")
        selection, x = select_features(x, "chi_square", min_examples=2, positive=True)
        dofs = dofs[selection.kept]
        return FittedChiSquare(selection, dofs, x.mean(axis=0) / dofs, self.of_log)


@dataclasses.dataclass(frozen=True, eq=False)
class FittedGaussianMixture(_ScoredByDensity):
    """A scikit-learn full-covariance GMM on standardised (optionally log) kept features.

    `cv_log_likelihood` maps each candidate number of components to its mean held-out log-likelihood
    per example (of the standardised features); empty when the number was fixed.
    """
    selection: FeatureSelection
    standardizer: Standardizer
    model: GaussianMixture
    log_features: bool
    cv_log_likelihood: dict[int, float]

    @property
    def n_components(self) -> int:
        return int(self.model.n_components)

    def log_density(self, features: Any) -> np.ndarray:
        """f[M, F] -> f64[M]: log density of the unstandardised kept features (of log f if log_features)."""
        x = self.selection.apply(features)
        z = self.standardizer(np.log(x) if self.log_features else x)
        return self.model.score_samples(z) + self.standardizer.log_det


def _mixture(n_components: int, seed: int, reg_covar: float) -> GaussianMixture:
    return GaussianMixture(n_components, covariance_type="full", reg_covar=reg_covar, random_state=seed)


@dataclasses.dataclass(frozen=True)
class GaussianMixtureDensity:
    """Standardise, then a full-covariance Gaussian mixture (Mahmood et al.'s MSMA auxiliary model).

    `n_components`: an int fixes it; a sequence of candidates picks the one with the highest mean
    held-out log-likelihood over `folds`-fold cross-validation (shuffled with `seed`; ties go to fewer
    components), then refits on everything. Candidates larger than the smallest cross-validation training
    fold are dropped with a warning (an error if none is left). MSMA used 2–20 components with 10 folds.
    With `log_features` the mixture is on log f (features must be positive) and the density is that of
    log f. Log densities include the standardisation's Jacobian, so they are densities of the
    unstandardised (log) features.
    """
    n_components: int | Sequence[int] = (1, 2, 4, 8)
    folds: int = 5
    log_features: bool = False
    seed: int = 0
    reg_covar: float = 1e-6

    def __post_init__(self):
        candidates = np.atleast_1d(np.asarray(self.n_components))
        if candidates.ndim != 1 or candidates.size == 0 or candidates.dtype.kind not in "iu" or candidates.min() < 1:
            raise OodgenError(f"gmm: n_components must be a positive int or a list of them, got {self.n_components!r}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, (int, np.integer)) or self.folds < 2:
            raise OodgenError(f"gmm: folds must be an int >= 2 for cross-validation, got {self.folds!r}")

    def _candidates(self) -> list[int]:
        return sorted({int(k) for k in np.atleast_1d(self.n_components)})

    def _cross_validate(self, z: np.ndarray) -> dict[int, float]:
        """Mean held-out log-likelihood per example of standardised z f[N, K] for each candidate."""
        splits = list(KFold(self.folds, shuffle=True, random_state=self.seed).split(z))
        smallest = min(len(train) for train, _ in splits)
        candidates = [k for k in self._candidates() if k <= smallest]
        too_many = [k for k in self._candidates() if k > smallest]
        if not candidates:
            raise OodgenError(f"gmm: every candidate n_components {too_many} exceeds the {smallest} examples of a "
                              "cross-validation training fold; use fewer components or more fit examples")
        if too_many:
            warnings.warn(f"gmm: dropped candidate n_components {too_many}, more than the {smallest} examples of a "
                          f"{self.folds}-fold cross-validation training fold; choosing among {candidates}",
                          stacklevel=4)
        return {k: float(np.mean(np.concatenate([
            _mixture(k, self.seed, self.reg_covar).fit(z[train]).score_samples(z[test]) for train, test in splits])))
            for k in candidates}

    def fit(self, features: Any) -> FittedGaussianMixture:
        """Fits on f[N, F]; N >= max(2, n_components) when fixed, N >= folds when cross-validating."""
        fixed = isinstance(self.n_components, (int, np.integer))
        needed = max(2, int(self.n_components)) if fixed else max(2, self.folds)
        selection, x = select_features(features, "gmm", min_examples=needed, log=self.log_features)
        standardizer = Standardizer.fit(np.log(x) if self.log_features else x)
        z = standardizer(np.log(x) if self.log_features else x)
        cv = {} if fixed else self._cross_validate(z)
        best = int(self.n_components) if fixed else max(cv, key=lambda k: (cv[k], -k))
        model = _mixture(best, self.seed, self.reg_covar).fit(z)
        return FittedGaussianMixture(selection, standardizer, model, self.log_features, cv)


@dataclasses.dataclass(frozen=True, eq=False)
class FittedKNN:
    """Nearest-neighbour index over the standardised kept fit features (of log f if log_features)."""
    selection: FeatureSelection
    standardizer: Standardizer
    index: NearestNeighbors
    k: int
    log_features: bool = False

    def score(self, features: Any) -> np.ndarray:
        """f[M, F] -> f64[M]: Euclidean distance to the k-th nearest fit example in standardised units.

        A fit example scored against its own fit set is its own nearest neighbour (distance 0), so its
        score is the distance to its (k−1)-th other neighbour.
        """
        x = self.selection.apply(features)
        z = self.standardizer(np.log(x) if self.log_features else x)
        distances, _ = self.index.kneighbors(z, n_neighbors=self.k)
        return distances[:, -1]


@dataclasses.dataclass(frozen=True)
class KNNDistance:
    """Distance to the k-th nearest neighbour in the standardised fit set (MSMA's kNN, k = 5); not a density.
    With `log_features` the neighbours are found among standardised log f (features must be positive)."""
    k: int = 5
    log_features: bool = False

    def __post_init__(self):
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise OodgenError(f"knn: k must be a positive int, got {self.k!r}")

    def fit(self, features: Any) -> FittedKNN:
        """Fits on f[N, F], N > k."""
        selection, x = select_features(features, "knn", min_examples=self.k + 1, log=self.log_features)
        x = np.log(x) if self.log_features else x
        standardizer = Standardizer.fit(x)
        return FittedKNN(selection, standardizer, NearestNeighbors(n_neighbors=self.k).fit(standardizer(x)), self.k,
                         self.log_features)


DENSITIES: dict[str, type] = {
    "gaussian_log": GaussianLogDensity,
    "chi_square": ChiSquareDensity,
    "gmm": GaussianMixtureDensity,
    "knn": KNNDistance,
}


def fit_density(name: str, features: Any, **kwargs) -> FittedDensity:
    """Builds the density registered as `name` with `kwargs` (its fields) and fits it on f[N, F]."""
    if name not in DENSITIES:
        raise OodgenError(f"unknown density {name!r}; choose one of {sorted(DENSITIES)}")
    fields = dataclasses.fields(DENSITIES[name])
    unknown = sorted(set(kwargs) - {f.name for f in fields})
    missing = [f.name for f in fields if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        problem = f"unknown option(s) {unknown}" if unknown else f"missing option(s) {missing}"
        raise OodgenError(f"density {name!r}: {problem}; its options are {[f.name for f in fields]}")
    return DENSITIES[name](**kwargs).fit(features)


DensityOptions = dict[str, dict[str, Any]]  # density name -> {field of that density: value}
_PLACEHOLDERS = {"dofs": (1.0,)}  # stand-ins for fields a scorer supplies at fit time, to check the others


def _option_names(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(DENSITIES[name])]


def _check_one(name: str, options: Any, setting: str, supplied: Sequence[str]) -> dict[str, Any]:
    """Plain-dict copy of one density's options; OodgenError on an unknown, supplied or badly typed one."""
    where = f"{setting}.{name}"
    try:
        options = dict(options)
    except (TypeError, ValueError):
        raise OodgenError(f"{where} must map option names to values, got {options!r}; "
                          f"its options are {_option_names(name)}") from None
    taken = sorted(set(options) & set(supplied))
    if taken:
        raise OodgenError(f"{where}: option(s) {taken} are set by the scorer itself; remove them")
    allowed = [n for n in _option_names(name) if n not in supplied]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise OodgenError(f"{where}: unknown option(s) {unknown}; its options are {allowed}")
    for field in dataclasses.fields(DENSITIES[name]):
        value = options.get(field.name)
        if isinstance(field.default, bool) and field.name in options and not isinstance(value, (bool, np.bool_)):
            raise OodgenError(f"{where}.{field.name} must be True or False, got {value!r}")
    return options


def check_options(options: Any, setting: str, used: Sequence[str] = (),
                  supplied: Mapping[str, Sequence[str]] | None = None) -> DensityOptions:
    """Checks per-density options {density name: {field: value}} up front; returns a plain-dict copy.

    `options` may be a dict or a ConfigDict; `setting` names where they come from (e.g.
    "config.eval.msma.density_options") for messages. `supplied`: fields the caller sets itself per
    density (e.g. chi_square's dofs), refused here. Each density with options, and each in `used`, is built
    with them, so bad values (and, for `used`, missing required fields) fail now, in one line, not after the
    features are computed.
    """
    supplied = dict(supplied or {})
    try:
        options = dict(options or {})
    except (TypeError, ValueError):
        raise OodgenError(f"{setting} must map density names to option dicts, got {options!r}; "
                          f"e.g. {{'gmm': {{'folds': 10}}}}") from None
    unknown = sorted(str(n) for n in options if n not in DENSITIES)
    if unknown:
        raise OodgenError(f"{setting}: unknown density {unknown[0]!r}; choose from {sorted(DENSITIES)}")
    checked = {name: _check_one(name, opts, setting, supplied.get(name, ())) for name, opts in options.items()}
    for name in dict.fromkeys([*checked, *used]):
        given = {**checked.get(name, {}), **{k: _PLACEHOLDERS[k] for k in supplied.get(name, ())}}
        missing = [f.name for f in dataclasses.fields(DENSITIES[name]) if f.name not in given
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing and name in used:
            raise OodgenError(f"density {name!r} needs option(s) {missing}, which {setting}.{name} does not set "
                              f"and this scorer cannot supply; use another density")
        given.update({k: _PLACEHOLDERS[k] for k in missing})  # an unused density: check its other values
        try:
            DENSITIES[name](**given)
        except OodgenError as e:
            raise OodgenError(f"{setting}.{name}: {str(e).removeprefix(f'{name}: ')}") from None
    return checked


def merge_options(defaults: DensityOptions, options: Any) -> dict[str, Any]:
    """{density: {**defaults[density], **options[density]}}: `options` override `defaults` field by field."""
    merged = {name: dict(opts) for name, opts in defaults.items()}
    for name, opts in dict(options or {}).items():
        try:
            merged[name] = {**merged.get(name, {}), **dict(opts)}
        except (TypeError, ValueError):
            merged[name] = opts  # not a mapping: check_options says so
    return merged
