import numpy as np
import pytest

from oodgen.config import load_config_file, load_saved_config, parse_overrides, save_config
from oodgen.errors import OodgenError

CONFIG = "configs/vae_fashion_mnist.py"


def test_variant_and_overrides():
    config = load_config_file(f"{CONFIG}:tiny")
    config = parse_overrides(config, ["--config.train.steps=7", "--config.model.channels", "(3,5)",
                                      "--config.eval.ood=mnist,letters", "--config.train.learning_rate=2e-3"])
    assert config.train.steps == 7 and isinstance(config.train.steps, int)
    assert config.model.channels == (3, 5)
    assert list(config.eval.ood) == ["mnist", "letters"]
    assert config.train.learning_rate == pytest.approx(2e-3)


@pytest.mark.parametrize("args,match", [
    (["--config.train.stepz=3"], "unknown config key 'train.stepz'"),
    (["--config.nothere.steps=3"], "unknown config key 'nothere'"),
    (["--config.train.steps=abc"], "train.steps"),
    (["--steps=3"], "unrecognised argument"),
    (["--config.train.steps"], "needs a value"),
])
def test_bad_overrides_are_one_line_errors(args, match):
    with pytest.raises(OodgenError, match=match) as info:
        parse_overrides(load_config_file(CONFIG), args)
    assert "\n" not in str(info.value)


def test_missing_config_file_and_unknown_variant():
    with pytest.raises(OodgenError, match="not found"):
        load_config_file("configs/nope.py")
    with pytest.raises(OodgenError, match="unknown variant"):
        load_config_file(f"{CONFIG}:huge")


def test_saved_config_round_trips(tmp_path):
    config = load_config_file(f"{CONFIG}:tiny")
    save_config(config, tmp_path)
    loaded = load_saved_config(tmp_path)
    assert loaded.train.steps == config.train.steps
    assert tuple(loaded.data.image_shape) == tuple(config.data.image_shape)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(OodgenError, match="not valid JSON"):
        load_saved_config(tmp_path)
    with pytest.raises(OodgenError, match="train there first"):
        load_saved_config(tmp_path / "empty")


def test_cifar10_score_model_configs_follow_the_papers_and_run_in_colour():
    import jax
    import jax.numpy as jnp

    from oodgen.models import build_model

    msma, ddpm = load_config_file("configs/score_net_cifar10.py"), load_config_file("configs/ddpm_cifar10.py")
    for config in (msma, ddpm):
        assert (config.data.train, tuple(config.data.image_shape)) == ("cifar10:train", (32, 32, 3))
        assert config.eval.ood[0] == "svhn"
    assert (msma.model.num_sigmas, msma.model.sigma_max, msma.model.sigma_min) == (10, 1.0, 0.01)
    assert ddpm.eval.ddpm_reconstruction.start_every == 16 and ddpm.eval.ddpm_reconstruction.num_sampling_steps == 100

    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)), jnp.uint8)
    for spec in ("configs/score_net_cifar10.py:tiny", "configs/ddpm_cifar10.py:tiny"):
        config = load_config_file(spec)
        model = build_model(config.model, tuple(config.data.image_shape))
        params = model.init(jax.random.key(0), images)
        if config.model.name == "score_net":
            features = model.msma_features(params, images)
            assert features.shape == (2, config.model.num_sigmas) and np.all(np.isfinite(features))
        else:
            errors = model.reconstruction_errors(params, images, jax.random.key(1), (1, 3), 5)
            assert errors.shape == (2, 2) and np.all(np.isfinite(errors)) and np.all(errors > 0)
