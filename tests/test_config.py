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
