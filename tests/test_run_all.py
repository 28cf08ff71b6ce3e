"""bench/run_all.py: per-(model, scorer) outdirs, per-scorer overrides, resumption, and the tables."""

import json

import numpy as np
import pytest

from bench import run_all
from bench.run_all import Entry
from oodgen.evaluation.harness import METRICS_FILE

TINY = Entry("vae", "configs/vae_fashion_mnist.py:tiny", ("log_likelihood", "composed"),
             overrides=("--config.eval.composed.features=log_likelihood,typicality",),
             scorer_overrides=(("log_likelihood", ("--config.eval.max_examples=24",)),))


def test_run_all_trains_once_evaluates_each_scorer_apart_resumes_and_tables(tmp_path, monkeypatch):
    run_all.run((TINY,), tmp_path, quick=False)
    recorded = json.loads((tmp_path / "vae" / "bench" / run_all.TIMES_FILE).read_text())
    assert sorted(recorded) == sorted(("train", *TINY.scorers)) and all(m >= 0 for m in recorded.values())
    assert run_all.recorded_steps((TINY,), tmp_path) == {"vae": recorded}
    outdirs = {scorer: tmp_path / "vae" / "bench" / scorer for scorer in TINY.scorers}
    for outdir in outdirs.values():
        assert (outdir / METRICS_FILE).is_file()
    config = run_all.entry_config(TINY, tmp_path, quick=False)
    test_set = config.data.test
    # the scorer's own override reaches only that scorer: 24 images per set for it, the config's 48 otherwise
    assert np.load(outdirs["log_likelihood"] / "scores.npz")[f"log_likelihood/{test_set}"].shape == (24,)
    composed = np.load(outdirs["composed"] / "scores.npz")
    name = "composed_gmm_log_likelihood+typicality"
    assert composed[f"{name}/{test_set}"].shape == (config.eval.max_examples,)

    # a second run finds the checkpoint and every metrics.json: nothing is trained or evaluated again, but the
    # log line a crash cut in half is completed (train.py on a finished run)
    log = tmp_path / "vae" / "train_metrics.jsonl"
    whole = log.read_bytes()
    log.write_bytes(whole[:-len(whole.splitlines()[-1]) // 2])
    contents = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and path != log}
    monkeypatch.setattr(run_all, "evaluate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-evaluated")))
    run_all.run((TINY,), tmp_path, quick=False)
    assert log.read_bytes() == whole
    assert contents == {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and path != log}

    rows = run_all.collect((TINY,), tmp_path)
    saved = {scorer: json.loads((outdir / METRICS_FILE).read_text()) for scorer, outdir in outdirs.items()}
    expected = [(score, ood, m["auroc"]) for scorer in TINY.scorers for score, per_set in saved[scorer].items()
                for ood, m in per_set.items()]
    assert [(r["score"], r["ood"], r["auroc"]) for r in rows] == expected and len(rows) >= 4
    table = run_all.markdown(rows).splitlines()
    assert len(table) == 2 + len(rows)
    lo, hi = rows[0]["auroc_ci95"]
    assert f"{rows[0]['auroc']:.3f} [{lo:.3f}, {hi:.3f}]" in table[2] and lo <= rows[0]["auroc"] <= hi
    summary = run_all.auroc_summary(rows).splitlines()
    scores = list(dict.fromkeys(r["score"] for r in rows))
    assert len(summary) == 2 + len(scores)
    assert all(f"{r['auroc']:.3f}" in next(line for line in summary if f"| {r['score']} |" in line) for r in rows)
    for score in scores:   # the mean over every set of the row, computed here from the rows themselves
        values = [r["auroc"] for r in rows if r["score"] == score]
        line = next(line for line in summary if f"| {score} |" in line)
        assert line.split("|")[-4].strip() == f"{sum(values) / len(values):.3f}"
    goal = {s: 0.5 + 0.1 * i for i, s in enumerate(run_all.GOAL_SETS)}
    assert run_all.mean_aurocs({**goal, "fashion_mnist:test+vflip": 0.0}) == (
        pytest.approx(sum(goal.values()) / 6), pytest.approx(0.7))
    assert np.isnan(run_all.mean_aurocs({"mnist": 0.9})[1])

    run_all.plot_summary(rows, tmp_path / "summary.png", "test")
    assert (tmp_path / "summary.png").stat().st_size > 1000

    # main: --section names the BENCHMARKS.md section and the figure; --no-write touches neither
    written = {}
    # (a second entry, never run: the default section lists it as not run yet, an own section leaves it out)
    monkeypatch.setattr(run_all, "ENTRIES", (TINY, Entry("other", TINY.config, ("log_likelihood",))))
    monkeypatch.setattr(run_all, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(run_all, "write_section", lambda name, body: written.update({name: body}))
    monkeypatch.setattr("sys.argv", ["run_all", "--runs", str(tmp_path), "--only", "vae", "--section", "run_all_mine"])
    run_all.main()
    assert list(written) == ["run_all_mine"] and "--only vae --section run_all_mine" in written["run_all_mine"]
    assert f"{rows[0]['auroc']:.3f}" in written["run_all_mine"] and "Not run yet: nothing" in written["run_all_mine"]
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["run_all_mine.png"]
    written.clear()
    monkeypatch.setattr("sys.argv", ["run_all", "--runs", str(tmp_path), "--only", "vae"])
    run_all.main()
    assert list(written) == ["run_all_full"] and "Not run yet: other/log_likelihood." in written["run_all_full"]
    written.clear()
    (tmp_path / "figures" / "run_all_full.png").unlink()
    monkeypatch.setattr("sys.argv", ["run_all", "--runs", str(tmp_path), "--only", "vae", "--no-write"])
    run_all.main()
    assert not written and [p.name for p in (tmp_path / "figures").iterdir()] == ["run_all_mine.png"]


def test_mode_only_overrides_reach_only_their_mode(tmp_path):
    entry = Entry("vae", "configs/vae_fashion_mnist.py:tiny", ("log_likelihood",),
                  quick=("--config.train.steps=3",), full=("--config.eval.max_fit_examples=7",))
    full, quick = (run_all.entry_config(entry, tmp_path, quick=q) for q in (False, True))
    assert (full.eval.max_fit_examples, full.train.steps) == (7, 4)
    assert (quick.eval.max_fit_examples, quick.train.steps) == (-1, 3)
