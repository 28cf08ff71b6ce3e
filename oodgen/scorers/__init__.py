"""OOD scorers: each is fitted on in-distribution data, then gives one score per image (higher = OOD)."""

from collections.abc import Callable

import ml_collections
from jax.sharding import Mesh

from oodgen.errors import OodgenError
from oodgen.models.capabilities import check_pair
from oodgen.scorers.base import Scorer
from oodgen.scorers.complexity import InputComplexityScorer
from oodgen.scorers.composed import ComposedScorer
from oodgen.scorers.diffusion import DDPMReconstructionScorer
from oodgen.scorers.ensemble import EnsembleScorer
from oodgen.scorers.gradients import GradientNormScorer
from oodgen.scorers.hierarchical import HierarchicalLLRScorer, KLPerLevelScorer
from oodgen.scorers.likelihood import LikelihoodScorer
from oodgen.scorers.ratios import BackgroundRatioScorer, LocalRatioScorer, Reference
from oodgen.scorers.regret import LikelihoodRegretScorer
from oodgen.scorers.score_matching import MSMAScorer
from oodgen.scorers.typicality import TypicalityScorer

SCORERS = {
    "log_likelihood": LikelihoodScorer,
    "hvae_llr": HierarchicalLLRScorer,
    "kl_per_level": KLPerLevelScorer,
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
REFERENCE_SETTING = "workdir"  # config.eval.<scorer>.workdir: where the evaluation layer finds a reference model


def build_scorer(name: str, model, eval_config: ml_collections.ConfigDict, mesh: Mesh | None = None,
                 references: Callable[[str], Reference] | None = None) -> Scorer:
    """The scorer registered as `name`, configured from `config.eval`.

    Its own settings come from `config.eval.<name>` when present, e.g. `config.eval.typicality.alpha`; the
    shared ones (num_samples, batch_size, seed) from `config.eval`. The (scorer, model) pair is checked first:
    a model that does not offer what the scorer requires is refused in one line. Scorers that need a second
    trained model (`needs_reference`) get it from `references(name)`, which the caller provides (evaluation
    resolves `config.eval.<name>.workdir`).
    """
    if name not in SCORERS:
        raise OodgenError(f"unknown scorer {name!r} in config.eval.scorers; choose from {sorted(SCORERS)}")
    cls = SCORERS[name]
    check_pair(name, cls.requires, model)
    extra = dict(eval_config.get(name, None) or {}) if eval_config is not None else {}
    if cls.needs_reference:
        extra.pop(REFERENCE_SETTING, None)
        extra["reference"] = references(name) if references is not None else None
    if cls.composes_scorers:  # built from other scorers, each with its own settings (composed)
        extra["build_part"] = lambda part: build_scorer(part, model, eval_config, mesh, references)
    try:
        return cls(model=model, num_samples=eval_config.num_samples, batch_size=eval_config.batch_size,
                   seed=eval_config.seed, mesh=mesh, **extra)
    except TypeError as e:
        raise OodgenError(f"bad settings in config.eval.{name}: {e}") from None
