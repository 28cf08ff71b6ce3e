"""Configs end to end: train a few steps, evaluate every scorer (LLR^{>k}, per-level KL, gradients, typicality)."""

import json

import numpy as np
import pytest

from oodgen.config import load_config_file
from oodgen.evaluation.harness import evaluate
from oodgen.training.loop import train


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
    kls = np.stack([scores[f"kl_z{i}/{config.data.test}"] for i in (1, 2, 3)], axis=1)
    assert kls.shape == (n, 3) and np.all(kls >= 0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(set(metrics[f"kl_z{i}"]) == set(ood) for i in (1, 2, 3))   # one schema: {score: {ood set: ...}}
    assert all(set(row) >= {"auroc", "fpr95"} for per_set in metrics.values() for row in per_set.values())
    assert "| dataset | kl_z1 | kl_z2 | kl_z3 |" in report
    assert f"| {config.data.test} | {kls[:, 0].mean():.2f} | {kls[:, 1].mean():.2f} | {kls[:, 2].mean():.2f} |" in report
    assert (tmp_path / "plots" / "feature_means.png").stat().st_size > 1000


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


@pytest.fixture(scope="module")
def pixelcnn_runs(tmp_path_factory):
    """Tiny PixelCNN++, its background model and a local PixelCNN, each trained a few steps."""
    root = tmp_path_factory.mktemp("pixelcnn")
    for variant in ("tiny", "background,tiny", "local,tiny"):
        train(load_config_file(f"configs/pixelcnn_fashion_mnist.py:{variant}"), root / variant.split(",")[0])
    return root


def test_pixelcnn_likelihood_ratios_and_pixel_maps(pixelcnn_runs):
    root = pixelcnn_runs
    config = load_config_file("configs/pixelcnn_fashion_mnist.py:tiny")
    config.eval.background_ratio.workdir = str(root / "background")
    config.eval.local_ratio.workdir = str(root / "local")
    results, report = evaluate(config, root / "tiny", outdir=root / "eval")
    expected = {"log_likelihood", "input_complexity_png", "input_complexity_jpeg2000", "background_ratio",
                "local_ratio"}
    assert expected <= set(results) and "| local_ratio | noise |" in report
    scores = np.load(root / "eval" / "scores.npz")
    for ratio in ("background_ratio", "local_ratio"):
        # the per-pixel map (bits per pixel) sums to the ratio (bits/dim) times the number of dimensions
        pixel_map = scores[f"pixel_map/{ratio}/{config.data.test}"]
        assert pixel_map.shape == (4, 28, 28)
        np.testing.assert_allclose(pixel_map.sum(axis=(1, 2)), 784 * scores[f"{ratio}/{config.data.test}"][:4],
                                   rtol=1e-3, atol=1e-2)
        assert (root / "eval" / "plots" / f"pixel_map_{ratio}.png").stat().st_size > 1000
    # the local ratio's reference really is the local model: its likelihood differs from the full model's
    assert np.abs(scores[f"local_ratio/{config.data.test}"]).mean() > 1e-3


def test_glow_background_ratio(tmp_path):
    for variant, workdir in (("tiny", "model"), ("background,tiny", "background")):
        train(load_config_file(f"configs/glow_fashion_mnist.py:{variant}"), tmp_path / workdir)
    config = load_config_file("configs/glow_fashion_mnist.py:tiny")
    config.eval.background_ratio.workdir = str(tmp_path / "background")
    results, _ = evaluate(config, tmp_path / "model")
    assert {"log_likelihood", "input_complexity_png", "background_ratio"} <= set(results)
    scores = np.load(tmp_path / "model" / "scores.npz")
    assert np.all(np.isfinite(scores["background_ratio/noise"])) and scores["background_ratio/noise"].shape == (48,)
    assert not (tmp_path / "model" / "plots" / "pixel_map_background_ratio.png").exists()  # a flow has no pixel maps


@pytest.mark.parametrize("spec", ["configs/pixelcnn_cifar10.py:tiny", "configs/glow_cifar10.py:tiny"])
def test_colour_configs_train_and_score(tmp_path, spec):
    config = load_config_file(spec)           # random 32x32x3 images: the colour paths, no CIFAR-10 needed
    config.eval.scorers = ["log_likelihood", "input_complexity"]
    train(config, tmp_path)
    results, _ = evaluate(config, tmp_path)
    scores = np.load(tmp_path / "scores.npz")
    assert scores["log_likelihood/noise"].shape == (24,)
    assert 5.0 < scores["log_likelihood/noise"].mean() < 12.0   # uniform noise: about 8 bits/dim, barely trained
    assert {"input_complexity_png", "input_complexity_jpeg2000"} <= set(results)


def test_score_net_msma_and_ddpm_reconstruction(tmp_path):
    import jax
    import jax.numpy as jnp

    from oodgen.evaluation.harness import load_eval_sets
    from oodgen.scorers.diffusion import zscore_mean
    from oodgen.training.restore import load_trained_model
    from oodgen.sharding import example_keys
    from oodgen.training.loop import load_training_data

    for name, scores_expected in (("score_net", {"msma_gmm", "msma_knn"}), ("ddpm", {"ddpm_reconstruction"})):
        config = load_config_file(f"configs/{name}_fashion_mnist.py:tiny")
        train(config, tmp_path / name)
        results, _ = evaluate(config, tmp_path / name)
        assert scores_expected <= set(results)
        scores = np.load(tmp_path / name / "scores.npz")
        assert all(np.all(np.isfinite(scores[f"{s}/noise"])) for s in scores_expected)

    # the DDPM score is the mean z-scored reconstruction error against the held-out split, per example
    config = load_config_file("configs/ddpm_fashion_mnist.py:tiny")
    _, model, params = load_trained_model(tmp_path / "ddpm")
    starts = (2, 4)
    _, held_out = load_training_data(config)

    def errors(images):
        keys = example_keys(jax.random.key(config.eval.seed), jnp.arange(images.shape[0]))
        return model.reconstruction_errors(params, jnp.asarray(images), keys, starts, 5)

    test = load_eval_sets(config)[config.data.test]
    expected = zscore_mean(errors(test), errors(held_out))
    uncapped = np.load(tmp_path / "ddpm" / "scores.npz")[f"ddpm_reconstruction/{config.data.test}"]
    np.testing.assert_allclose(uncapped, expected, rtol=1e-4, atol=1e-4)

    # eval.max_fit_examples: z-scored against the first 5 held-out images only
    config.eval.max_fit_examples = 5
    evaluate(config, tmp_path / "ddpm", outdir=tmp_path / "capped")
    capped = np.load(tmp_path / "capped" / "scores.npz")[f"ddpm_reconstruction/{config.data.test}"]
    np.testing.assert_allclose(capped, zscore_mean(errors(test), errors(held_out[:5])), rtol=1e-4, atol=1e-4)
    assert np.abs(capped - uncapped).max() > 1e-3
