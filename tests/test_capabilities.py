"""Every (scorer, model) pair either runs or is refused in one line, as the methods' papers say it should.

The expected matrix below is written by hand from the methods' definitions (METHODS.md), not read from the
declarations it checks.
"""

import re
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from conftest import SUBPROCESS_TIMEOUT_S
from oodgen.config import load_config_file
from oodgen.errors import OodgenError
from oodgen.models import MODELS
from oodgen.scorers import SCORERS, build_scorer
from oodgen.scorers.compatibility import MODEL_VARIANTS, compatibility, markdown_table
from oodgen.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
LIKELIHOOD_MODELS = {"vae, bernoulli", "vae, logistic", "hvae, bernoulli", "hvae, logistic", "pixelcnn",
                     "local_pixelcnn", "glow"}
EIGHT_BIT = LIKELIHOOD_MODELS - {"vae, bernoulli", "hvae, bernoulli"}
HVAE = {"hvae, bernoulli", "hvae, logistic"}
ALL = LIKELIHOOD_MODELS | {"score_net", "ddpm"}
RUNS_ON = {
    "log_likelihood": LIKELIHOOD_MODELS,        # a denoising loss is not a likelihood
    "hvae_llr": HVAE,
    "kl_per_level": HVAE,
    "typicality": LIKELIHOOD_MODELS,
    "grad_norms": ALL,                          # of the NLL, or of the denoising loss (named so)
    "likelihood_regret": {"vae, bernoulli", "vae, logistic"} | HVAE,
    "input_complexity": EIGHT_BIT,              # NLL and PNG length must both be of the 8-bit image
    "background_ratio": LIKELIHOOD_MODELS,
    "local_ratio": EIGHT_BIT,
    "msma": {"score_net"},
    "ddpm_reconstruction": {"ddpm"},
    "ensemble": LIKELIHOOD_MODELS,
    "composed": ALL,
}
# Scorers whose building needs more than a model (a reference model) are checked through the declarations only.
NEEDS_MORE = {"background_ratio", "local_ratio"}


def _model(label: str):
    name, settings = next((n, s) for lab, n, s in MODEL_VARIANTS if lab == label)
    return MODELS[name](**settings)


def _eval_config(**settings) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(num_samples=2, batch_size=8, seed=0, **settings))


def test_declared_matrix_is_the_methods_matrix():
    assert set(RUNS_ON) == set(SCORERS)
    assert {s: {m for m, ok in row.items() if ok} for s, row in compatibility().items()} == RUNS_ON


@pytest.mark.parametrize("scorer", sorted(set(SCORERS) - {"composed"}))
def test_every_pair_runs_or_is_refused_in_one_line(scorer):
    for label, name, _ in MODEL_VARIANTS:
        model = _model(label)
        if label in RUNS_ON[scorer]:
            if scorer not in NEEDS_MORE:
                assert build_scorer(scorer, model, _eval_config()).name
            continue
        with pytest.raises(OodgenError) as refused:
            build_scorer(scorer, model, _eval_config())
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"{scorer} needs ") and f"this {name} " in message


def test_input_complexity_refuses_binarised_pixels_with_the_fix():
    with pytest.raises(OodgenError) as refused:
        build_scorer("input_complexity", _model("vae, bernoulli"), _eval_config())
    assert str(refused.value) == (
        "input_complexity needs a likelihood of the 8-bit pixels; this vae models binarised pixels "
        "(model.likelihood=bernoulli): use model.likelihood=discretized_logistic_mixture or another scorer")


def test_composed_refuses_a_feature_whose_scorer_does_not_run():
    with pytest.raises(OodgenError, match=r"composed feature 'msma_norms': msma needs a noise-conditional score"):
        build_scorer("composed", _model("vae, logistic"), _eval_config(composed=dict(features=("msma_norms",))))


def test_readme_table_is_generated_from_the_declarations():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "regenerate it: python -m oodgen.scorers.compatibility"


def test_no_module_outside_models_probes_a_model():
    """Capabilities are declared: nothing outside models/ tests a model's type or calls hasattr on it."""
    offenders = []
    for path in (ROOT / "oodgen").rglob("*.py"):
        if "models" in path.relative_to(ROOT / "oodgen").parts:
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {m}" for m in re.findall(r"hasattr\((?:self\.)?model\b[^)]*\)", text)]
        offenders += [f"{path.name}: {m}" for m in re.findall(r"isinstance\([^)]*Model\b[^)]*\)", text)]
    assert not offenders


@pytest.mark.parametrize("spec", ["configs/score_net_fashion_mnist.py:tiny", "configs/ddpm_fashion_mnist.py:tiny"])
def test_surrogate_models_are_not_scored_as_likelihoods(tmp_path, spec):
    """Acceptance: a tiny trained score net / DDPM, evaluated with log_likelihood, exits 2 with one line."""
    train(load_config_file(spec), tmp_path)
    logged = (tmp_path / "train_metrics.jsonl").read_text()
    assert "bits_per_dim" not in logged and "val_denoising_loss" in logged   # no bits/dim label on a surrogate
    result = subprocess.run([sys.executable, "evaluate.py", "--workdir", str(tmp_path),
                             "--config.eval.scorers=log_likelihood"], cwd=ROOT, capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: log_likelihood needs a likelihood") and "not a likelihood" in lines[0]
    assert not (tmp_path / "metrics.json").exists()
