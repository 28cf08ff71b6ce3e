import json

import jax
import numpy as np
import pytest

from oodgen import checkpoints
from oodgen.config import load_config_file, parse_overrides
from oodgen.errors import OodgenError
from oodgen.training import batch_indices, train


def _config(*overrides):
    return parse_overrides(load_config_file("configs/vae_fashion_mnist.py:tiny"), list(overrides))


def _leaves(state):
    return jax.tree.leaves(jax.device_get(state.params))


def test_batches_cover_each_epoch_without_repeats():
    seen = np.concatenate([batch_indices(step, 50, 8, seed=3) for step in range(6)])
    assert len(set(seen)) == 48 and seen.min() >= 0 and seen.max() < 50
    assert not np.array_equal(batch_indices(0, 50, 8, 3), batch_indices(6, 50, 8, 3))


def test_resumed_training_equals_uninterrupted(tmp_path):
    straight = train(_config("--config.train.steps=4"), tmp_path / "straight")
    assert checkpoints.latest_step(tmp_path / "resumed") == 0  # nothing there yet
    train(_config("--config.train.steps=2"), tmp_path / "resumed")
    assert checkpoints.latest_step(tmp_path / "resumed") == 2
    resumed = train(_config("--config.train.steps=4"), tmp_path / "resumed")
    assert int(straight.step) == int(resumed.step) == 4
    for a, b in zip(_leaves(straight), _leaves(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    logged = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "train_metrics.jsonl").open()]
    assert logged == [2, 4]  # the second run started at step 2, not 0
    saved = (tmp_path / "resumed" / "config.json").read_text()
    with pytest.raises(OodgenError, match=r"checkpoint at step 4, beyond config.train.steps=3; pass "):
        train(_config("--config.train.steps=3"), tmp_path / "resumed")
    assert (tmp_path / "resumed" / "config.json").read_text() == saved  # the saved config still matches


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    train(_config("--config.train.steps=2"), tmp_path)
    good = checkpoints.checkpoint_manager(tmp_path, read_only=True).latest_step()
    with pytest.raises(OodgenError, match="training loss became .* lower config.train.learning_rate") as info:
        train(_config("--config.train.steps=8", "--config.train.learning_rate=1e30",
                      "--config.train.grad_clip_norm=1e30"), tmp_path)
    assert "\n" not in str(info.value)
    manager = checkpoints.checkpoint_manager(tmp_path, read_only=True)
    assert good == 2 and manager.all_steps() == [2]


def test_best_checkpoint_is_the_one_with_lowest_validation_bits_per_dim(tmp_path):
    train(_config("--config.train.steps=6"), tmp_path)
    logged = {json.loads(line)["step"]: json.loads(line)["val_bits_per_dim"]
              for line in (tmp_path / "train_metrics.jsonl").open()}
    best = checkpoints.checkpoint_manager(tmp_path, read_only=True, best=True)
    assert best.all_steps() == [min(logged, key=logged.get)]
    assert checkpoints.checkpoint_manager(tmp_path, read_only=True).all_steps() == [4, 6]  # keep_checkpoints=2
