"""Configs end to end: train a few steps, evaluate every scorer (LLR^{>k}, per-level KL, gradients, typicality)."""

import json

import numpy as np
import pytest

from oodgen.config import load_config_file
from oodgen.evaluation import evaluate
from oodgen.training import train


@pytest.mark.parametrize("spec,ood", [
    ("configs/hvae_fashion_mnist.py:tiny", ["noise", "fashion_mnist:test+vflip"]),
    ("configs/hvae_cifar10.py:tiny", ["constant", "noise+hflip"]),  # random 32x32x3 data
])
def test_train_and_evaluate_hvae(tmp_path, spec, ood):
    config = load_config_file(spec)
    state = train(config, tmp_path)
    assert int(state.step) == config.train.steps
    results, report = evaluate(config, tmp_path)
    names = ["log_likelihood", "neg_elbo", "llr_k1", "llr_k2", "neg_bound_k1", "neg_bound_k2"]
    assert all(sorted(results[name]) == sorted(ood) for name in names)
    scores = np.load(tmp_path / "scores.npz")
    n = config.eval.max_examples
    assert scores[f"llr_k2/{config.data.test}"].shape == (n,)
    assert scores[f"kl_per_level/{config.data.test}"].shape == (n, 3)
    assert np.all(scores[f"kl_per_level/{config.data.test}"] >= 0)
    kl_means = json.loads((tmp_path / "metrics.json").read_text())["kl_per_level"]
    assert set(kl_means) == {config.data.test, *ood} and all(len(v) == 3 for v in kl_means.values())
    assert "| z1 | z2 | z3 |" in report
    assert (tmp_path / "plots" / "kl_per_level.png").stat().st_size > 1000


def test_vae_with_gradient_and_typicality_scorers(tmp_path):
    config = load_config_file("configs/vae_fashion_mnist.py:tiny")
    config.eval.scorers = ["log_likelihood", "grad_norms", "typicality"]
    config.eval.grad_norms.densities = ("gaussian_log", "chi_square")
    config.eval.batch_size = 16
    train(config, tmp_path)
    results, _ = evaluate(config, tmp_path)
    assert {"log_likelihood", "grad_gaussian_log", "grad_chi_square", "typicality"} <= set(results)
    scores = np.load(tmp_path / "scores.npz")
    for name in ("grad_gaussian_log", "grad_chi_square", "typicality"):
        assert scores[f"{name}/noise"].shape == (48,) and np.all(np.isfinite(scores[f"{name}/noise"]))
