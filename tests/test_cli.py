"""train.py and evaluate.py end to end, as a user runs them, on the tiny config."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SUBPROCESS_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
TINY = "configs/vae_fashion_mnist.py:tiny"


def _run(*args, check=True):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT_S)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    _run("train.py", "--config", TINY, "--workdir", str(workdir))
    _run("evaluate.py", "--workdir", str(workdir))
    return workdir


def test_evaluate_writes_scores_metrics_and_plots(trained):
    scores = np.load(trained / "scores.npz")
    sets = ["fashion_mnist:test", "noise", "fashion_mnist:test+vflip"]
    assert sorted(scores.files) == sorted(f"log_likelihood/{s}" for s in sets)
    for s in sets:  # every example of each (capped) set has a finite score
        assert scores[f"log_likelihood/{s}"].shape == (48,)
        assert np.all(np.isfinite(scores[f"log_likelihood/{s}"]))
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics["log_likelihood"]) == {"noise", "fashion_mnist:test+vflip"}
    assert 0 <= metrics["log_likelihood"]["noise"]["auroc"] <= 1
    for name in ("roc_log_likelihood.png", "hist_log_likelihood.png", "hist_grid_log_likelihood.png"):
        assert (trained / "plots" / name).stat().st_size > 1000


def test_rerunning_train_resumes_instead_of_starting_over(trained):
    result = _run("train.py", "--config", TINY, "--workdir", str(trained))
    lines = (trained / "train_metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]  # nothing retrained
    assert result.returncode == 0


@pytest.mark.parametrize("args,match", [
    (["train.py", "--config", TINY, "--workdir", "{w}", "--config.train.stepz=3"], "unknown config key"),
    (["evaluate.py", "--workdir", "{w}", "--config.eval.ood=['nope']"], "unknown dataset"),
    (["evaluate.py", "--workdir", "{w}", "--config.eval.max_examples=0"], "empty"),
    (["evaluate.py", "--workdir", "{w}", "--config.eval.max_fit_examples=-3"], "nothing to fit on"),
    (["evaluate.py", "--workdir", "{w}/missing"], "train there first"),
    (["evaluate.py", "--config", TINY, "--workdir", "{w}/missing"], "no checkpoints"),
])
def test_bad_input_exits_2_with_one_line_and_keeps_earlier_results(trained, args, match):
    before = {p: p.read_bytes() for p in [trained / "scores.npz", trained / "metrics.json"]}
    result = _run(*[a.replace("{w}", str(trained)) for a in args], check=False)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and match in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert all(p.read_bytes() == content for p, content in before.items())


def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    for f in [*(broken / "checkpoints").rglob("*"), *(broken / "best").rglob("*")]:
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"garbage")
    result = _run("evaluate.py", "--workdir", str(broken), check=False)
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_outdir_keeps_evaluations_apart(trained, tmp_path):
    before = (trained / "metrics.json").read_bytes()
    _run("evaluate.py", "--workdir", str(trained), "--outdir", str(tmp_path / "other"),
         "--config.eval.ood=['constant']")
    assert (trained / "metrics.json").read_bytes() == before
    assert set(json.loads((tmp_path / "other" / "metrics.json").read_text())["log_likelihood"]) == {"constant"}


def test_evaluating_with_another_held_out_split_exits_2_and_writes_nothing(trained, tmp_path):
    split = json.loads((trained / "split.json").read_text())
    assert split["num_validation"] == 64 and len(split["held_out_sha256"]) == 64
    before = (trained / "metrics.json").read_bytes()
    result = _run("evaluate.py", "--workdir", str(trained), "--outdir", str(tmp_path / "out"),
                  "--config.data.num_validation=100", check=False)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "held-out split differs" in error_lines[0] and "num_validation 100 vs 64" in error_lines[0]
    assert not (tmp_path / "out").exists() and (trained / "metrics.json").read_bytes() == before
