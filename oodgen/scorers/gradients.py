"""Layer-wise gradient-norm scores (Dauncey et al.): f_l = ‖∇_{θ_l} NLL(x)‖² per parameter tensor,
put under a density fitted on held-out in-distribution data; score = −log density (higher = more OOD).

The loss is the model's deterministic evaluation-mode per-example NLL (`eval_nll`: no dropout or other
training-only noise), or, for a model whose loss is a denoising surrogate (score net, DDPM), that denoising
loss, named as such in the units. With `group_size` G > 1, the
"group" variant: the gradient of the loss summed over a group of G images. Each set is first shuffled by a
fixed permutation of its positions, drawn from the scorer's seed (`group_order`), so that groups are random
whatever the storage order (letters font by font, MNIST by class); the images at positions [gG, (g+1)G)
of the shuffled order form group g, and the image at shuffled position j gets the key fold_in(key(seed), j).
Every image gets its group's score, in the input order; `groups(N)` gives each image's group id (bootstrap
whole groups: `oodgen.evaluation.metrics.bootstrap_auroc_ci`). A ragged last group is completed with copies of its
last image. The fit set is shuffled the same way and gives one row per group.

Density settings: `density_options` {density: {field: value}} over GRAD_DENSITY_OPTIONS (Dauncey et al.:
independent Gaussians on log f, the chi-square of f), passed to `oodgen.features.density.fit_density`.
"""

import dataclasses
import functools
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from oodgen import sharding
from oodgen.features import density
from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.features.gradients import group_grad_sq_norms, tensor_names, tensor_sizes
from oodgen.features.gradients_fast import KERNEL_CHOICES, KERNELS, fast_grad_sq_norms
from oodgen.scorers.base import ModelScorer
from oodgen.validation import check_images

METHODS = ("fast", "vmap")
# Exactly-zero norms happen (a layer whose input is all zeros, e.g. a black image): the log-space densities
# see them as the smallest positive float32 instead, i.e. as extreme (and so OOD) values.
FEATURE_FLOOR = float(np.finfo(np.float32).tiny)


def feature_loss(model):
    """The per-example loss the features are gradients of: `model.eval_nll` (nats), or `model.denoising_loss`
    for a denoising surrogate. (params, images uint8 [B, ...], keys key[B]) -> f32[B]."""
    return model.eval_nll if caps.EVAL_NLL in model.capabilities else model.denoising_loss


def feature_loss_name(model) -> str:
    """'NLL' or 'denoising loss': what `feature_loss(model)` is, for units and reports."""
    return "NLL" if caps.EVAL_NLL in model.capabilities else "denoising loss"


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def gradient_features(model, method: str, group_size: int, chunk_size: int, kernel: str, params: chex.ArrayTree,
                      images: jax.Array, keys: jax.Array) -> jax.Array:
    """Squared gradient norms per tensor, one row per image (its group's row when G > 1): f32[B, n_tensors]."""
    if group_size == 1 and method == "fast":
        return fast_grad_sq_norms(feature_loss(model), params, images, keys, chunk_size, kernel)
    norms = group_grad_sq_norms(feature_loss(model), params, images, keys, group_size, chunk_size)
    return jnp.repeat(norms, group_size, axis=0)


# Per-density defaults: gaussian_log and chi_square of log f as in Dauncey et al. (the chi-square with the
# correct Jacobian, + Σ log f); gmm and knn as for other features, the mixture on log f (norms span decades).
GRAD_DENSITY_OPTIONS: density.DensityOptions = {
    "gaussian_log": {"of_log": True},
    "chi_square": {"of_log": False},   # the density of f itself; of_log=True: of log f, the reference's space
    "gmm": {"n_components": [1, 2, 4, 8], "folds": 5, "log_features": False},
    "knn": {"k": 5},
}


def group_order(num_images: int, group_size: int, seed: int) -> np.ndarray:
    """i[N]: the shuffled order images are grouped in (position j holds image order[j], of group j // G).

    A permutation of positions drawn from `seed` alone (numpy default_rng(seed).permutation(N)); the
    identity when G = 1.
    """
    if group_size == 1:
        return np.arange(num_images)
    return np.random.default_rng(seed).permutation(num_images)


@dataclasses.dataclass(frozen=True)
class GradientFitState:
    params: chex.ArrayTree
    densities: dict  # name -> fitted density


@dataclasses.dataclass(frozen=True)
class GradientNormScorer(ModelScorer):
    """Scores `grad_<density>` for each density in `densities` ("gaussian_log", "chi_square", "gmm", "knn")."""
    densities: tuple[str, ...] = ("gaussian_log", "chi_square", "gmm")
    group_size: int = 1
    method: str = "fast"
    chunk_size: int = 8
    kernel: str = "timed"  # the fast path's per-layer kernel choice: "timed", "flops" or one kernel
    name: str = "grad_norms"
    units: str = ""
    density_options: dict = dataclasses.field(default_factory=dict)  # over GRAD_DENSITY_OPTIONS, field by field
    requires: ClassVar = ((caps.EVAL_NLL, caps.DENOISING_SURROGATE),)
    fits_on_data: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if not self.units:
            object.__setattr__(self, "units", f"−log density of squared gradient norms of the "
                                              f"{feature_loss_name(self.model)}")
        if self.method not in METHODS:
            raise OodgenError(f"grad_norms method {self.method!r}; use one of {METHODS}")
        if self.group_size < 1 or self.batch_size % self.group_size:
            raise OodgenError(f"grad_norms group_size={self.group_size} must be >= 1 and divide the evaluation "
                              f"batch size {self.batch_size}")
        kernels = sorted({*KERNEL_CHOICES, *KERNELS["dense"], *KERNELS["conv"]})
        if self.kernel not in kernels:
            raise OodgenError(f"grad_norms kernel {self.kernel!r}; use one of {kernels}")
        unknown = [d for d in self.densities if d not in density.DENSITIES]
        if unknown:
            raise OodgenError(f"unknown density {unknown[0]!r} for grad_norms; choose from {sorted(density.DENSITIES)}")
        options = density.merge_options(GRAD_DENSITY_OPTIONS, self.density_options)
        object.__setattr__(self, "density_options", density.check_options(
            options, "config.eval.grad_norms.density_options", used=self.densities, supplied={"chi_square": ("dofs",)}))

    def groups(self, num_images: int) -> np.ndarray:
        """i[N]: the group id of each of N images, in input order (one id: one shared score); arange(N) if G = 1."""
        ids = np.empty(num_images, np.int64)
        ids[group_order(num_images, self.group_size, self.seed)] = np.arange(num_images) // self.group_size
        return ids

    def group_features(self, params: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """f32[ceil(N / G), n_tensors]: squared gradient norms of each group's summed loss, group g = the images
        at positions [gG, (g+1)G) of `group_order`, the last completed with copies of its last image."""
        images = check_images(images, self.model.image_shape)
        if self.group_size > 1:
            images = images[group_order(images.shape[0], self.group_size, self.seed)]
        fn = functools.partial(gradient_features, self.model, self.method, self.group_size, self.chunk_size,
                               self.kernel)
        rows = sharding.map_batches(fn, _complete_last_group(images, self.group_size),
                                    rng=jax.random.key(self.seed), batch_size=self.batch_size, mesh=self.mesh,
                                    desc=self.name, params=params, block=self.group_size)
        return rows[::self.group_size]

    def features(self, params: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """f32[N, n_tensors]: squared gradient norm of every parameter tensor (see `oodgen.features.gradients.tensor_names`),
        in input order; with G > 1 each image's row is its group's (`groups`, `group_features`).

        The densities see max(f, FEATURE_FLOOR); this returns the raw norms.
        """
        rows = self.group_features(params, images)
        return rows if self.group_size == 1 else rows[self.groups(np.shape(images)[0])]

    def feature_names(self, params: chex.ArrayTree) -> tuple[str, ...]:
        """Column names of `features`: the '/'-joined path of each parameter tensor."""
        return tuple(tensor_names(params))

    def fit(self, params: chex.ArrayTree, in_dist: np.ndarray) -> GradientFitState:
        """Fits every density on the gradient features of held-out in-distribution images (one row per group)."""
        features = np.maximum(self.group_features(params, in_dist), FEATURE_FLOOR)
        fitted = {}
        for name in self.densities:
            kwargs = {"dofs": tensor_sizes(params)} if name == "chi_square" else {}
            fitted[name] = density.fit_density(name, features, **self.density_options.get(name, {}), **kwargs)
        return GradientFitState(params, fitted)

    def score_all(self, state: GradientFitState, images: np.ndarray) -> dict[str, np.ndarray]:
        """{"grad_<density>[_group<G>]": f32[N]}: −log density (or kNN distance) of each image's features, in
        input order; with G > 1 every image of a group (`groups`) has the group's score."""
        features = np.maximum(self.group_features(state.params, images), FEATURE_FLOOR)
        ids = self.groups(np.shape(images)[0])
        suffix = f"_group{self.group_size}" if self.group_size > 1 else ""
        return {f"grad_{name}{suffix}": fitted.score(features).astype(np.float32)[ids]
                for name, fitted in state.densities.items()}

    def score(self, state: GradientFitState, images: np.ndarray) -> np.ndarray:
        """−log density under the first of `densities`, f32[N]."""
        return next(iter(self.score_all(state, images).values()))


def _complete_last_group(images: np.ndarray, group_size: int) -> np.ndarray:
    missing = -images.shape[0] % group_size
    return images if not missing else np.concatenate([images, np.repeat(images[-1:], missing, axis=0)])
