"""Feature composition: any scorers' per-example features, concatenated, under one auxiliary density.

A new detector by configuration alone, e.g. an HVAE's per-level KLs and the layer-wise gradient norms
under a Gaussian mixture:

  --config.eval.scorers=composed --config.eval.composed.features=kl_per_level,grad_norms
  --config.eval.composed.density=gmm

Each feature name (`FEATURES`) is a feature vector of a registered scorer, built with its usual settings
(`config.eval.<scorer>`) and seed. The held-out split is used once per image: when a part estimates
statistics of in-distribution data (typicality, DDPM z-scores, ...), it is fitted on the first half of the
held-out images and the density on the features of the other half (`ComposedScorer.fit_split`); otherwise
the density takes them all. The features, concatenated (f[N, F], F = Σ F_i), fit the density (any of
`oodgen.features.density.DENSITIES`). Score = −log density, or the kNN distance; higher = more OOD.
Features that are constant or non-finite on the fit set (or non-positive, for gaussian_log/chi_square)
are dropped with a warning naming them.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import chex
import ml_collections
import numpy as np

from oodgen.features import density
from oodgen.errors import OodgenError
from oodgen.features.gradients import tensor_sizes
from oodgen.scorers.base import ModelScorer
from oodgen.scorers.gradients import FEATURE_FLOOR

POSITIVE_DENSITIES = ("gaussian_log", "chi_square")  # need positive features: no standardising


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """Where a named feature comes from: `scorer`'s method `method(state, images) -> f32[N, F]`.

    method "score" takes the scorer's score as one column. `fitted`: the state is `scorer.fit(params,
    in_dist)`, else the model parameters (features of the parameters alone: that scorer's own densities
    are not needed). `nonnegative` features (norms, KLs) are floored at FEATURE_FLOOR, as grad_norms does,
    so log-space densities see no zeros. `dofs(params)`: chi-square degrees of freedom per column.
    """
    scorer: str
    description: str
    method: str = "score"
    names: str | None = None  # scorer method (state) -> column names; None: the feature's own name
    fitted: bool = True
    nonnegative: bool = False
    dofs: Callable[[chex.ArrayTree], list[int]] | None = None


FEATURES: dict[str, FeatureSource] = {
    "kl_per_level": FeatureSource("kl_per_level", "HVAE: KL(q(z_i|.) || p(z_i|z_>i)) of each latent level, nats [N, L]",
                                  "features", "feature_names", fitted=False, nonnegative=True),
    "hvae_bounds": FeatureSource("hvae_llr", "HVAE: L^{>k} for k = 0 .. L-1, nats [N, L]",
                                 "features", "feature_names", fitted=False),
    "grad_norms": FeatureSource("grad_norms", "squared gradient norm of each parameter tensor [N, n_tensors]",
                                "features", "feature_names", fitted=False, nonnegative=True, dofs=tensor_sizes),
    "msma_norms": FeatureSource("msma", "score net: ||sigma_i s(x, sigma_i)|| at each noise level [N, L]",
                                "features", "feature_names", fitted=False, nonnegative=True),
    "log_likelihood": FeatureSource("log_likelihood", "NLL bound, bits/dim [N, 1]", "features", "feature_names"),
    "hvae_llr": FeatureSource("hvae_llr", "the hvae_llr score LLR^{>k}, bits/dim [N, 1]"),
    "typicality": FeatureSource("typicality", "the typicality score |NLL - H|, bits/dim [N, 1]"),
    "likelihood_regret": FeatureSource("likelihood_regret", "the likelihood regret, bits/dim [N, 1]"),
    "input_complexity": FeatureSource("input_complexity", "NLL - compressed length (first codec), bits/dim [N, 1]"),
    "background_ratio": FeatureSource("background_ratio", "the background likelihood ratio, bits/dim [N, 1]"),
    "local_ratio": FeatureSource("local_ratio", "the full-vs-local likelihood ratio, bits/dim [N, 1]"),
    "ddpm_reconstruction": FeatureSource("ddpm_reconstruction", "mean z-scored DDPM reconstruction MSE [N, 1]"),
}


def drop_unusable(x: np.ndarray, names: list[str], what: str, positive: bool) -> np.ndarray:
    """Indices i[K] of the usable columns of fit features f[N, F]; warns naming the others.

    Dropped, as `oodgen.features.density.select_features` does: columns with a non-finite value, with a value <= 0
    when `positive`, or with zero variance. OodgenError when nothing is left.
    """
    return density.usable_columns(x, what, positive, column_names=names,
                                  hint="compose other features or fit on more varied examples")


@dataclasses.dataclass(frozen=True, eq=False)
class ComposedFitState:
    """Fitted parts and the density over the kept (optionally standardised) columns."""
    params: chex.ArrayTree
    states: dict[str, Any]           # scorer name -> its fitted state (fitted sources only)
    feature_names: tuple[str, ...]   # "<feature>/<column>", all F columns
    kept: np.ndarray                 # i[K], the columns the density uses
    standardizer: density.Standardizer | None
    fitted: Any                      # the fitted density


@dataclasses.dataclass(frozen=True)
class ComposedScorer(ModelScorer):
    """Features of several scorers (`features`, names in FEATURES) under one density (`density`).

    `standardize`: z-score each kept column with the fit set's mean and std first (gmm and knn
    standardise internally anyway; refused for gaussian_log/chi_square, which need positive features).
    `density_options`: {density: {field: value}}, passed to `oodgen.features.density.fit_density` for `density`
    (e.g. {"gmm": {"n_components": [1, 2, 4, 8], "folds": 5}}); unset fields keep the density's defaults.
    `name`: the score's key in scores.npz / metrics.json; default composed_<density>_<f1>+<f2>...
    `build_part`: scorer name -> that scorer on this model, with its own settings (build_scorer passes one that
    reads `config.eval.<part>` and resolves reference models); None: the parts with their defaults.
    """
    features: tuple[str, ...] = ()
    density: str = "gmm"
    standardize: bool = False
    name: str = ""
    units: str = ""
    density_options: dict = dataclasses.field(default_factory=dict)
    build_part: Callable[[str], ModelScorer] | None = dataclasses.field(default=None, repr=False, compare=False)
    parts: dict = dataclasses.field(init=False, repr=False, compare=False)  # scorer name -> scorer
    composes_scorers: ClassVar[bool] = True
    fits_on_data: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        from oodgen.scorers import SCORERS, build_scorer  # the registry imports this module

        features = tuple(f.strip() for f in self.features.split(",")) if isinstance(self.features, str) \
            else tuple(self.features)
        features = tuple(f for f in features if f)
        setting = "config.eval.composed"
        if not features:
            raise OodgenError(f"{setting}.features is empty; list features to compose, e.g. kl_per_level,grad_norms, "
                              f"from {sorted(FEATURES)}")
        for f in features:
            if f not in FEATURES:
                what = f"scorer {f!r} has no features to compose" if f in SCORERS else f"unknown feature {f!r}"
                raise OodgenError(f"{what} in {setting}.features; choose from {sorted(FEATURES)}")
        if len(set(features)) < len(features):
            raise OodgenError(f"{setting}.features={list(features)} lists a feature twice; list each once")
        if self.density not in density.DENSITIES:
            raise OodgenError(f"unknown density {self.density!r} in {setting}.density; "
                              f"choose from {sorted(density.DENSITIES)}")
        no_dofs = [f for f in features if FEATURES[f].dofs is None]
        if self.density == "chi_square" and no_dofs:
            raise OodgenError(f"density 'chi_square' needs degrees of freedom per feature, which {no_dofs} do not "
                              f"have (only {sorted(f for f, s in FEATURES.items() if s.dofs)}); "
                              "use gaussian_log, gmm or knn")
        object.__setattr__(self, "density_options", density.check_options(
            self.density_options, f"{setting}.density_options", used=(self.density,),
            supplied={"chi_square": ("dofs",)}))
        if self.standardize and self.density in POSITIVE_DENSITIES:
            raise OodgenError(f"{setting}.standardize=True makes features signed but density {self.density!r} needs "
                              "positive ones; set standardize=False or use gmm or knn")
        defaults = ml_collections.ConfigDict(dict(num_samples=self.num_samples, batch_size=self.batch_size,
                                                  seed=self.seed))
        build_part = self.build_part or (lambda part: build_scorer(part, self.model, defaults, self.mesh))
        parts = {}
        for f in features:
            scorer = FEATURES[f].scorer
            if scorer not in parts:
                try:
                    parts[scorer] = build_part(scorer)
                except OodgenError as e:
                    raise OodgenError(f"composed feature {f!r}: {e}") from None
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "parts", parts)
        if not self.name:
            object.__setattr__(self, "name", f"composed_{self.density}_{'+'.join(features)}")
        if not self.units:
            measure = "k-NN distance" if self.density == "knn" else f"−log density ({self.density})"
            object.__setattr__(self, "units", f"{measure} of {' + '.join(features)}")

    def _columns(self, params: chex.ArrayTree, states: dict[str, Any], images: np.ndarray) -> np.ndarray:
        blocks = []
        for f in self.features:
            source = FEATURES[f]
            part = self.parts[source.scorer]
            values = np.asarray(getattr(part, source.method)(states[source.scorer] if source.fitted else params,
                                                             images), np.float32)
            values = values[:, None] if values.ndim == 1 else values
            if values.ndim != 2 or values.shape[0] != len(images):
                raise OodgenError(f"composed feature {f!r} gave shape {values.shape} for {len(images)} images; "
                                  "expected [N, F]")
            blocks.append(np.maximum(values, FEATURE_FLOOR) if source.nonnegative else values)
        return np.concatenate(blocks, axis=1)

    def _names(self, params: chex.ArrayTree, states: dict[str, Any]) -> tuple[str, ...]:
        names = []
        for f in self.features:
            source = FEATURES[f]
            if source.names is None:
                names.append(f)
            else:
                method = getattr(self.parts[source.scorer], source.names)
                names += [f"{f}/{n}" for n in method(states[source.scorer] if source.fitted else params)]
        return tuple(names)

    def fit_split(self, num_images: int) -> tuple[slice, slice]:
        """(images the parts fit on, images the density fits on), disjoint parts of N held-out images.

        When a fitted part estimates statistics from data (`fits_on_data`: typicality's Ĥ and threshold,
        the DDPM's z-scores, ...), it takes the first ⌊N/2⌋ images and the density the other N − ⌊N/2⌋,
        so the density sees the parts' outputs on images they were not fitted on. Otherwise the density
        takes all N.
        """
        if not any(part.fits_on_data for scorer, part in self.parts.items() if scorer in self._fitted_parts()):
            return slice(0, 0), slice(0, num_images)
        if num_images < 4:
            raise OodgenError(f"{self.name}: {num_images} held-out images cannot be split between fitting the "
                              "parts and the density; fit on at least 4 (config.eval.max_fit_examples)")
        return slice(0, num_images // 2), slice(num_images // 2, num_images)

    def _fitted_parts(self) -> set[str]:
        return {FEATURES[f].scorer for f in self.features if FEATURES[f].fitted}

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> ComposedFitState:
        """Fits the parts that need it, then the density on the features of other held-out images
        (`fit_split`)."""
        for_parts, for_density = self.fit_split(len(in_dist))
        states = {scorer: part.fit(params, in_dist[for_parts]) for scorer, part in self.parts.items()
                  if scorer in self._fitted_parts()}
        in_dist = in_dist[for_density]
        x = self._columns(params, states, in_dist).astype(np.float64)
        names = self._names(params, states)
        if len(names) != x.shape[1]:
            raise OodgenError(f"{self.name}: {x.shape[1]} feature columns but {len(names)} names; a part's "
                              "feature_names does not match its features")
        kept = drop_unusable(x, list(names), self.name, positive=self.density in POSITIVE_DENSITIES)
        x = x[:, kept]
        standardizer = density.Standardizer.fit(x) if self.standardize else None
        kwargs = dict(self.density_options.get(self.density, {}))
        if self.density == "chi_square":
            dofs = np.concatenate([np.asarray(FEATURES[f].dofs(params), np.float64) for f in self.features])
            kwargs["dofs"] = dofs[kept]
        fitted = density.fit_density(self.density, x if standardizer is None else standardizer(x), **kwargs)
        return ComposedFitState(params, states, names, kept, standardizer, fitted)

    def features_of(self, state: ComposedFitState, images: np.ndarray) -> np.ndarray:
        """All F concatenated feature columns (`state.feature_names`; norms and KLs floored), f32[N, F]."""
        return self._columns(state.params, state.states, images)

    def score(self, state: ComposedFitState, images: np.ndarray) -> np.ndarray:
        """f32[N]: −log density (or kNN distance) of the kept, optionally standardised features."""
        x = self.features_of(state, images).astype(np.float64)[:, state.kept]
        x = x if state.standardizer is None else state.standardizer(x)
        return state.fitted.score(x).astype(np.float32)
