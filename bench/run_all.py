"""The whole benchmark table: every scorer on every model it applies to, Fashion-MNIST in, every OOD set
available offline (MNIST, letters, noise, constant, flips, inversion).

  python -m bench.run_all --quick     # small budgets, about 15-20 min on 2 CPU cores
  python -m bench.run_all             # the configs' own budgets (hours on a CPU; see BENCHMARKS.md)

Each model is trained into `<runs>/<entry>`; train.py resumes a partial run, and on a finished one takes no
step but completes the bookkeeping a crash may have left undone (best/, the log). Each (model, scorer) pair
is evaluated into `<runs>/<entry>/bench/<scorer>` and skipped when its metrics.json is there, so an
interrupted run resumes where it stopped. The table
(AUROC with a bootstrap 95% interval, AUPRC-in, AUPRC-out, FPR@95, published numbers beside ours where
a paper has the same pair) goes into BENCHMARKS.md, and an AUROC heat map into bench/figures/.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench import published  # noqa: E402
from bench.runner import machine_description, write_section  # noqa: E402
from oodgen.training import checkpoints  # noqa: E402
from oodgen.config import load_config_file, parse_overrides  # noqa: E402
from oodgen.evaluation.harness import METRICS_FILE, auroc_cell, evaluate  # noqa: E402
from oodgen.training.loop import train  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"

# Quick mode: a few hundred steps per model, 200 images per set, fewer regret / sampler steps.
QUICK_EVAL = ("--config.eval.max_examples=200", "--config.data.num_validation=1000",
              "--config.eval.likelihood_regret.num_steps=10")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One trained model and the scorers that apply to it."""
    name: str                          # the workdir under --runs, and the table's model column
    config: str                        # configs/<file>.py[:variant]
    scorers: tuple[str, ...]           # evaluated one at a time (the unit of resumption)
    overrides: tuple[str, ...] = ()    # for both modes
    scorer_overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (scorer, its own overrides); quick wins
    quick: tuple[str, ...] = ()        # quick mode only
    full: tuple[str, ...] = ()         # full mode only
    references: tuple[tuple[str, str], ...] = ()   # (config.eval.<scorer>.workdir, entry whose workdir it is)


ENTRIES = (
    Entry("vae", "configs/vae_fashion_mnist.py",
          # no input_complexity: this VAE models binarised pixels, and the scorer needs a likelihood of the
          # 8-bit image (it is refused; a Bernoulli NLL minus an 8-bit PNG length was meaningless)
          ("log_likelihood", "typicality", "grad_norms", "likelihood_regret", "composed"),
          overrides=("--config.eval.composed.features=log_likelihood,grad_norms",),
          scorer_overrides=(("likelihood_regret", ("--config.eval.max_examples=500",)),),   # as the reference
          quick=("--config.train.steps=600",)),
    Entry("vae_ensemble", "configs/vae_fashion_mnist.py", ("ensemble",),
          overrides=("--config.ensemble.size=5",), quick=("--config.train.steps=600", "--config.ensemble.size=3")),
    Entry("vae_swag", "configs/vae_fashion_mnist.py", ("ensemble",),
          overrides=("--config.swag.enabled=True", "--config.eval.ensemble.source=swag",
                     "--config.eval.checkpoint=latest"),
          quick=("--config.train.steps=600", "--config.swag.start_step=300", "--config.swag.collect_every=15",
                 "--config.swag.rank=10", "--config.eval.ensemble.num_swag_samples=4")),
    Entry("hvae", "configs/hvae_fashion_mnist.py",
          ("log_likelihood", "hvae_llr", "kl_per_level", "typicality", "grad_norms", "composed"),
          overrides=("--config.eval.composed.features=kl_per_level,grad_norms",),
          quick=("--config.train.steps=400",)),
    Entry("pixelcnn_background", "configs/pixelcnn_fashion_mnist.py:background", (),
          quick=("--config.train.steps=150",)),
    Entry("pixelcnn_local", "configs/pixelcnn_fashion_mnist.py:local", (),
          quick=("--config.train.steps=300",)),
    Entry("pixelcnn", "configs/pixelcnn_fashion_mnist.py",
          ("log_likelihood", "typicality", "input_complexity", "background_ratio", "local_ratio"),
          quick=("--config.train.steps=200",),
          references=(("background_ratio", "pixelcnn_background"), ("local_ratio", "pixelcnn_local"))),
    Entry("glow_background", "configs/glow_fashion_mnist.py:background", (),
          quick=("--config.train.steps=200",)),
    Entry("glow", "configs/glow_fashion_mnist.py",
          ("log_likelihood", "typicality", "input_complexity", "background_ratio"),
          quick=("--config.train.steps=300",), references=(("background_ratio", "glow_background"),)),
    Entry("score_net", "configs/score_net_fashion_mnist.py", ("msma",),
          quick=("--config.train.steps=400",)),
    # 1,300 network evaluations per image, 1.7 s per image on 2 CPU cores: the config's 500 images per set
    # and 5,000 held-out images to z-score against would take 4 h there, so the full table scores 200 per
    # set against 300 (minutes on a GPU: evaluate.py with the config's budget, BENCHMARKS ddpm_*_gpu).
    Entry("ddpm", "configs/ddpm_fashion_mnist.py", ("ddpm_reconstruction",),
          full=("--config.eval.max_examples=200", "--config.eval.max_fit_examples=300"),
          quick=("--config.train.steps=300", "--config.model.num_filters=16", "--config.eval.max_examples=64",
                 "--config.eval.ddpm_reconstruction.num_sampling_steps=20")),
)

# Published MNIST AUROCs (Fashion-MNIST in) by score, from bench/published.py (sources: the reproduction table).
PUBLISHED = {(method.score, "mnist"): f"{entry.auroc:.2f} ({method.paper}{'; secondary' if entry.source.startswith('secondary') else ''})"
             for method in published.METHODS for entry in published.PUBLISHED
             if entry.method == method.name and entry.pair == published.FMNIST_MNIST and entry.auroc is not None}


def entry_config(entry: Entry, runs: Path, quick: bool, scorer: str | None = None):
    """The entry's config: its file and overrides, then `scorer`'s own, then the mode's (quick or full)."""
    overrides = list(entry.overrides) + list(dict(entry.scorer_overrides).get(scorer, ()))
    overrides += list(QUICK_EVAL) + list(entry.quick) if quick else list(entry.full)
    overrides += [f"--config.eval.{scorer}.workdir={runs / ref}" for scorer, ref in entry.references]
    return parse_overrides(load_config_file(entry.config), overrides)


TIMES_FILE = "minutes.json"   # <runs>/<entry>/bench/minutes.json: minutes each step took when it ran


def _record_minutes(workdir: Path, step: str, seconds: float) -> None:
    path = workdir / "bench" / TIMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    times = json.loads(path.read_text()) if path.exists() else {}
    times[step] = round(seconds / 60, 2)
    path.write_text(json.dumps(times, indent=1))


def recorded_steps(entries: tuple[Entry, ...], runs: Path) -> dict[str, dict[str, float]]:
    """{entry: {step ("train" or a scorer): minutes it took as it ran}} for every entry with records."""
    paths = {entry.name: runs / entry.name / "bench" / TIMES_FILE for entry in entries}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}


def run(entries: tuple[Entry, ...], runs: Path, quick: bool) -> None:
    """Trains and evaluates what is missing, recording the minutes each step took."""
    for entry in entries:
        config = entry_config(entry, runs, quick)
        workdir = runs / entry.name
        finished = checkpoints.latest_step(workdir) >= config.train.steps
        if not finished:
            print(f"[run_all] training {entry.name} ({config.train.steps} steps)", flush=True)
        start = time.perf_counter()
        train(config, workdir)   # on a finished run: takes no step, completes what a crash left (best/, the log)
        if not finished:
            _record_minutes(workdir, "train", time.perf_counter() - start)
        for scorer in entry.scorers:
            outdir = workdir / "bench" / scorer
            if (outdir / METRICS_FILE).exists():
                continue
            print(f"[run_all] evaluating {entry.name} / {scorer}", flush=True)
            start = time.perf_counter()
            single = entry_config(entry, runs, quick, scorer)
            single.eval.scorers = [scorer]
            evaluate(single, workdir, outdir=outdir)
            _record_minutes(workdir, scorer, time.perf_counter() - start)


def collect(entries: tuple[Entry, ...], runs: Path) -> list[dict]:
    """One row per (model, score, OOD set) from every evaluated outdir."""
    rows = []
    for entry in entries:
        for scorer in entry.scorers:
            path = runs / entry.name / "bench" / scorer / METRICS_FILE
            if not path.exists():
                continue
            for score, per_set in json.loads(path.read_text()).items():
                for ood, m in per_set.items():
                    rows.append(dict(model=entry.name, score=score, ood=ood, **m))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | score | OOD set | AUROC [95% CI] | AUPRC-in | AUPRC-out | FPR@95 | published AUROC |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        published = PUBLISHED.get((r["score"], r["ood"].split(":")[0]), "")
        lines.append(f"| {r['model']} | {r['score']} | {r['ood']} | {auroc_cell(r)} | "
                     f"{r['auprc_in']:.3f} | {r['auprc_out']:.3f} | {r['fpr95']:.3f} | {published} |")
    return "\n".join(lines)


def _short(ood: str) -> str:
    return ood.replace("fashion_mnist:test+", "")


# The issue-16 goal's five sets (flips are reported beside them: many garments are mirror-symmetric)
GOAL_SETS = ("mnist", "letters", "noise", "constant", "fashion_mnist:test+invert")


def mean_aurocs(per_set: dict[str, float]) -> tuple[float, float]:
    """(mean AUROC over every OOD set of a row, mean over GOAL_SETS: NaN unless all five are there)."""
    goal = [per_set[s] for s in GOAL_SETS if s in per_set]
    return (float(np.mean(list(per_set.values()))),
            float(np.mean(goal)) if len(goal) == len(GOAL_SETS) else float("nan"))


def auroc_summary(rows: list[dict]) -> str:
    """The AUROCs at a glance: one row per (model, score), one column per OOD set, the mean over every set
    and over GOAL_SETS (so that no score is judged on MNIST alone), and the published MNIST AUROC where
    there is one."""
    sets = list(dict.fromkeys(r["ood"] for r in rows))
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["score"]), {})[r["ood"]] = r["auroc"]
    lines = ["| model | score | " + " | ".join(_short(s) for s in sets)
             + " | mean (all) | mean (mnist, letters, noise, constant, invert) | published (MNIST) |",
             "|---|---|" + "---:|" * (len(sets) + 2) + "---|"]
    for (model, score), per_set in cells.items():
        values = " | ".join(f"{per_set[s]:.3f}" if s in per_set else "" for s in sets)
        means = " | ".join(f"{m:.3f}" if np.isfinite(m) else "" for m in mean_aurocs(per_set))
        lines.append(f"| {model} | {score} | {values} | {means} | {PUBLISHED.get((score, 'mnist'), '')} |")
    return "\n".join(lines)


def plot_summary(rows: list[dict], path: Path, title: str) -> None:
    """AUROC heat map: one row per (model, score), one column per OOD set."""
    labels = list(dict.fromkeys(f"{r['model']} / {r['score']}" for r in rows))
    sets = list(dict.fromkeys(r["ood"] for r in rows))
    grid = np.full((len(labels), len(sets)), np.nan)
    for r in rows:
        grid[labels.index(f"{r['model']} / {r['score']}"), sets.index(r["ood"])] = r["auroc"]
    fig, ax = plt.subplots(figsize=(1.2 * len(sets) + 4, 0.28 * len(labels) + 1.5))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(sets)), [_short(s) for s in sets], rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i, j in np.ndindex(grid.shape):
        if np.isfinite(grid[i, j]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label="AUROC (Fashion-MNIST in)")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets: about 15-20 min on 2 CPU cores")
    parser.add_argument("--runs", default=None, help="workdir root (default: runs/bench_quick or runs/bench)")
    parser.add_argument("--only", default="", help="comma-separated entry names (default: all)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table, leave BENCHMARKS.md and bench/figures alone")
    parser.add_argument("--section", default=None,
                        help="BENCHMARKS.md section and figure name, holding only this run's entries "
                             "(default: run_all_quick or run_all_full, holding every entry evaluated so far)")
    args = parser.parse_args()
    runs = Path(args.runs or ("runs/bench_quick" if args.quick else "runs/bench"))
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {e.name for e in ENTRIES}
    if unknown:
        parser.error(f"unknown entries {sorted(unknown)}; choose from {[e.name for e in ENTRIES]}")
    entries = tuple(e for e in ENTRIES if not names or e.name in names)

    start = time.perf_counter()
    run(entries, runs, args.quick)
    this_run = time.perf_counter() - start
    # the default sections hold every entry evaluated so far; a --section of its own, only this run's
    covered = entries if args.section else ENTRIES
    rows = collect(covered, runs)
    steps = recorded_steps(covered, runs)
    minutes = {name: sum(per_step.values()) for name, per_step in steps.items()}
    missing = [f"{e.name}/{scorer}" for e in covered for scorer in e.scorers
               if not (runs / e.name / "bench" / scorer / METRICS_FILE).exists()]
    trained_before = [name for name, per_step in steps.items() if not any(s.startswith("train") for s in per_step)]
    mode = "quick" if args.quick else "full"
    section = args.section or f"run_all_{mode}"
    figure = FIGURES / f"{section}.png"
    if not args.no_write:
        plot_summary(rows, figure, f"oodgen benchmark table ({mode})")
    command = " ".join(["python -m bench.run_all", *(["--quick"] if args.quick else []),
                        *([f"--only {args.only}"] if args.only else []),
                        *([f"--section {args.section}"] if args.section else [])])
    timing = ", ".join(f"{name} {m:.1f}" for name, m in minutes.items())
    body = "\n".join([
        f"### The benchmark table ({mode} budgets)" + (f": {', '.join(e.name for e in covered)}"
                                                        if args.section else ""), "",
        f"Machine: {machine_description()}. Command: `{command}` (workdirs under `{runs}`). "
        f"Time to train and evaluate the entries below: {sum(minutes.values()):.1f} min, the sum of each "
        f"step's time as it ran (minutes per entry: {timing}; the last invocation took {this_run / 60:.1f} min). "
        f"Not run yet: {', '.join(missing) if missing else 'nothing'}. "
        + (f"Found fully trained (their training time is not in the sum): {', '.join(trained_before)}. "
           if trained_before else "") +
        f"Fashion-MNIST in; budgets: the `ENTRIES` table of bench/run_all.py. AUROC heat map: "
        f"[bench/figures/{figure.name}](bench/figures/{figure.name}).", "",
        "AUROC at a glance (Fashion-MNIST in; higher = better detection):", "",
        auroc_summary(rows), "",
        "Every metric, with a bootstrap 95% interval on AUROC:", "",
        markdown(rows)])
    print(body)
    if not args.no_write:
        write_section(section, body)


if __name__ == "__main__":
    main()
