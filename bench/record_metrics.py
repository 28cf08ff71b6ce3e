"""Copies the detection table of an evaluated workdir into BENCHMARKS.md, with the commands that made it.

  python -m bench.record_metrics --workdir runs/vae_fashion_mnist --section vae_fashion_mnist \\
      --command "bash scripts/run_default.sh"
"""

import argparse
import json
from pathlib import Path

import numpy as np

from bench.runner import machine_description, write_section
from oodgen.config import load_saved_config
from oodgen.evaluation.harness import METRICS_FILE, RUN_FILE, SCORES_FILE, markdown_table
from oodgen.training import checkpoints


def evaluated(workdir: Path, outdir: Path, config) -> str:
    """'checkpoint step N (best) of batch B, S importance samples per bound': what evaluate.py scored, from
    its evaluation.json, else from the workdir's checkpoints and the saved config."""
    if (outdir / RUN_FILE).is_file():
        run = json.loads((outdir / RUN_FILE).read_text())
        which, step, samples = run["checkpoint"], run["checkpoint_step"], run["num_samples"]
    else:
        which = config.eval.get("checkpoint", "latest")
        best = which == "best" and (workdir / checkpoints.BEST_DIR).is_dir()
        manager = checkpoints.checkpoint_manager(workdir, read_only=True, best=best)
        step = manager.best_step() if best else manager.latest_step()
        manager.close()
        samples = config.eval.num_samples
    return (f"checkpoint step {step} ({which}) of batch {config.train.batch_size}, {samples} importance samples "
            "per bound")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--section", required=True)
    parser.add_argument("--command", required=True, help="the command that trained and evaluated the workdir")
    parser.add_argument("--title", default=None)
    parser.add_argument("--notes", default="")
    parser.add_argument("--outdir", default=None, help="where evaluate.py wrote its results (default: --workdir)")
    parser.add_argument("--machine", default=None, help="where the workdir was trained and evaluated "
                                                         "(default: this machine)")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    outdir = Path(args.outdir) if args.outdir else workdir
    config = load_saved_config(workdir)
    results = json.loads((outdir / METRICS_FILE).read_text())
    loaded = np.load(outdir / SCORES_FILE)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for key in loaded.files:
        scorer, dataset = key.split("/", 1)
        if scorer in results:
            scores.setdefault(scorer, {})[dataset] = loaded[key]
    body = "\n".join([
        f"### {args.title or args.section}",
        "",
        f"Command: `{args.command}` — model `{config.model.name}`, {evaluated(workdir, outdir, config)}. "
        f"Machine: {args.machine or machine_description()}.",
        *([args.notes, ""] if args.notes else [""]),
        markdown_table(results, scores, config.data.test),
    ])
    write_section(args.section, body)


if __name__ == "__main__":
    main()
