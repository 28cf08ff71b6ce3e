"""bench/reproduction.py and bench/published.py: every method of the design's table has a row, every published
number has a source, ours are read from the run_all workdirs, and gaps over 0.03 are flagged."""

import json
import re
from pathlib import Path

import numpy as np

from bench import published, reproduction, run_all
from oodgen.config import load_config_file, parse_overrides
from oodgen.training.loop import train

DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


def test_every_method_has_published_rows_with_sources_and_a_run_all_entry():
    names = [m.name for m in published.METHODS]
    assert len(names) == len(set(names))
    assert {p.method for p in published.PUBLISHED} == set(names)     # every method has a row, and only those
    entries = {e.name: e for e in run_all.ENTRIES}
    for method in published.METHODS:
        assert method.entry in entries, method
    for p in published.PUBLISHED:
        assert p.pair in published.PAIRS and p.source
        if p.auroc is None:
            assert p.source.startswith("not found"), p
        else:
            assert 0 < p.auroc <= 1 and not p.source.startswith("not found"), p
    if DESIGN.exists():   # every author the design's method table cites has a method here
        rows = [line for line in DESIGN.read_text().splitlines() if line.count("|") == 4 and "(" in line]
        cited = [re.findall(r"\(([A-Z][a-zà-ÿ]+)|, ([A-Z][a-zà-ÿ]+) \d", line.split("|")[2]) for line in rows]
        authors = {a for found in cited for pair in found for a in pair if a}
        assert len(authors) >= 10 and authors <= {m.paper.split()[0] for m in published.METHODS}, authors

def test_table_reads_ours_from_the_workdirs_states_the_budget_and_flags_gaps(tmp_path):
    config = parse_overrides(load_config_file("configs/vae_fashion_mnist.py:tiny"), [])
    train(config, tmp_path / "vae")
    outdir = tmp_path / "vae" / "bench" / "likelihood_regret"
    outdir.mkdir(parents=True)
    metrics = {"likelihood_regret": {"mnist": {"auroc": 0.9, "auroc_ci95": [0.88, 0.92], "auprc_in": 0.5,
                                               "auprc_out": 0.5, "fpr95": 0.5},
                                     "fashion_mnist:test+vflip": {"auroc": 0.6, "auroc_ci95": [0.5, 0.7],
                                                                  "auprc_in": 0.5, "auprc_out": 0.5, "fpr95": 0.5}}}
    (outdir / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "vae" / "bench" / run_all.TIMES_FILE).write_text(json.dumps({"train": 1.25}))

    text = reproduction.table(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| likelihood regret") and "→mnist" in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[3] == "0.900" and cells[4] == f"{np.mean([0.9, 0.6]):.3f}" and cells[5] == "0.990"
    assert cells[7].startswith("**-0.090**")                          # 0.9 is more than 0.03 below 0.99
    # a method that is not evaluated says so; a pair that cannot run offline says why
    assert any("not evaluated yet" in line for line in text.splitlines() if line.startswith("| MSMA, GMM"))
    assert any("not run here" in line for line in text.splitlines() if "cifar10→svhn" in line)
    budget = next(line for line in text.splitlines() if line.startswith("| vae |"))
    assert f"{config.train.steps} steps × batch {config.train.batch_size}" in budget and "1.2 min" in budget
