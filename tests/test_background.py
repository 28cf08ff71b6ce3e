"""Background-model training (perturbation, L2) and the reference-ratio and input-complexity scorers."""

import math
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from oodgen.config import load_config_file
from oodgen.errors import OodgenError
from oodgen.evaluation.harness import evaluate, load_eval_sets
from oodgen.models import build_model
from oodgen.training.objectives import l2_penalty, make_objective
from oodgen.data.perturbation import perturb
from oodgen.training.restore import load_trained_model
from oodgen.sharding import example_keys
from oodgen.training.loop import train


def test_perturbation_resamples_a_mu_fraction_of_subpixels():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 28, 28, 3)), jnp.uint8)
    keys = example_keys(jax.random.key(0), jnp.arange(64))
    for rate in (0.0, 0.1, 0.3, 1.0):
        out = perturb(keys, images, rate)
        assert out.dtype == jnp.uint8 and out.shape == images.shape
        changed = float(jnp.mean(out != images))
        # a resampled sub-pixel keeps its value with probability 1/256
        np.testing.assert_allclose(changed, rate * 255 / 256, atol=0.005)
    alone = perturb(keys[5:6], images[5:6], 0.3)
    np.testing.assert_array_equal(alone[0], perturb(keys, images, 0.3)[5])  # independent of the batch
    values = np.asarray(perturb(keys, jnp.zeros_like(images), 1.0)).ravel()
    counts = np.bincount(values, minlength=256)
    assert counts.min() > 0.7 * values.size / 256 and counts.max() < 1.3 * values.size / 256  # uniform on 0..255
    with pytest.raises(ValueError, match="must be in"):
        perturb(keys, images, 1.5)


def test_background_objective_perturbs_inputs_and_adds_l2():
    config = load_config_file("configs/vae_fashion_mnist.py:tiny")
    model = build_model(config.model, (28, 28, 1))
    images = jnp.asarray(np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1)), jnp.uint8)
    params = model.init(jax.random.key(0), images)
    keys = example_keys(jax.random.key(2), jnp.arange(8))
    plain = make_objective(model, config.train)
    train_config = ml_collections.ConfigDict(dict(config.train, perturbation_rate=0.0, l2_weight=0.5))
    loss, metrics = make_objective(model, train_config)(params, images, keys, 0)
    kernels = [p for p in jax.tree.leaves(params) if p.ndim >= 2]
    manual = sum(float(np.sum(np.asarray(p, np.float64) ** 2)) for p in kernels)
    np.testing.assert_allclose(float(l2_penalty(params)), manual, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(plain(params, images, keys, 0)[0]) + 0.5 * manual, rtol=1e-5)
    train_config.perturbation_rate, train_config.l2_weight = 1.0, 0.0
    noisy, _ = make_objective(model, train_config)(params, images, keys, 0)
    assert abs(float(noisy) - float(plain(params, images, keys, 0)[0])) > 1.0  # it saw different images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE of 8-bit pixels (input complexity needs them) and its background model (μ = 0.3, L2 weight
    1e-3), trained a few steps."""
    root = tmp_path_factory.mktemp("runs")
    config = load_config_file("configs/vae_fashion_mnist.py:tiny")
    config.model.likelihood, config.model.num_mixtures = "discretized_logistic_mixture", 2
    train(config, root / "model")
    background = load_config_file("configs/vae_fashion_mnist.py:tiny")
    background.model.likelihood, background.model.num_mixtures = "discretized_logistic_mixture", 2
    background.train.perturbation_rate, background.train.l2_weight = 0.3, 1e-3
    train(background, root / "background")
    return config, root


def _nll_bpd(model, params, images, seed, num_samples):
    keys = example_keys(jax.random.key(seed), jnp.arange(images.shape[0]))
    return -np.asarray(model.log_prob(params, jnp.asarray(images), keys, num_samples)) / (model.num_dims * math.log(2))


def test_background_ratio_and_input_complexity_scores(trained):
    config, root = trained
    config.eval.scorers = ["background_ratio", "input_complexity"]
    config.eval.background_ratio = ml_collections.ConfigDict(dict(workdir=str(root / "background")))
    config.eval.input_complexity = ml_collections.ConfigDict(dict(codecs=("png", "deflate")))
    results, report = evaluate(config, root / "model", outdir=root / "eval")
    scores = np.load(root / "eval" / "scores.npz")
    assert {"background_ratio", "input_complexity_png", "input_complexity_deflate"} <= set(results)

    _, model, params = load_trained_model(root / "model")
    _, background, background_params = load_trained_model(root / "background")
    for spec, data in load_eval_sets(config).items():
        nll = _nll_bpd(model, params, data, config.eval.seed, config.eval.num_samples)
        nll_background = _nll_bpd(background, background_params, data, config.eval.seed, config.eval.num_samples)
        np.testing.assert_allclose(scores[f"background_ratio/{spec}"], nll - nll_background, rtol=1e-4, atol=1e-4)
        deflate = np.array([8 * (len(zlib.compress(x.tobytes(), 9)) - 6) for x in data]) / data[0].size
        np.testing.assert_allclose(scores[f"input_complexity_deflate/{spec}"], nll - deflate, rtol=1e-4, atol=1e-4)
    assert not (root / "eval" / "plots" / "pixel_map_background_ratio.png").exists()  # VAEs have no pixel maps


def test_reference_workdir_errors(trained, tmp_path):
    config, root = trained
    config.eval.scorers = ["background_ratio"]
    config.eval.background_ratio = ml_collections.ConfigDict(dict(workdir=str(tmp_path / "missing")))
    with pytest.raises(OodgenError, match=r"config.eval.background_ratio.workdir=.*no trained model"):
        evaluate(config, root / "model", outdir=tmp_path / "out")
    config.eval.background_ratio.workdir = ""
    with pytest.raises(OodgenError, match="is not set"):
        evaluate(config, root / "model", outdir=tmp_path / "out")
    assert not (tmp_path / "out" / "scores.npz").exists()
    config.eval.scorers = ["input_complexity"]
    config.eval.input_complexity = ml_collections.ConfigDict(dict(codecs=("gif",)))
    with pytest.raises(OodgenError, match="codecs"):
        evaluate(config, root / "model", outdir=tmp_path / "out")


def test_the_background_model_is_chosen_on_perturbed_held_out_images(trained):
    """Its logged val_bits_per_dim (and so its best/ checkpoint) is the negative one-sample bound of the
    held-out images perturbed at μ with the fixed held-out key, without the L2 penalty."""
    import json

    from oodgen import data
    from oodgen.training import checkpoints
    from oodgen.training.loop import HELD_OUT_PERTURBATION_SALT

    _, root = trained
    config, model, params = load_trained_model(root / "background")   # its best checkpoint
    log = (root / "background" / "train_metrics.jsonl").read_text().splitlines()
    logged = {r["step"]: r["val_bits_per_dim"] for r in map(json.loads, log)}
    best = checkpoints.checkpoint_manager(root / "background", read_only=True, best=True).best_step()
    assert best == min(logged, key=logged.get)

    held_out = data.load(config.data.train, image_shape=(28, 28, 1)).images[-config.data.num_validation:]
    seed, rate = config.seed, config.train.perturbation_rate
    perturbed = np.asarray(perturb(example_keys(jax.random.fold_in(jax.random.key(seed), HELD_OUT_PERTURBATION_SALT),
                                                jnp.arange(held_out.shape[0])), jnp.asarray(held_out), rate))
    # independently of perturb: a fraction μ of sub-pixels resampled, 1/256 of those to their own value
    np.testing.assert_allclose(np.mean(perturbed != held_out), rate * 255 / 256, atol=0.01)

    val_key = jax.random.split(jax.random.key(seed), 3)[2]   # the training run's validation key

    def mean_bpd(images):
        keys = example_keys(val_key, jnp.arange(images.shape[0]))
        return float(np.mean(-np.asarray(model.log_prob(params, jnp.asarray(images), keys, 1))
                             / (model.num_dims * math.log(2))))

    np.testing.assert_allclose(logged[best], mean_bpd(perturbed), rtol=0, atol=1e-5)
    # not the clean-image metric (a 4-step VAE is near 1 bit/dim on any input: they differ by about 5e-4)
    assert abs(logged[best] - mean_bpd(held_out)) > 1e-4


def test_a_perturbation_rate_outside_0_1_is_refused_before_anything_is_written(tmp_path):
    config = load_config_file("configs/vae_fashion_mnist.py:tiny")
    config.train.perturbation_rate = 1.5
    with pytest.raises(OodgenError, match=r"perturbation_rate=1.5 must be in \[0, 1\]") as info:
        train(config, tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_a_reference_of_other_data_is_refused():
    """A ratio of a likelihood of 8-bit pixels to one of binarised pixels is meaningless: refused in one line."""
    from oodgen.models.vae import VAEModel
    from oodgen.scorers.ratios import BackgroundRatioScorer, LocalRatioScorer, Reference
    eight_bit = VAEModel(image_shape=(8, 8, 1), channels=(4,), likelihood="discretized_logistic_mixture")
    binarised = VAEModel(image_shape=(8, 8, 1), channels=(4,))
    with pytest.raises(OodgenError, match=r"^background_ratio: the model's likelihood is of 8-bit pixels but the "
                                          r"reference's \(runs/x: vae models binarised pixels"):
        BackgroundRatioScorer(eight_bit, reference=Reference(binarised, {}, "runs/x"))
    with pytest.raises(OodgenError, match="is for images"):
        BackgroundRatioScorer(eight_bit, reference=Reference(VAEModel(image_shape=(16, 16, 1), channels=(4,),
                                                                      likelihood="discretized_logistic_mixture"), {}))
    with pytest.raises(OodgenError, match="local_ratio's reference .* needs a likelihood of the 8-bit pixels"):
        LocalRatioScorer(eight_bit, reference=Reference(binarised, {}))
    with pytest.raises(OodgenError, match=r"needs a reference model: set config.eval.background_ratio.workdir"):
        BackgroundRatioScorer(eight_bit)
