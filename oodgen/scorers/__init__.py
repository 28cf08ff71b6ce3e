"""OOD scorers: each is fitted on in-distribution data, then gives one score per image (higher = OOD)."""

import ml_collections
from jax.sharding import Mesh

from oodgen.errors import OodgenError
from oodgen.scorers.base import Scorer
from oodgen.scorers.complexity import InputComplexityScorer
from oodgen.scorers.composed import ComposedScorer
from oodgen.scorers.diffusion import DDPMReconstructionScorer
from oodgen.scorers.ensemble import EnsembleScorer
from oodgen.scorers.gradients import GradientNormScorer
from oodgen.scorers.hierarchical import HierarchicalLLRScorer
from oodgen.scorers.likelihood import LikelihoodScorer
from oodgen.scorers.ratios import BackgroundRatioScorer, LocalRatioScorer
from oodgen.scorers.regret import LikelihoodRegretScorer
from oodgen.scorers.score_matching import MSMAScorer
from oodgen.scorers.typicality import TypicalityScorer

SCORERS = {
    "log_likelihood": LikelihoodScorer,
    "hvae_llr": HierarchicalLLRScorer,
    "typicality": TypicalityScorer,
    "grad_norms": GradientNormScorer,
    "likelihood_regret": LikelihoodRegretScorer,
    "input_complexity": InputComplexityScorer,
    "background_ratio": BackgroundRatioScorer,
    "local_ratio": LocalRatioScorer,
    "msma": MSMAScorer,
    "ddpm_reconstruction": DDPMReconstructionScorer,
    "ensemble": EnsembleScorer,
    "composed": ComposedScorer,
}


def build_scorer(name: str, model, eval_config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Scorer:
    """The scorer registered as `name`, configured from `config.eval`.

    Scorers that produce a family of scores in one pass (e.g. LLR^{>k} for every k) also have
    `score_all(state, images) -> {score name: f32[N]}`. Scorer-specific settings come from
    `config.eval.<name>` when present, e.g. `config.eval.typicality.alpha`.
    """
    if name not in SCORERS:
        raise OodgenError(f"unknown scorer {name!r} in config.eval.scorers; choose from {sorted(SCORERS)}")
    extra = dict(eval_config.get(name, None) or {}) if eval_config is not None else {}
    if getattr(SCORERS[name], "takes_eval_config", False):  # built from other scorers' settings (composed)
        extra["eval_config"] = eval_config
    try:
        return SCORERS[name](model=model, num_samples=eval_config.num_samples, batch_size=eval_config.batch_size,
                             seed=eval_config.seed, mesh=mesh, **extra)
    except TypeError as e:
        raise OodgenError(f"bad settings in config.eval.{name}: {e}") from None
