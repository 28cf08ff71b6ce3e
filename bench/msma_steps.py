"""MSMA's Fashion-MNIST→MNIST AUROC as the score network trains: one network trained in stages to each
step count, evaluated after each (500 images per set, GMM and kNN fitted on 2,000 held-out images).

  python -m bench.msma_steps [--steps 400,1000,2000,3000] [--workdir runs/msma_steps]

Stages resume: a stage whose metrics.json is in `<workdir>/eval_<steps>` is skipped. The learning
rate is constant after warm-up, so training in stages equals one run to the last step count.
"""

import argparse
import json
from pathlib import Path

from bench.runner import machine_description, write_section
from oodgen.config import load_config_file, parse_overrides
from oodgen.evaluation.harness import METRICS_FILE, auroc_cell, evaluate
from oodgen.training.loop import METRICS_FILE as TRAIN_LOG
from oodgen.training.loop import train

CONFIG = "configs/score_net_fashion_mnist.py"
OVERRIDES = ("--config.train.checkpoint_every=200", "--config.eval.checkpoint=latest",
             "--config.eval.max_examples=500", "--config.eval.max_fit_examples=2000",
             "--config.eval.ood=mnist,constant,fashion_mnist:test+invert")


def run_stage(workdir: Path, steps: int) -> dict:
    """Trains to `steps` (resuming; train() refuses a workdir trained past it) and evaluates that checkpoint:
    its metrics.json as a dict."""
    outdir = workdir / f"eval_{steps}"
    if (outdir / METRICS_FILE).exists():
        return json.loads((outdir / METRICS_FILE).read_text())
    config = parse_overrides(load_config_file(CONFIG), [*OVERRIDES, f"--config.train.steps={steps}"])
    train(config, workdir)
    return evaluate(config, workdir, outdir=outdir)[0]


def held_out_losses(workdir: Path) -> dict[int, float]:
    """{step: σ²-weighted denoising loss on the held-out images}, as the training log records it at each
    checkpoint (its "val_denoising_loss")."""
    records = [json.loads(line) for line in (workdir / TRAIN_LOG).read_text().splitlines()]
    return {r["step"]: r["val_denoising_loss"] for r in records if "val_denoising_loss" in r}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="400,1000,2000,3000", help="comma-separated step counts, ascending")
    parser.add_argument("--workdir", default="runs/msma_steps")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    try:
        steps = sorted(int(s) for s in args.steps.split(","))
    except ValueError:
        parser.error(f"--steps={args.steps!r}: give whole numbers separated by commas, e.g. 400,1000,2000")
    workdir = Path(args.workdir)
    lines = ["| training steps | held-out loss | OOD set | msma_gmm AUROC [95% CI] | msma_knn AUROC [95% CI] |",
             "|---:|---:|---|---:|---:|"]
    for s in steps:
        metrics = run_stage(workdir, s)
        loss = held_out_losses(workdir).get(s, float("nan"))
        for ood in metrics["msma_gmm"]:
            cells = " | ".join(auroc_cell(metrics[name][ood]) for name in ("msma_gmm", "msma_knn"))
            lines.append(f"| {s} | {loss:.4f} | {ood} | {cells} |")
    body = "\n".join([
        "### MSMA AUROC as the score network trains (Fashion-MNIST in)", "",
        f"Machine: {machine_description()}. Command: `python -m bench.msma_steps --steps {args.steps}` "
        f"(workdir `{workdir}`): the default `{CONFIG}` network (16 filters, batch 64, constant learning "
        "rate after warm-up) trained in stages, each stage's latest checkpoint scored on 500 images per set, "
        "GMM and kNN fitted on the first 2,000 held-out images. Held-out loss: the denoising loss on the "
        "5,000 held-out images at that step, as train_metrics.jsonl logs it (its `val_denoising_loss`).", "",
        *lines])
    print(body)
    if not args.no_write:
        write_section("msma_steps", body)


if __name__ == "__main__":
    main()
