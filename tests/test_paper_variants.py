"""Each method's `:paper` variant (issue 16): the paper's architecture, likelihood, optimiser, budget and detector
settings for a user with a GPU. A test here fails if someone changes one of them; every `:paper` variant also
trains two steps at smoke sizes (`:paper,tiny`: the paper's model and likelihood, tiny data)."""

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from oodgen.config import load_config_file
from oodgen.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
# Every method's Fashion-MNIST config.
REQUIRED = {"vae_fashion_mnist", "hvae_fashion_mnist", "pixelcnn_fashion_mnist", "glow_fashion_mnist",
            "ddpm_fashion_mnist", "score_net_fashion_mnist"}
OPTIONAL: set[str] = set()


def _configs_with_a_paper_variant() -> list[str]:
    names = []
    for path in sorted((ROOT / "configs").glob("*.py")):
        if path.stem in ("__init__", "exact_likelihood"):
            continue
        if "paper" in getattr(importlib.import_module(f"configs.{path.stem}"), "VARIANTS", ()):
            names.append(path.stem)
    return names


PAPER_CONFIGS = _configs_with_a_paper_variant()

# The paper's (or its reference code's) values, written out here from the configs' docstrings and METHODS.md.
PAPER_SETTINGS = {
    "vae_fashion_mnist": {   # Xiao et al. 2020, XavierXiao/Likelihood-Regret
        "model.name": "vae", "model.likelihood": "categorical", "model.latent_dim": 100, "model.channels": (32, 64),
        "train.learning_rate": 3e-4, "train.batch_size": 128, "train.steps": 200 * math.ceil(55_000 / 128),
        "train.l2_weight": 1.5e-5,
        "eval.scorers": ["log_likelihood", "likelihood_regret"], "eval.num_samples": 1000,
        "eval.likelihood_regret.num_steps": 100, "eval.likelihood_regret.learning_rate": 2e-4,
        "eval.likelihood_regret.weight_decay": 5e-5, "eval.max_examples": 500,
    },
    "hvae_fashion_mnist": {   # Havtorn et al. 2021, JakobHavtorn/hvae-oodd
        "model.name": "hvae", "model.width": 64, "model.latent_channels": (8,), "model.latent_units": (16, 8),
        "model.likelihood": "bernoulli", "model.prior_levels": "mode",
        "train.learning_rate": 3e-4, "train.batch_size": 128, "train.steps": 1000 * 430,
        "train.kl_warmup_steps": 200 * 430, "train.free_nats": 2.0, "train.free_nats_steps": 200 * 430,
        "train.free_nats_anneal_steps": 200 * 430, "eval.checkpoint": "best", "eval.num_samples": 1000,
        "eval.scorers": ["hvae_llr", "kl_per_level"],
    },
    "pixelcnn_fashion_mnist": {   # Ren et al. 2019, google-research genomics_ood/images_ood
        "model.name": "pixelcnn", "model.num_resnets": 5, "model.num_filters": 32, "model.num_mixtures": 1,
        "model.num_scales": 1, "model.dropout_rate": 0.0,
        "train.learning_rate": 1e-4, "train.batch_size": 32, "train.steps": 50_000,
        "eval.scorers": ["log_likelihood", "input_complexity", "background_ratio", "local_ratio"],
    },
    "glow_fashion_mnist": {   # Choi et al. 2018; Kingma & Dhariwal 2018 (openai/glow)
        "model.name": "glow", "model.depth": 32, "model.hidden_channels": 512, "model.coupling": "affine",
        "model.num_levels": 2, "ensemble.size": 5, "train.learning_rate": 1e-3, "train.batch_size": 64,
    },
    "ddpm_fashion_mnist": {   # Graham et al. 2023, marksgraham/ddpm-ood
        "model.name": "ddpm", "model.num_timesteps": 1000, "model.num_filters": 128,
        "eval.scorers": ["ddpm_reconstruction"], "eval.ddpm_reconstruction.num_sampling_steps": 100,
        "eval.ddpm_reconstruction.start_every": 4, "data.num_validation": 3000,
        "train.learning_rate": 2.5e-5, "train.batch_size": 512,
    },
    "score_net_fashion_mnist": {   # Mahmood et al. 2021, ahsanMah/msma: 10 levels, σ 1 -> 0.01 on [0, 1]
        "model.name": "score_net", "model.num_sigmas": 10, "model.sigma_max": 1.0, "model.sigma_min": 0.01,
        "model.num_filters": 128, "model.norm": "instance_plus",
        "train.learning_rate": 1e-3, "train.batch_size": 128, "train.steps": 200_000,
        "eval.msma.densities": ("gmm", "knn"), "eval.msma.density_options.gmm.n_components": list(range(2, 21)),
        "eval.msma.density_options.gmm.folds": 10, "eval.msma.density_options.knn.k": 5,
    },
}
# Each (config, variant) trained two steps: every :paper,tiny, and the other architecture a :paper file holds.
TRAINED = [(name, "paper,tiny") for name in PAPER_CONFIGS] + [("pixelcnn_fashion_mnist", "paper,local,tiny")]


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def test_every_method_has_a_paper_variant():
    assert REQUIRED <= set(PAPER_CONFIGS) <= REQUIRED | OPTIONAL, PAPER_CONFIGS
    assert set(PAPER_SETTINGS) == REQUIRED | OPTIONAL


def test_cifar10_configs_refuse_paper_they_already_are_the_papers_setting():
    from oodgen.errors import OodgenError

    for name in ("pixelcnn_cifar10", "glow_cifar10", "ddpm_cifar10", "hvae_cifar10"):
        with pytest.raises(OodgenError, match="unknown variant"):
            load_config_file(f"configs/{name}.py:paper")


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_variant_has_the_papers_settings(name):
    config = load_config_file(f"configs/{name}.py:paper")
    for key, value in PAPER_SETTINGS[name].items():
        got = _get(config, key)
        got = list(got) if isinstance(value, list) else got
        assert got == (pytest.approx(value) if isinstance(value, float) else value), (name, key, got, value)
    # :paper,tiny is the same model (architecture and likelihood) at smoke sizes, and the default is not it.
    tiny = load_config_file(f"configs/{name}.py:paper,tiny")
    assert tiny.model.to_dict() == config.model.to_dict()
    assert tiny.train.steps < 10 and 0 < tiny.data.max_train_examples <= 512
    assert load_config_file(f"configs/{name}.py").model.to_dict() != config.model.to_dict() or name in OPTIONAL


def test_paper_background_and_local_models_share_the_papers_setup():
    full = load_config_file("configs/pixelcnn_fashion_mnist.py:paper")
    background = load_config_file("configs/pixelcnn_fashion_mnist.py:paper,background")
    assert background.model.to_dict() == full.model.to_dict() and background.train.perturbation_rate > 0
    assert full.eval.background_ratio.workdir == "runs/pixelcnn_fashion_mnist_paper_background"
    local = load_config_file("configs/pixelcnn_fashion_mnist.py:paper,local")
    assert (local.model.name, local.model.horizon, local.model.num_filters, local.model.num_mixtures) == \
        ("local_pixelcnn", 3, 256, 10)
    glow_background = load_config_file("configs/glow_fashion_mnist.py:paper,background")
    glow = load_config_file("configs/glow_fashion_mnist.py:paper")
    assert glow_background.model.to_dict() == glow.model.to_dict() and glow_background.ensemble.size == 1
    assert "ensemble" in glow.eval.scorers


@pytest.mark.parametrize("name,variant", TRAINED)
def test_paper_variant_trains_two_steps_on_tiny_data(tmp_path, name, variant):
    """Compiling the papers' networks is most of the time (a depth-32 Glow's step: ~20 s on 2 CPU cores), so
    the batches are small and an ensemble trains one member here (tests/test_ensemble.py trains members)."""
    config = load_config_file(f"configs/{name}.py:{variant}")
    config.train.update(steps=2, log_every=1, checkpoint_every=2, batch_size=4)
    config.data.num_validation = 8
    config.ensemble.size = 1
    state = train(config, tmp_path)
    assert int(np.max(state.step)) == 2
    logged = [json.loads(line) for line in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
    losses = [v for row in logged for k, v in row.items() if k in ("loss", "val_bits_per_dim", "val_denoising_loss")]
    assert losses and all(np.all(np.isfinite(v)) for v in losses), logged
