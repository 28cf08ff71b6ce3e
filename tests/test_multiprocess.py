"""A 2-process run on one machine (loopback coordinator, JAX's default gloo CPU collectives, 2 CPU devices
per process) trains and evaluates exactly as an independent 1-process, 1-device run does."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240

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
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "multiprocess_worker.py"), str(workdir),
                             str(outdir), *OVERRIDES, *distributed],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(processes: list[subprocess.Popen]) -> None:
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
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
