"""The plain likelihood score (Nalisnick et al. 2019): negative log-likelihood in bits per dimension.

Higher = more OOD. This is the score that fails on Fashion-MNIST -> MNIST (the paradox).
"""

import dataclasses
from typing import ClassVar

import chex
import numpy as np

from oodgen.models.likelihoods import negative_log_likelihood_bpd
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer


@dataclasses.dataclass(frozen=True)
class LikelihoodScorer(ModelScorer):
    """−log p(x) / (D ln 2) with the model's importance-weighted bound over `num_samples` samples.

    On a Bernoulli model this is the NLL of the dynamically binarised image (at most 1 bit/dim), not of
    the 8-bit one; the units say which.
    """
    name: str = "log_likelihood"
    units: str = ""
    requires: ClassVar = (caps.LIKELIHOOD,)

    def __post_init__(self):
        super().__post_init__()
        if not self.units:
            of = "binarised" if caps.likelihood_kind(self.model.capabilities) == caps.BINARY_LIKELIHOOD else "8-bit"
            object.__setattr__(self, "units", f"negative log-likelihood of the {of} image (bits/dim)")

    def score(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] -> f32[N]: negative log-likelihood bound in bits/dim."""
        return self.map_model(negative_log_likelihood_bpd, state, images)

    def features(self, state: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """The score as one feature: negative log-likelihood bound in bits/dim, f32[N, 1]."""
        return self.score(state, images)[:, None]

    def feature_names(self, state: chex.ArrayTree) -> tuple[str, ...]:
        """("nll_bpd",)."""
        del state
        return ("nll_bpd",)
