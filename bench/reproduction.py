"""The reproduction table: each method of the design's table, ours beside the number its paper (or another
paper's table) reports for the same pair, with the source and our model's budget.

  python -m bench.reproduction [--runs runs/bench] [--no-write]

Ours are read from the `bench.run_all` workdirs under --runs (train them with `python -m bench.run_all`);
a method whose entry is not evaluated there says so. Published numbers and their sources:
`bench/published.py`. A gap of more than 0.03 below the published AUROC is flagged, with the measured
explanation from `EXPLANATIONS` where there is one.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from bench import published
from bench.run_all import TIMES_FILE, collect, ENTRIES
from bench.runner import machine_description, write_section
from oodgen.config import load_saved_config
from oodgen.models import build_model
from oodgen.training import checkpoints

GAP = 0.03

# Measured explanations of gaps larger than GAP, by method; each names the measurement that shows it.
EXPLANATIONS: dict[str, str] = {
    "likelihood regret": "not explained yet. Candidate, not measured: this VAE models binarised pixels (Bernoulli), "
                         "the reference's a 256-way categorical of the 8-bit ones, with 1,000 importance samples "
                         "(`configs/vae_fashion_mnist.py:paper`, a GPU run)",
    "DDPM reconstruction": "not explained yet. Candidates, not measured: a 32-filter two-level U-Net trained 3,000 "
                           "steps against the paper's 128-channel U-Net with attention trained 300 epochs, and no "
                           "LPIPS term (`configs/ddpm_fashion_mnist.py:paper`, a GPU run)",
}


def budget(workdir: Path) -> str:
    """'<steps> steps × batch <B>, <P> parameters, <m> min to train' of a trained run_all workdir."""
    config = load_saved_config(workdir)
    model = build_model(config.model, tuple(config.data.image_shape))
    images = np.zeros((1, *config.data.image_shape), np.uint8)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
    members = config.get("ensemble", {}).get("size", 1)
    times = workdir / "bench" / TIMES_FILE
    minutes = json.loads(times.read_text()).get("train") if times.exists() else None
    return (f"{checkpoints.latest_step(workdir)} steps × batch {config.train.batch_size}"
            + (f" × {members} members" if members > 1 else "") + f", {count:,} parameters"
            + (f", {minutes:.1f} min to train" if minutes is not None else ""))


def ours(rows: list[dict], method: published.Method, pair: str) -> float | None:
    ood = published.OUR_SET.get(pair)
    found = [r["auroc"] for r in rows if r["model"] == method.entry and r["score"] == method.score and r["ood"] == ood]
    return found[0] if found else None


def mean_over_sets(rows: list[dict], method: published.Method) -> float | None:
    values = [r["auroc"] for r in rows if r["model"] == method.entry and r["score"] == method.score]
    return float(np.mean(values)) if values else None


def table(runs: Path) -> str:
    rows = collect(ENTRIES, runs)
    lines = ["| method | pair | ours (AUROC) | ours, mean over all our OOD sets | published AUROC | source | gap |",
             "|---|---|---:|---:|---:|---|---|"]
    budgets = {}
    for method in published.METHODS:
        for entry in published.PUBLISHED:
            if entry.method != method.name:
                continue
            value = ours(rows, method, entry.pair)
            mean = mean_over_sets(rows, method)
            if entry.pair not in published.OUR_SET:
                cell = "not run here (CIFAR-10 and SVHN need prepared TFDS copies)"
            elif value is None:
                cell = f"not evaluated yet (`{method.entry}` / `{method.score}` under `{runs}`)"
            else:
                cell = f"{value:.3f}"
                budgets.setdefault(method.entry, budget(runs / method.entry))
            gap = ""
            if value is not None and entry.auroc is not None and value < entry.auroc - GAP:
                gap = f"**{value - entry.auroc:+.3f}**: " + EXPLANATIONS.get(method.name, "not explained yet")
            shown = f"{entry.auroc:.3f}" if entry.auroc is not None else "not found"
            lines.append(f"| {method.name} ({method.paper}) | {entry.pair} | {cell} | "
                         f"{'' if mean is None or entry.pair not in published.OUR_SET else f'{mean:.3f}'} | "
                         f"{shown} | {entry.source} | {gap} |")
    budget_lines = ["| model (run_all entry) | budget |", "|---|---|"] + [
        f"| {name} | {text} |" for name, text in budgets.items()]
    return "\n".join([
        "### Reproduction: ours beside the published numbers", "",
        f"Machine: {machine_description()}. Command: `python -m bench.reproduction --runs {runs}` (ours: the "
        "`python -m bench.run_all` workdirs; published numbers and their sources: `bench/published.py`). "
        "Fashion-MNIST in. \"secondary\": a number that another paper's table quotes for the method. A gap "
        f"of more than {GAP} below the published AUROC is in bold.", "",
        *lines, "", "Our models' budgets (CPU):", "", *budget_lines])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/bench", help="the bench.run_all workdir root")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    body = table(Path(args.runs))
    print(body)
    if not args.no_write:
        write_section("reproduction", body)


if __name__ == "__main__":
    main()
