"""Never save a poisoned checkpoint: non-finite parameters or held-out losses, and finite but exploding runs, stop
before any save with one line naming the last good checkpoint and the command that resumes from it."""

import json
import math
import re

import jax
import numpy as np
import pytest

from oodgen.config import load_config_file, parse_overrides
from oodgen.errors import OodgenError
from oodgen.training import checkpoints
from oodgen.training.loop import held_out_diverged, train

EVERY_STEP = ("--config.train.log_every=1", "--config.train.checkpoint_every=1")


def _config(*overrides):
    return parse_overrides(load_config_file("configs/vae_fashion_mnist.py:tiny"), list(overrides))


def _saved(workdir, best=False) -> dict[int, tuple[float, list[np.ndarray]]]:
    """{step: (held-out loss of its record, its parameter arrays)} of checkpoints/ or best/."""
    import orbax.checkpoint as ocp
    manager = checkpoints.checkpoint_manager(workdir, read_only=True, best=best)
    try:
        restored = {s: manager.restore(s, args=ocp.args.StandardRestore()) for s in manager.all_steps()}
        return {s: (manager.metrics(s)[checkpoints.BEST_METRIC],
                    [np.asarray(x) for x in jax.tree.leaves(tree["params"])]) for s, tree in restored.items()}
    finally:
        manager.close()


def _logged(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "train_metrics.jsonl").read_text().splitlines()]


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(
        a[s][0] == b[s][0] and all(x.tobytes() == y.tobytes() for x, y in zip(a[s][1], b[s][1])) for s in a)


def test_the_held_out_divergence_rule():
    assert held_out_diverged(float("nan"), None, 3.0) and held_out_diverged(float("inf"), 1.0, 0.0)
    assert not held_out_diverged(5.0, None, 3.0)                  # nothing to compare with yet
    assert not held_out_diverged(3.0, 1.0, 3.0) and held_out_diverged(3.0001, 1.0, 3.0)   # factor × best
    assert held_out_diverged(0.1, -3.0, 2.0) and not held_out_diverged(-0.1, -3.0, 2.0)  # best + (f - 1)·|best| = 0
    assert not held_out_diverged(1e30, 1.0, 0.0)                 # 0 turns the check off


def test_a_finite_but_exploding_run_keeps_the_good_checkpoints(tmp_path):
    train(_config("--config.train.steps=4", "--config.train.log_every=1"), tmp_path)   # checkpoints 2, 4
    good, good_best = _saved(tmp_path), _saved(tmp_path, best=True)
    assert sorted(good) == [2, 4] and sorted(good_best) == [4]
    with pytest.raises(OodgenError) as info:
        train(_config("--config.train.steps=12", "--config.train.log_every=1", "--config.train.learning_rate=1e4"),
              tmp_path)
    message = str(info.value)
    assert "\n" not in message
    found = re.match(r"training diverged at step 6: the held-out loss val_bits_per_dim is (\S+), above "
                     r"config.train.divergence_factor=3 times the best one \((\S+) at step 4; if that is no "
                     r"divergence, raise the factor\); nothing after step 4 was saved, and checkpoint step 4 is the "
                     r"last good one: re-run with --config.train.resume_from=4 --config.train.learning_rate=1000 ",
                     message)
    assert found, message
    # finite, but far worse: the held-out rule stopped it, not a NaN
    loss, best = float(found[1]), float(found[2])
    assert math.isfinite(loss) and loss > 3 * best and abs(best - good[4][0]) < 1e-5 * best
    assert _same(_saved(tmp_path), good) and _same(_saved(tmp_path, best=True), good_best)   # nothing rotated out

    # a step that is not there is refused, naming those that are
    with pytest.raises(OodgenError, match=r"resume_from='3': there is no checkpoint at step 3 \(checkpoints/ holds "
                                          r"steps \[2, 4\], best/ holds \[4\]\)"):
        train(_config("--config.train.steps=4", "--config.train.resume_from=3"), tmp_path)
    # going back to an older checkpoint discards the later ones and their log lines
    train(_config("--config.train.steps=2", "--config.train.log_every=1", "--config.train.resume_from=2"), tmp_path)
    assert _same(_saved(tmp_path), {2: good[2]})
    assert [line["step"] for line in _logged(tmp_path)] == [1, 2]
    assert sorted(_saved(tmp_path, best=True)) == [2]   # the best left among the kept checkpoints


def test_nan_parameters_at_a_checkpoint_step_save_nothing_and_the_documented_command_recovers(tmp_path):
    train(_config("--config.train.steps=2", *EVERY_STEP), tmp_path / "run")   # checkpoints 1, 2
    good, good_best = _saved(tmp_path / "run"), _saved(tmp_path / "run", best=True)
    # learning rate 1e39 overflows float32: the update of step 3 makes the parameters inf/NaN, while the loss
    # of step 3 (computed before the update) is still finite
    with pytest.raises(OodgenError) as info:
        train(_config("--config.train.steps=4", "--config.train.learning_rate=1e39", *EVERY_STEP), tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("training diverged at step 3: the parameters or optimiser state became non-finite "
                              "(NaN or inf); nothing after step 2 was saved, and checkpoint step 2 is the last good "
                              "one: re-run with --config.train.resume_from=2 --config.train.learning_rate="), message
    assert _same(_saved(tmp_path / "run"), good) and _same(_saved(tmp_path / "run", best=True), good_best)
    assert [line["step"] for line in _logged(tmp_path / "run")] == [1, 2]   # step 3's line is not written either

    # the documented command (resume_from from the message; a learning rate that works) finishes the run, and
    # ends where an uninterrupted run does
    resume = re.search(r"re-run with (--config\.train\.resume_from=\d+) --config\.train\.learning_rate=", message)[1]
    resumed = train(_config("--config.train.steps=4", resume, "--config.train.learning_rate=1e-3", *EVERY_STEP),
                    tmp_path / "run")
    straight = train(_config("--config.train.steps=4", *EVERY_STEP), tmp_path / "straight")
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(straight))):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert _same(_saved(tmp_path / "run"), _saved(tmp_path / "straight"))
    assert _same(_saved(tmp_path / "run", best=True), _saved(tmp_path / "straight", best=True))
    assert (tmp_path / "run" / "train_metrics.jsonl").read_bytes() == \
        (tmp_path / "straight" / "train_metrics.jsonl").read_bytes()


def test_resume_from_best_takes_a_workdir_back_past_a_saved_bad_checkpoint(tmp_path):
    train(_config("--config.train.steps=4"), tmp_path)   # checkpoints 2, 4; best/4
    # with the divergence check off, a learning rate of 1e4 saves a finite but much worse checkpoint 6
    train(_config("--config.train.steps=6", "--config.train.learning_rate=1e4", "--config.train.divergence_factor=0"),
          tmp_path)
    bad = _saved(tmp_path)[6][0]
    assert sorted(_saved(tmp_path)) == [4, 6] and sorted(_saved(tmp_path, best=True)) == [4]
    assert bad > 3 * _saved(tmp_path)[4][0]
    train(_config("--config.train.steps=6", "--config.train.resume_from=best"), tmp_path)
    again = _saved(tmp_path)
    assert sorted(again) == [4, 6] and again[6][0] < bad / 3   # the bad step 6 was replaced by a good one
    assert [line["step"] for line in _logged(tmp_path)] == [2, 4, 6]
    assert _logged(tmp_path)[-1]["val_bits_per_dim"] == again[6][0]
    assert [loss for loss, _ in _saved(tmp_path, best=True).values()] == [min(again[4][0], again[6][0])]


@pytest.mark.parametrize("overrides,match", [
    (["--config.train.resume_from=newest"], r"config.train.resume_from='newest' is not a checkpoint to resume from; "
                                            r"use 'latest', 'best' or the step of a checkpoint"),
    (["--config.train.resume_from=0"], r"resume_from='0' is not a checkpoint"),
    (["--config.train.resume_from=-3"], r"resume_from='-3' is not a checkpoint"),
    (["--config.train.divergence_factor=0.5"], r"divergence_factor=0.5 must be a number > 1 .* or 0 to turn that off"),
])
def test_bad_resume_and_divergence_settings_fail_in_one_line_and_write_nothing(tmp_path, overrides, match):
    with pytest.raises(OodgenError, match=match) as info:
        train(_config(*overrides), tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
