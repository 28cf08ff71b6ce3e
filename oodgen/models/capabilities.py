"""What a model offers, declared in one place per model, and what a scorer needs from it.

Each model's `capabilities` is a frozenset of the names below. A scorer declares `requires`: a tuple of
requirements, each a tuple of alternatives (any one suffices). `check_pair` checks the two before any work
and refuses an invalid pair in one line. Nothing outside `models/` tests a model's type or probes it.
"""

from oodgen.errors import OodgenError

PIXEL_LIKELIHOOD = "pixel_likelihood"      # log p of the 8-bit pixels in nats, exact or a stated bound: log_prob
BINARY_LIKELIHOOD = "binary_likelihood"    # a bound on dynamically binarised pixels (Bernoulli): log_prob
DENOISING_SURROGATE = "denoising_surrogate"  # a denoising loss, NOT a likelihood: denoising_loss
LATENT_LEVELS = "latent_levels"            # per-level KL terms and L^{>k}: elbo_terms, log_weights, bounds
ENCODER = "encoder"                        # an inference network, by module structure: encoder_module
EVAL_NLL = "eval_nll"                      # a deterministic evaluation-mode per-example NLL: eval_nll
SCORE_FUNCTION = "score_function"          # s(x, σ) and its norms at every noise level: score, msma_features
RECONSTRUCTION = "reconstruction"          # noise to step t and denoise back: reconstruct, reconstruction_errors
PER_PIXEL = "per_pixel"                    # autoregressive log P(x_ij | x_<ij): log_prob_per_pixel

DESCRIPTIONS = {
    PIXEL_LIKELIHOOD: "a likelihood of the 8-bit pixels",
    BINARY_LIKELIHOOD: "a likelihood bound of binarised pixels",
    DENOISING_SURROGATE: "a denoising loss",
    LATENT_LEVELS: "per-level latent terms and L^{>k} bounds (a hierarchical VAE)",
    ENCODER: "an encoder (inference network)",
    EVAL_NLL: "a deterministic evaluation-mode NLL",
    SCORE_FUNCTION: "a noise-conditional score function",
    RECONSTRUCTION: "diffusion reconstruction",
    PER_PIXEL: "per-pixel autoregressive likelihoods",
}
DATA_OF = {PIXEL_LIKELIHOOD: "8-bit pixels", BINARY_LIKELIHOOD: "binarised pixels"}  # what a likelihood is of
LIKELIHOOD = (PIXEL_LIKELIHOOD, BINARY_LIKELIHOOD)  # either likelihood: a requirement with two alternatives

Requirement = tuple[str, ...]


def describe(requirement: Requirement) -> str:
    """The requirement in words, e.g. 'a likelihood of the 8-bit pixels'."""
    if set(requirement) == set(LIKELIHOOD):
        return "a likelihood (of 8-bit or binarised pixels)"
    return " or ".join(DESCRIPTIONS[c] for c in requirement)


def missing(requires: tuple[Requirement, ...], capabilities: frozenset[str]) -> list[Requirement]:
    """The requirements none of whose alternatives is in `capabilities`."""
    return [req for req in requires if not any(c in capabilities for c in req)]


def likelihood_kind(capabilities: frozenset[str]) -> str | None:
    """PIXEL_LIKELIHOOD, BINARY_LIKELIHOOD or None: what a model's `log_prob` is a likelihood of."""
    return next((c for c in LIKELIHOOD if c in capabilities), None)


def check_pair(scorer_name: str, requires: tuple[Requirement, ...], model) -> None:
    """OodgenError, one line, unless `model` offers everything a scorer named `scorer_name` requires.

    The message names the scorer, the model (`model.summary`) and the fix (`model.how_to_offer(cap)` when
    the model could offer it with other settings, else: another scorer).
    """
    if not isinstance(model, DeclaresCapabilities):
        raise OodgenError(f"{scorer_name}: a {type(model).__name__} declares no capabilities; models subclass "
                          "oodgen.models.capabilities.DeclaresCapabilities and say what they offer")
    lacking = missing(requires, model.capabilities)
    if not lacking:
        return
    req = lacking[0]
    fixes = [fix for c in req if (fix := model.how_to_offer(c))]
    fix = fixes[0] + " or another scorer" if fixes else "use another scorer or model (README: which scorer runs on which model)"
    raise OodgenError(f"{scorer_name} needs {describe(req)}; this {model.summary}: {fix}")


class DeclaresCapabilities:
    """Base of every model dataclass: what it offers (`capabilities`), in words (`summary`), and how other
    settings of it would offer a capability it lacks (`how_to_offer`)."""
    kind: str = ""  # the config's model.name; a ClassVar in each model

    @property
    def capabilities(self) -> frozenset[str]:
        raise NotImplementedError

    @property
    def summary(self) -> str:
        """'<kind> <what it models>', e.g. 'vae models binarised pixels (model.likelihood=bernoulli)'."""
        raise NotImplementedError

    def how_to_offer(self, capability: str) -> str | None:
        """The setting that would give this model `capability`, e.g. 'use model.likelihood=...'; None if none."""
        del capability
        return None
