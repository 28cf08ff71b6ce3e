"""A 2-process run on one machine (loopback coordinator, JAX's default gloo CPU collectives, 2 CPU devices
per process) trains and evaluates exactly as an independent 1-process, 1-device run does."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import conftest
from conftest import communicate_all

ROOT = Path(__file__).resolve().parent.parent
# Compiling (LLVM's optimisation passes) is most of these workers' time and none of what they check: the same
# programs, on one process or two, agree. Every worker compiles with the same flag, unoptimised: ~40% faster.
FAST_COMPILE = "--xla_backend_optimization_level=0"

# A tiny VAE on 8x8 synthetic images: 4 steps of 16 (checkpoints at 2 and 4), then two scorers on 13
# images per set in batches of 4 (ragged: the last batch has 1 real example).
OVERRIDES = [
    "--config.data.train=noise", "--config.data.test=constant", "--config.data.image_shape=(8,8,1)",
    "--config.data.num_validation=16", "--config.data.max_train_examples=256",
    "--config.model.latent_dim=3", "--config.model.channels=(4,)",
    "--config.eval.ood=noise,constant+invert", "--config.eval.max_examples=13", "--config.eval.batch_size=4",
    "--config.eval.scorers=log_likelihood,grad_norms", "--config.eval.grad_norms.densities=gaussian_log",
    "--config.eval.grad_norms.kernel=flops",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir: Path, outdir: Path, devices: int, distributed: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OODGEN_") and k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), PYTHONPATH=str(ROOT),
               XLA_FLAGS=FAST_COMPILE)
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "multiprocess_worker.py"), str(workdir),
                             str(outdir), *OVERRIDES, *distributed],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(processes: list[subprocess.Popen]) -> None:
    outputs = communicate_all(processes, "tests/multiprocess_worker.py")
    for i, (p, out) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"worker {i} exited {p.returncode}:\n{out[-3000:]}"


def test_two_processes_agree_with_one_process(tmp_path):
    port = _free_port()
    one = _start(tmp_path / "one", tmp_path / "one_out", 1, [])
    two = [_start(tmp_path / "two", tmp_path / f"two_out{i}", 2,
                  [f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                   "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"])
           for i in range(2)]
    _wait([one, *two])

    single, multi = np.load(tmp_path / "one_out" / "params.npz"), np.load(tmp_path / "two_out0" / "params.npz")
    assert (int(single["process_count"]), int(single["device_count"])) == (1, 1)
    assert (int(multi["process_count"]), int(multi["device_count"])) == (2, 4)
    assert int(single["step"]) == int(multi["step"]) == 4
    param_keys = [k for k in single.files if k.startswith("param/")]
    assert param_keys and sorted(param_keys) == sorted(k for k in multi.files if k.startswith("param/"))
    for key in param_keys:
        np.testing.assert_allclose(multi[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)

    scores_one, scores_two = np.load(tmp_path / "one_out" / "scores.npz"), np.load(tmp_path / "two_out0" / "scores.npz")
    assert sorted(scores_one.files) == sorted(scores_two.files)
    assert {k.split("/")[0] for k in scores_one.files} == {"log_likelihood", "grad_gaussian_log"}
    for key in scores_one.files:
        assert scores_one[key].shape == (13,), key
        np.testing.assert_allclose(scores_two[key], scores_one[key], rtol=1e-4, atol=1e-5, err_msg=key)

    # Only process 0 writes: process 1's outdir was never made, and the training log has one line per log step.
    assert not (tmp_path / "two_out1").exists()
    logged = [json.loads(line) for line in (tmp_path / "two" / "train_metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    saved = json.loads((tmp_path / "two" / "config.json").read_text())
    assert saved["distributed"]["process_id"] == 0  # process 0's config


def test_a_hung_subprocess_is_killed_and_fails_the_test_with_a_clear_message(monkeypatch):
    """The shared limit (conftest.SUBPROCESS_TIMEOUT_S), here shrunk to 3 s: a worker that never ends is killed
    and the test fails saying which one hung and after how long; a worker that finished is not touched."""
    monkeypatch.setattr(conftest, "SUBPROCESS_TIMEOUT_S", 3.0)
    start = lambda code: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,  # noqa: E731
                                          stderr=subprocess.STDOUT, text=True)
    done, hung = start("print('finished')"), start("import time; print('started', flush=True); time.sleep(3600)")
    with pytest.raises(pytest.fail.Exception, match=r"worker \[1\] of 2 still running after 3 s .*probably a hang; "
                                                    r"killed.*started") as info:
        communicate_all([done, hung], "worker")
    assert "\n" not in str(info.value).split(". Output")[0]
    assert hung.poll() is not None and hung.returncode < 0  # killed by a signal, not left running
    assert done.returncode == 0


def test_the_shared_limit_is_generous_and_scales(monkeypatch):
    monkeypatch.delenv("OODGEN_TEST_TIMEOUT_SCALE", raising=False)
    assert conftest._timeout_scale() == 1.0 and conftest.BASE_TIMEOUT_S >= 1800
    monkeypatch.setenv("OODGEN_TEST_TIMEOUT_SCALE", "2.5")
    assert conftest._timeout_scale() == 2.5
    for bad in ("0", "-1", "nan", "fast"):
        monkeypatch.setenv("OODGEN_TEST_TIMEOUT_SCALE", bad)
        with pytest.raises(pytest.UsageError, match="OODGEN_TEST_TIMEOUT_SCALE"):
            conftest._timeout_scale()
