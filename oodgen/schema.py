"""The declared schema of a config: every key, its type and range, and the cross-field rules; checked up front.

`validate_config(config, for_)` checks a whole config (a ConfigDict, or the dict of a saved config.json) before
any file is written or any data is loaded, and raises one OodgenError naming the key, the bad value, what is
allowed and the fix, e.g. `config.train.batch_size=0 must be a positive integer (>= 1); pass e.g.
--config.train.batch_size=64`. A key the schema does not declare is an error, as it is on the command line.

The schema is the table `SCHEMA` (dotted key -> `Field`), plus `MODEL_SCHEMAS` (config.model's keys, which
depend on config.model.name) and the per-density options of the scorers that take `density_options`. To add a
config key, add its `Field` here; tests/test_bad_input.py fails while a key of a file in configs/ has none.
"""

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from oodgen.errors import OodgenError

Check = Callable[[str, Any], "str | None"]  # (dotted key, value) -> a message when the value is bad, else None


@dataclasses.dataclass(frozen=True)
class Field:
    """One config key: `check` (value -> problem or None), a one-line `help`, an `example` value for the fix
    (as it is typed after --config.<key>=), and whether older or smaller configs may leave it out."""
    check: Check
    help: str
    example: str
    required: bool = True


def show(value: Any) -> str:
    """A value as messages show it: strings quoted, tuples and lists as Python writes them."""
    return repr(value) if isinstance(value, (str, list, tuple)) else str(value)


def _bad(key: str, value: Any, problem: str) -> str:
    sep = "" if problem.startswith(";") else " "
    return f"config.{key}={show(value)}{sep}{problem}"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


# --- checks ------------------------------------------------------------------------------------------------

def integer(minimum: int, note: str = "") -> Check:
    """An int >= minimum (bools are not ints here)."""
    rule = ("must be a positive integer (>= 1)" if minimum == 1 else
            f"must be an integer >= {minimum}" if minimum <= 0 else f"must be at least {minimum} (an integer)")
    rule += f" {note}" if note else ""

    def check(key: str, value: Any) -> str | None:
        return None if _is_int(value) and value >= minimum else _bad(key, value, rule)
    return check


def all_or_positive(note: str = "") -> Check:
    """-1 (all) or an int >= 1."""
    rule = "must be -1 (all) or a positive integer" + (f" {note}" if note else "")

    def check(key: str, value: Any) -> str | None:
        return None if _is_int(value) and (value == -1 or value >= 1) else _bad(key, value, rule)
    return check


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite int or float in the interval given by `low`/`high` (None: unbounded), open or closed ends."""
    if low is not None and high is not None:
        rule = f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"must be a number {'>' if low_open else '>='} {low:g}"
    else:
        rule = "must be a finite number"

    def check(key: str, value: Any) -> str | None:
        ok = _is_number(value) and (low is None or (value > low if low_open else value >= low)) and \
            (high is None or (value < high if high_open else value <= high))
        return None if ok else _bad(key, value, rule)
    return check


def _choices_text(options: Sequence[str]) -> str:
    quoted = [repr(o) for o in options]
    return f"use {quoted[0]} or {quoted[1]}" if len(quoted) == 2 else f"use one of {', '.join(quoted)}"


def choice(*options: str) -> Check:
    """One string of `options`."""
    def check(key: str, value: Any) -> str | None:
        return None if isinstance(value, str) and value in options else _bad(key, value, f"; {_choices_text(options)}")
    return check


def boolean() -> Check:
    def check(key: str, value: Any) -> str | None:
        return None if isinstance(value, bool) else _bad(key, value, "must be True or False")
    return check


def string(non_empty: bool = False) -> Check:
    def check(key: str, value: Any) -> str | None:
        if isinstance(value, str) and (value.strip() or not non_empty):
            return None
        return _bad(key, value, "must be a non-empty string" if non_empty else "must be a string")
    return check


def string_list(options: Sequence[str] | None = None, noun: str = "name", non_empty: bool = False,
                comma_string: bool = False) -> Check:
    """A list or tuple of non-empty strings, each one of `options` (when given), listed once each; with
    `comma_string` also one comma-separated string (as the scorer that reads it accepts)."""
    def check(key: str, value: Any) -> str | None:
        if comma_string and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            return _bad(key, value, f"must be a list of non-empty strings ({noun}s)")
        if non_empty and not value:
            return f"config.{key} is empty; name at least one {noun}"
        unknown = [v for v in value if options is not None and v not in options]
        if unknown:
            return f"unknown {noun} {unknown[0]!r} in config.{key}; choose from {sorted(options)}"
        twice = sorted({v for v in value if list(value).count(v) > 1})
        if twice:
            return f"config.{key}={show(value)} lists {twice[0]!r} twice; list each {noun} once"
        return None
    return check


def int_tuple(minimum: int, min_length: int = 1, length: int | None = None) -> Check:
    """A list or tuple of ints >= minimum: `length` of them, or at least `min_length`."""
    size = f"a tuple of {length}" if length is not None else \
        "a non-empty tuple of" if min_length == 1 else f"a tuple of at least {min_length}"
    rule = f"must be {size} integers >= {minimum}"

    def check(key: str, value: Any) -> str | None:
        ok = isinstance(value, (list, tuple)) and all(_is_int(v) and v >= minimum for v in value) and \
            (len(value) == length if length is not None else len(value) >= min_length)
        return None if ok else _bad(key, value, rule)
    return check


def int_or_int_list(minimum: int) -> Check:
    """An int >= minimum, or a non-empty list of them (candidates)."""
    def check(key: str, value: Any) -> str | None:
        if _is_int(value) and value >= minimum:
            return None
        if isinstance(value, (list, tuple)) and value and all(_is_int(v) and v >= minimum for v in value):
            return None
        return _bad(key, value, f"must be an integer >= {minimum} or a non-empty list of them")
    return check


def zero_or_above(low: float, note: str) -> Check:
    """0 (off) or a finite number > low; `note` says what the number means."""
    def check(key: str, value: Any) -> str | None:
        ok = _is_number(value) and (value == 0 or value > low)
        return None if ok else _bad(key, value, f"must be a number > {low:g} {note}, or 0 to turn that off")
    return check


def optional(inner: Check) -> Check:
    """None, or a value `inner` accepts."""
    def check(key: str, value: Any) -> str | None:
        return None if value is None else inner(key, value)
    return check


_STEP = re.compile(r"[0-9]+")


def resume_point() -> Check:
    """"latest", "best", or a step number >= 1 written as a decimal string (an int, as the loop takes it)."""
    def check(key: str, value: Any) -> str | None:
        text = value.strip() if isinstance(value, str) else str(value) if _is_int(value) else None
        if text is not None and (text in ("latest", "best") or (_STEP.fullmatch(text) and int(text) >= 1)):
            return None
        return _bad(key, value, "is not a checkpoint to resume from; use 'latest', 'best' or the step of a "
                                "checkpoint, e.g. --config.train.resume_from=300")
    return check


# --- the declared keys -------------------------------------------------------------------------------------
# The names below are declared here (not imported) so that reading the schema imports no model or scorer
# code; tests/test_bad_input.py checks them against the registries they name.

MODEL_NAMES = ("vae", "hvae", "pixelcnn", "local_pixelcnn", "glow", "score_net", "ddpm")
SCORER_NAMES = ("log_likelihood", "hvae_llr", "kl_per_level", "typicality", "grad_norms", "likelihood_regret",
                "input_complexity", "background_ratio", "local_ratio", "msma", "ddpm_reconstruction", "ensemble",
                "composed")
DENSITY_NAMES = ("gaussian_log", "chi_square", "gmm", "knn")
FEATURE_NAMES = ("kl_per_level", "hvae_bounds", "grad_norms", "msma_norms", "log_likelihood", "hvae_llr",
                 "typicality", "likelihood_regret", "input_complexity", "background_ratio", "local_ratio",
                 "ddpm_reconstruction")
CODECS = ("png", "jpeg2000", "deflate")
GRAD_METHODS = ("fast", "vmap")
GRAD_KERNELS = ("flops", "timed", "gram", "matmul", "slices", "patches", "grouped")
MEMBER_LOOPS = ("auto", "vmap", "unroll")
LIKELIHOODS = ("bernoulli", "discretized_logistic_mixture", "categorical")

F = Field
SCHEMA: dict[str, Field] = {
    "seed": F(integer(0), "seed of initialisation, batches and training randomness", "0"),

    "data.train": F(string(True), "dataset spec of the training split (its tail is held out)", "fashion_mnist:train"),
    "data.test": F(string(True), "dataset spec of the in-distribution test set", "fashion_mnist:test"),
    "data.image_shape": F(int_tuple(1, length=3), "(height, width, channels) of every image", "(28,28,1)"),
    "data.num_validation": F(integer(1, "(images held out from the end of the training split)"),
                             "held-out images: best checkpoint and scorer fits", "5000"),
    "data.max_train_examples": F(all_or_positive("(0 would leave no training images)"),
                                 "cap on training images, -1: all", "-1"),

    "train.steps": F(integer(1), "optimiser steps in all (a re-run resumes up to it)", "2500"),
    "train.batch_size": F(integer(1), "images per step (a multiple of the device count)", "64"),
    "train.learning_rate": F(number(0, low_open=True), "peak Adam learning rate", "1e-3"),
    "train.warmup_steps": F(integer(0), "linear warm-up steps of the learning rate", "100"),
    "train.grad_clip_norm": F(number(0, low_open=True), "global gradient-norm clip", "100.0"),
    "train.log_every": F(integer(1), "steps between log lines", "50"),
    "train.checkpoint_every": F(integer(1, "(and a multiple of config.train.log_every)"),
                                "steps between checkpoints", "500"),
    "train.keep_checkpoints": F(integer(1, "(0 would keep no checkpoint to resume or evaluate from)"),
                                "latest checkpoints kept", "2"),
    "train.resume_from": F(resume_point(), "checkpoint a re-run resumes from", "latest", required=False),
    "train.divergence_factor": F(zero_or_above(1, "(a held-out loss above that many times the best one stops "
                                                  "training before it is saved)"),
                                 "stop before saving when the held-out loss passes this times the best", "3.0",
                                 required=False),
    "train.perturbation_rate": F(number(0, 1), "background model: fraction μ of sub-pixels resampled", "0.2",
                                 required=False),
    "train.l2_weight": F(number(0), "background model: L2 weight λ", "1e-4", required=False),
    "train.kl_warmup_steps": F(integer(0), "HVAE: steps of the KL weight's 0 -> 1 ramp", "3200", required=False),
    "train.free_nats": F(number(0), "HVAE: free nats per level", "2.0", required=False),
    "train.free_nats_steps": F(integer(0), "HVAE: steps the free nats are held", "3200", required=False),
    "train.free_nats_anneal_steps": F(integer(0), "HVAE: steps the free nats fall to 0", "3200", required=False),

    "ensemble.size": F(integer(1, "(1: a single model)"), "members of a deep ensemble", "5", required=False),
    "ensemble.member_loop": F(choice(*MEMBER_LOOPS), "vmap or unroll the members", "auto", required=False),
    "swag.enabled": F(boolean(), "collect SWAG statistics in the checkpoints", "True", required=False),
    "swag.start_step": F(integer(1), "SWAG: first collection after this many steps", "1500", required=False),
    "swag.collect_every": F(integer(1), "SWAG: steps between collections", "50", required=False),
    "swag.rank": F(integer(2), "SWAG: deviations kept (low-rank part)", "20", required=False),
    "distributed.coordinator_address": F(string(), "'' one process, 'auto', or HOST:PORT of process 0", "auto",
                                         required=False),
    "distributed.num_processes": F(integer(1), "processes of a multi-process run", "2", required=False),
    "distributed.process_id": F(integer(0), "this process's id, 0..num_processes-1", "0", required=False),

    "eval.ood": F(string_list(noun="OOD set"), "dataset specs of the OOD sets", "noise,constant"),
    "eval.scorers": F(string_list(SCORER_NAMES, noun="scorer"), "scorers to run", "log_likelihood"),
    "eval.num_samples": F(integer(1), "importance samples per likelihood bound", "16"),
    "eval.batch_size": F(integer(1), "images per evaluation batch", "500"),
    "eval.max_examples": F(all_or_positive("(0 would leave the sets empty)"), "per-set cap, -1: all", "-1"),
    "eval.max_fit_examples": F(all_or_positive("(0 would leave scorers nothing to fit on)"),
                               "cap on held-out images scorers fit on, -1: all", "-1", required=False),
    "eval.checkpoint": F(choice("best", "latest"), "checkpoint evaluated", "best", required=False),
    "eval.seed": F(integer(0), "seed of evaluation randomness", "1"),

    "eval.grad_norms.densities": F(string_list(DENSITY_NAMES, noun="density", non_empty=True),
                                   "densities on the gradient features", "gaussian_log,gmm", required=False),
    "eval.grad_norms.group_size": F(integer(1, "(and dividing config.eval.batch_size)"),
                                    "images sharing one gradient", "1", required=False),
    "eval.grad_norms.method": F(choice(*GRAD_METHODS), "per-example gradient method", "fast", required=False),
    "eval.grad_norms.chunk_size": F(integer(1), "examples per chunk of the fast path", "8", required=False),
    "eval.grad_norms.kernel": F(choice(*GRAD_KERNELS), "fast path per-layer kernel", "timed", required=False),
    "eval.typicality.test_batch_size": F(integer(1), "images per tested batch", "2", required=False),
    "eval.typicality.num_bootstrap": F(integer(1), "bootstrap resamples of the threshold", "1000", required=False),
    "eval.typicality.alpha": F(number(0, 1, low_open=True, high_open=True), "false-positive rate", "0.01",
                               required=False),
    "eval.likelihood_regret.num_steps": F(integer(0), "encoder optimisation steps per image", "100", required=False),
    "eval.likelihood_regret.learning_rate": F(number(0, low_open=True), "their learning rate", "2e-4",
                                              required=False),
    "eval.likelihood_regret.weight_decay": F(number(0), "their weight decay", "5e-5", required=False),
    "eval.ensemble.source": F(choice("members", "swag"), "what the ensemble scorer averages over", "members",
                              required=False),
    "eval.ensemble.num_swag_samples": F(integer(2), "SWAG draws per member", "8", required=False),
    "eval.ensemble.member_loop": F(choice(*MEMBER_LOOPS), "vmap or unroll the members", "auto", required=False),
    "eval.composed.features": F(string_list(FEATURE_NAMES, noun="feature", comma_string=True),
                                "features composed under one density", "kl_per_level,grad_norms", required=False),
    "eval.composed.density": F(choice(*DENSITY_NAMES), "the composed density", "gmm", required=False),
    "eval.composed.standardize": F(boolean(), "standardise features first", "False", required=False),
    "eval.composed.name": F(string(), "score name ('' derives one)", "nll_knn", required=False),
    "eval.input_complexity.codecs": F(string_list(CODECS, noun="codec", non_empty=True),
                                      "compressors of the complexity estimate", "png,jpeg2000", required=False),
    "eval.background_ratio.workdir": F(string(), "workdir of the trained background model", "runs/background",
                                       required=False),
    "eval.local_ratio.workdir": F(string(), "workdir of the trained local model", "runs/local", required=False),
    "eval.msma.densities": F(string_list(DENSITY_NAMES, noun="density", non_empty=True),
                             "densities on the score norms", "gmm,knn", required=False),
    "eval.ddpm_reconstruction.num_sampling_steps": F(integer(1, "(and at most config.model.num_timesteps)"),
                                                     "steps of the deterministic schedule", "100", required=False),
    "eval.ddpm_reconstruction.start_every": F(integer(1, "(and at most num_sampling_steps)"),
                                              "start points every this many steps", "4", required=False),
    "eval.hvae_llr.k": F(optional(integer(1)), "LLR^{>k}: k (None: every k)", "2", required=False),
}

DENSITY_OPTIONS: dict[str, dict[str, Field]] = {
    "gaussian_log": {"of_log": F(boolean(), "density of log f (else of f)", "True")},
    "chi_square": {"of_log": F(boolean(), "density of log f (else of f)", "False")},
    "gmm": {"n_components": F(int_or_int_list(1), "components, or candidates chosen by cross-validation", "[1,2,4]"),
            "folds": F(integer(2), "cross-validation folds", "5"),
            "log_features": F(boolean(), "mixture on log f", "False"),
            "seed": F(integer(0), "seed of the folds and fits", "0"),
            "reg_covar": F(number(0, low_open=True), "covariance regulariser", "1e-6")},
    "knn": {"k": F(integer(1), "the k of the k-th nearest neighbour", "5"),
            "log_features": F(boolean(), "neighbours among log f", "False")},
}
for _scorer in ("grad_norms", "msma", "composed"):
    for _density, _fields in DENSITY_OPTIONS.items():
        for _name, _field in _fields.items():
            SCHEMA[f"eval.{_scorer}.density_options.{_density}.{_name}"] = dataclasses.replace(_field, required=False)

_NUM_MIXTURES = F(integer(1), "mixture components of the pixel likelihood", "5", required=False)
_NUM_FILTERS = F(integer(1), "channels of the network", "32", required=False)
MODEL_SCHEMAS: dict[str, dict[str, Field]] = {
    "vae": {"latent_dim": F(integer(1), "latent dimensions", "16", required=False),
            "channels": F(int_tuple(1), "channels of each conv stage", "(32,64)", required=False),
            "likelihood": F(choice(*LIKELIHOODS), "pixel likelihood", "bernoulli", required=False),
            "num_mixtures": _NUM_MIXTURES},
    "hvae": {"width": F(integer(1), "channels of the conv levels", "32", required=False),
             "dense_width": F(integer(1), "units of the dense levels", "128", required=False),
             "latent_channels": F(int_tuple(1), "latent channels of each conv level", "(8,)", required=False),
             "latent_units": F(int_tuple(1), "latent units of each dense level", "(16,8)", required=False),
             "blocks_per_level": F(integer(1), "residual blocks per level", "1", required=False),
             "likelihood": F(choice(*LIKELIHOODS), "pixel likelihood", "bernoulli", required=False),
             "num_mixtures": _NUM_MIXTURES,
             "prior_levels": F(choice("mode", "sample"), "how L^{>k} fills the lowest k levels", "mode",
                               required=False)},
    "pixelcnn": {"num_filters": _NUM_FILTERS,
                 "num_resnets": F(integer(1), "gated resnets per stage", "1", required=False),
                 "num_scales": F(integer(1), "resolutions", "3", required=False),
                 "num_mixtures": _NUM_MIXTURES,
                 "dropout_rate": F(number(0, 1, high_open=True), "dropout in training", "0.5", required=False)},
    "local_pixelcnn": {"horizon": F(integer(1), "pixels seen on each side", "3", required=False),
                       "num_filters": _NUM_FILTERS,
                       "num_blocks": F(integer(0), "1x1 blocks after the masked conv", "2", required=False),
                       "num_mixtures": _NUM_MIXTURES,
                       "uniform_weight": F(number(0, 1), "weight of the uniform mixed in", "1e-4", required=False)},
    "glow": {"num_levels": F(integer(1), "squeeze levels", "2", required=False),
             "depth": F(integer(1), "flow steps per level", "8", required=False),
             "hidden_channels": F(integer(1), "channels of the coupling networks", "48", required=False),
             "lu_decomposition": F(boolean(), "LU-decomposed 1x1 convolutions", "True", required=False),
             "coupling": F(choice("affine", "additive"), "coupling layers", "affine", required=False)},
    "score_net": {"num_filters": _NUM_FILTERS,
                  "num_sigmas": F(integer(2), "noise levels", "10", required=False),
                  "sigma_max": F(number(0, low_open=True), "largest noise level", "1.0", required=False),
                  "sigma_min": F(number(0, low_open=True), "smallest noise level (< sigma_max)", "0.01",
                                 required=False),
                  "norm": F(choice("none", "instance_plus"), "normalisation in the residual blocks", "none",
                            required=False)},
    "ddpm": {"num_filters": _NUM_FILTERS,
             "num_timesteps": F(integer(1), "diffusion steps T", "1000", required=False),
             "beta_schedule": F(choice("linear", "cosine"), "noise schedule", "linear", required=False)},
}
MODEL_NAME = F(choice(*MODEL_NAMES), "the model family", "vae")
SECTIONS = ("data", "model", "train", "eval")              # must be present
OPTIONAL_SECTIONS = ("ensemble", "swag", "distributed")    # configs saved before they existed leave them out
PURPOSES = ("train", "evaluate")


# --- validation --------------------------------------------------------------------------------------------

def _is_section(value: Any) -> bool:
    return isinstance(value, (Mapping, ml_collections.ConfigDict, ml_collections.FrozenConfigDict))


def _leaves(node: Any, prefix: str, out: dict[str, Any], sections: set[str]) -> None:
    for name in node.keys():
        key, value = f"{prefix}{name}", node[name]
        if _is_section(value):
            sections.add(key)
            _leaves(value, f"{key}.", out, sections)
        else:
            out[key] = value


def _fix(key: str, field: Field) -> str:
    return f"pass e.g. --config.{key}={field.example}"


def _schema_for(model_name: str) -> dict[str, Field]:
    schema = dict(SCHEMA, **{"model.name": MODEL_NAME})
    schema.update({f"model.{k}": f for k, f in MODEL_SCHEMAS.get(model_name, {}).items()})
    return schema


def _unknown_key(key: str, schema: dict[str, Field], model_name: str) -> OodgenError:
    parent = key.rpartition(".")[0]
    known = sorted({k[len(parent) + 1:].split(".")[0] for k in schema if k.startswith(parent + ".")}) if parent \
        else sorted({k.split(".")[0] for k in schema})
    if parent == "model":
        return OodgenError(f"config.{key} is not a setting of model {model_name!r}; its settings are {known}")
    where = f"config.{parent}" if parent else "the config"
    return OodgenError(f"unknown config key {key!r}; known keys in {where}: {known}")


def _check_structure(config: Any) -> tuple[dict[str, Any], dict[str, Field]]:
    """{dotted key: value} of every leaf, and the schema for its model; OodgenError on missing, unknown or
    misplaced keys."""
    if not _is_section(config):
        raise OodgenError(f"a config must be a mapping of sections {list(SECTIONS)}, got {type(config).__name__}")
    for name in (*SECTIONS, *OPTIONAL_SECTIONS):
        if name in config and not _is_section(config[name]):
            raise OodgenError(f"config.{name}={show(config[name])} must be a section (a mapping of keys)")
    missing = [name for name in SECTIONS if name not in config]
    if missing:
        raise OodgenError(f"the config has no config.{missing[0]} section; every config needs {list(SECTIONS)}")
    model_name = config["model"].get("name", None)
    if model_name is None:
        raise OodgenError(f"config.model.name is missing; {_choices_text(MODEL_NAMES)}")
    problem = MODEL_NAME.check("model.name", model_name)
    if problem:
        raise OodgenError(f"{problem}; {_fix('model.name', MODEL_NAME)}")
    schema = _schema_for(model_name)
    leaves: dict[str, Any] = {}
    sections: set[str] = set()
    _leaves(config, "", leaves, sections)
    for key in sorted(sections):
        if key in schema:
            raise OodgenError(f"config.{key} must be a value, not a section; {_fix(key, schema[key])}")
        if not any(k.startswith(key + ".") for k in schema):
            raise _unknown_key(key, schema, model_name)
    for key in leaves:
        if key not in schema:
            raise _unknown_key(key, schema, model_name)
    for key, field in schema.items():
        if field.required and key not in leaves:
            raise OodgenError(f"config.{key} is missing ({field.help}); set it, e.g. config.{key} = {field.example}")
    return leaves, schema


def _cross_field(values: dict[str, Any], for_: str) -> str | None:
    """The rules between keys (each value already checked on its own): a message, or None."""
    get = values.get
    log_every, checkpoint_every = get("train.log_every"), get("train.checkpoint_every")
    if checkpoint_every % log_every:
        return (f"config.train.checkpoint_every={checkpoint_every} must be a multiple of config.train.log_every="
                f"{log_every} (checkpoints are written at log steps); pass e.g. "
                f"--config.train.checkpoint_every={log_every * max(1, round(checkpoint_every / log_every))}")
    cap, batch = get("data.max_train_examples"), get("train.batch_size")
    if 0 < cap < batch:
        return (f"config.data.max_train_examples={cap} is fewer than one batch (config.train.batch_size={batch}); "
                f"raise it or lower the batch size")
    if get("model.name") == "score_net" and get("model.sigma_min", 0.01) >= get("model.sigma_max", 1.0):
        return (f"config.model.sigma_min={get('model.sigma_min', 0.01)} must be below config.model.sigma_max="
                f"{get('model.sigma_max', 1.0)}")
    steps, every = get("eval.ddpm_reconstruction.num_sampling_steps", 100), get("eval.ddpm_reconstruction.start_every", 4)
    if every > steps:
        return (f"config.eval.ddpm_reconstruction.start_every={every} must be at most "
                f"config.eval.ddpm_reconstruction.num_sampling_steps={steps}")
    if get("model.name") == "ddpm" and steps > get("model.num_timesteps", 1000):
        return (f"config.eval.ddpm_reconstruction.num_sampling_steps={steps} must be at most "
                f"config.model.num_timesteps={get('model.num_timesteps', 1000)}")
    if for_ != "evaluate":
        return None
    ood, scorers, test = list(values["eval.ood"]), list(values["eval.scorers"]), values["data.test"]
    if not ood:
        return ("config.eval.ood is empty; name at least one OOD set to score against the in-distribution set, "
                "e.g. --config.eval.ood=noise,constant")
    if test in ood:
        return (f"config.eval.ood lists the in-distribution test set {test!r} (config.data.test); "
                "remove it from config.eval.ood")
    if not scorers:
        return "config.eval.scorers is empty; name at least one scorer, e.g. --config.eval.scorers=log_likelihood"
    if "composed" in scorers and not get("eval.composed.features", ()):
        return ("config.eval.composed.features is empty; list features to compose, e.g. "
                f"--config.eval.composed.features=log_likelihood,typicality, from {sorted(FEATURE_NAMES)}")
    group = get("eval.grad_norms.group_size", 1)
    if "grad_norms" in scorers and values["eval.batch_size"] % group:
        return (f"config.eval.grad_norms.group_size={group} must divide config.eval.batch_size="
                f"{values['eval.batch_size']}")
    return None


def validate_config(config: Any, for_: str = "train") -> None:
    """Checks every key of `config` (ConfigDict or dict) against the schema, then the cross-field rules, then
    that the model builds from it; raises one one-line OodgenError at the first problem, before any work.

    `for_`: "train" or "evaluate"; evaluation also needs OOD sets and scorers. Reads nothing and writes nothing.
    """
    if for_ not in PURPOSES:
        raise ValueError(f"for_={for_!r}; use one of {PURPOSES}")
    leaves, schema = _check_structure(config)
    for key, value in leaves.items():
        problem = schema[key].check(key, value)
        if problem:
            fix = "" if "; use " in problem else f"; {_fix(key, schema[key])}"  # a choice names its fix
            raise OodgenError(f"{problem}{fix}")
    problem = _cross_field(leaves, for_)
    if problem:
        raise OodgenError(problem)
    _check_model(config)


def _check_model(config: Any) -> None:
    """The model's own rules between its settings and the image shape (e.g. divisibility): it is built, which
    allocates nothing."""
    from oodgen.models import build_model  # the models import JAX; the schema tables above do not

    try:
        build_model(ml_collections.ConfigDict(dict(config["model"])), tuple(config["data"]["image_shape"]))
    except OodgenError as e:
        raise OodgenError(f"{e}; change config.model or config.data.image_shape to match") from None


def describe() -> str:
    """The schema as a Markdown table: key, required, example, help (config.model's keys per model)."""
    rows = ["| key | required | example | what |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {'yes' if f.required else 'no'} | `{f.example}` | {f.help} |"
             for k, f in {**SCHEMA, "model.name": MODEL_NAME}.items()]
    rows += [f"| `model.{k}` ({name}) | no | `{f.example}` | {f.help} |"
             for name, fields in MODEL_SCHEMAS.items() for k, f in fields.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(describe())
