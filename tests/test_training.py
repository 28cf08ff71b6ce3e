import gzip
import hashlib
import json
import os

import jax
import numpy as np
import pytest

from oodgen.training import checkpoints
from oodgen.config import load_config_file, parse_overrides
from oodgen.errors import OodgenError
from oodgen.training.loop import batch_indices, train


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
    with pytest.raises(OodgenError, match=r"training diverged at step \d: .*; nothing after step 2 was saved, and "
                                          r"checkpoint step 2 is the last good one: re-run with "
                                          r"--config.train.resume_from=2 --config.train.learning_rate=1e\+29") as info:
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


# --- the held-out split is recorded at training and checked at evaluation ---------------------------------

def _raw_fashion_mnist_train(config) -> np.ndarray:
    """uint8[60000, 28, 28, 1] read straight from the IDX file (a 16-byte header, then the pixels)."""
    from oodgen import data
    from oodgen.data import fashion_mnist
    if not data.load(config.data.train, image_shape=(28, 28, 1)).source.startswith("idx:"):
        pytest.skip("Fashion-MNIST comes from a TFDS copy here, not the IDX files this test reads")
    with gzip.open(fashion_mnist.idx_dir() / "train-images-idx3-ubyte.gz") as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)


def test_the_held_out_split_is_recorded_and_another_is_refused(tmp_path):
    from oodgen.evaluation.harness import evaluate
    config, workdir = _config(), tmp_path / "run"
    train(config, workdir)
    raw, num_val = _raw_fashion_mnist_train(config), config.data.num_validation
    split = json.loads((workdir / "split.json").read_text())
    assert split["held_out_sha256"] == hashlib.sha256(raw[-num_val:].tobytes()).hexdigest()
    train_part = raw[:-num_val][:config.data.max_train_examples]
    assert split["train_sha256"] == hashlib.sha256(train_part.tobytes()).hexdigest()
    assert (split["num_held_out"], split["num_train"], split["num_validation"]) == (64, 512, 64)
    assert split["data.train"] == "fashion_mnist:train" and split["max_train_examples"] == 512
    recorded, log = (workdir / "split.json").read_bytes(), (workdir / "train_metrics.jsonl").read_bytes()

    # evaluating with another split is refused in one line, and writes nothing
    with pytest.raises(OodgenError, match=r"held-out split differs from the one .*run was trained with "
                                          r"\(num_validation 32 vs 64, now vs at training\): evaluate with") as info:
        evaluate(_config("--config.data.num_validation=32"), workdir, outdir=tmp_path / "eval")
    assert "\n" not in str(info.value) and not (tmp_path / "eval").exists()
    # so is resuming with another split; the record stays as it was
    with pytest.raises(OodgenError, match=r"num_validation 32 vs 64.*resume with the data settings"):
        train(_config("--config.data.num_validation=32"), workdir)
    assert (workdir / "split.json").read_bytes() == recorded
    # the same settings over other pixels (a changed dataset) are refused too
    (workdir / "split.json").write_text(json.dumps({**split, "held_out_sha256": "0" * 64}))
    with pytest.raises(OodgenError, match=r"held_out_sha256 [0-9a-f]{12} vs 000000000000.*data behind"):
        evaluate(config, workdir, outdir=tmp_path / "eval")

    # a workdir trained before splits were recorded: refused, with a fix that records it without a step
    (workdir / "split.json").unlink()
    with pytest.raises(OodgenError, match=r"has no split.json .* re-run train.py .* takes no training step"):
        evaluate(config, workdir, outdir=tmp_path / "eval")
    with pytest.raises(OodgenError, match=r"num_validation 32 vs 64, now vs its config.json"):
        train(_config("--config.data.num_validation=32"), workdir)   # would record a wrong split
    assert not (workdir / "split.json").exists()
    train(config, workdir)
    assert (workdir / "split.json").read_bytes() == recorded
    assert (workdir / "train_metrics.jsonl").read_bytes() == log   # no step taken
    assert checkpoints.latest_step(workdir) == config.train.steps
    evaluate(config, workdir, outdir=tmp_path / "eval")
    assert (tmp_path / "eval" / "metrics.json").is_file()


# --- one trainer per workdir ------------------------------------------------------------------------------

HOLD_LOCK = """
import os, signal, sys
from oodgen.training.lock import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.readline()               # until the test says so
os.kill(os.getpid(), signal.SIGKILL)   # dies holding the lock: nothing released by Python
"""


def test_a_second_trainer_is_refused_naming_the_first_and_a_killed_ones_lock_does_not_block(tmp_path):
    import subprocess
    import sys
    from oodgen.training.lock import LOCK_FILE
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OodgenError, match=rf"another train.py \(PID {holder.pid}\) is training in .*run.* wait "
                                              r"for it to finish or stop it, or train in another --workdir") as info:
            train(_config(), workdir)
        assert "\n" not in str(info.value)
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]   # nothing read or written behind its back
    finally:
        holder.communicate("go\n", timeout=60)
    assert holder.returncode == -9 and (workdir / LOCK_FILE).read_text().strip() == str(holder.pid)   # stale file
    train(_config(), workdir)   # the kernel released the dead process's flock
    assert checkpoints.latest_step(workdir) == 4
    assert (workdir / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_the_lock_is_exclusive_between_open_files_and_free_once_released(tmp_path):
    from oodgen.training.lock import WorkdirLock
    first, second = WorkdirLock(tmp_path), WorkdirLock(tmp_path)
    with first:
        with pytest.raises(OodgenError, match=rf"another train.py \(PID {os.getpid()}\)"):
            second.acquire()
        first.acquire()   # again: a no-op
    with second:          # released on exit
        assert second.held
