"""MSMA's Fashion-MNIST→MNIST AUROC as the score network trains: one network trained in stages to each
step count, evaluated after each (500 images per set, GMM and kNN fitted on 2,000 held-out images).
Beside the paper's densities (on the norms), the same densities on log norms, and the AUROC of each noise
level's norm alone (MNIST), which shows what the densities are given.

  python -m bench.msma_steps [--steps 400,1000,2000,3000] [--workdir runs/msma_steps] [--override ...]

Stages resume: a stage whose metrics.json is in `<workdir>/eval_<steps>` is skipped. The learning
rate is constant after warm-up, so training in stages equals one run to the last step count.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from bench.runner import machine_description, write_section
from oodgen.config import load_config_file, parse_overrides
from oodgen.evaluation import metrics as metric_fns
from oodgen.evaluation.harness import METRICS_FILE, auroc_cell, evaluate, load_eval_sets, load_fit_images
from oodgen.features import density
from oodgen.scorers import build_scorer
from oodgen.training.restore import load_trained_model
from oodgen.training.loop import METRICS_FILE as TRAIN_LOG
from oodgen.training.loop import train

CONFIG = "configs/score_net_fashion_mnist.py"
OVERRIDES = ("--config.train.checkpoint_every=200", "--config.eval.checkpoint=latest",
             "--config.eval.max_examples=500", "--config.eval.max_fit_examples=2000",
             "--config.eval.ood=mnist,constant,fashion_mnist:test+invert")


def stage_config(steps: int, overrides: tuple[str, ...]):
    return parse_overrides(load_config_file(CONFIG), [*OVERRIDES, *overrides, f"--config.train.steps={steps}"])


def run_stage(workdir: Path, steps: int, overrides: tuple[str, ...] = ()) -> dict:
    """Trains to `steps` (resuming; train() refuses a workdir trained past it) and evaluates that checkpoint:
    its metrics.json as a dict."""
    outdir = workdir / f"eval_{steps}"
    if (outdir / METRICS_FILE).exists():
        return json.loads((outdir / METRICS_FILE).read_text())
    config = stage_config(steps, overrides)
    train(config, workdir)
    return evaluate(config, workdir, outdir=outdir)[0]


def feature_aurocs(workdir: Path, steps: int, overrides: tuple[str, ...] = ()) -> dict:
    """{"log_<density>": {ood set: AUROC}, "per_sigma": {σ: MNIST AUROC of that level's norm alone}} for the
    stage's checkpoint, from the MSMA features of the evaluation's sets (stored in <workdir>/eval_<steps>)."""
    path = workdir / f"eval_{steps}" / "feature_aurocs.json"
    if path.exists():
        return json.loads(path.read_text())
    config = stage_config(steps, overrides)
    _, model, params = load_trained_model(workdir)
    scorer = build_scorer("msma", model, config.eval)
    sets = load_eval_sets(config)
    features = {name: scorer.features(params, images) for name, images in sets.items()}
    fit = scorer.features(params, load_fit_images(config, workdir))
    test = features.pop(config.data.test)
    options = scorer.density_options
    result = {}
    for name in scorer.densities:
        fitted = density.fit_density(name, fit, **{**options.get(name, {}), "log_features": True})
        result[f"log_{name}"] = {ood: metric_fns.auroc(fitted.score(test), fitted.score(f)) for ood, f in features.items()}
    result["per_sigma"] = {label: metric_fns.auroc(test[:, i], features["mnist"][:, i])
                           for i, label in enumerate(scorer.feature_names(params))}
    path.write_text(json.dumps(result, indent=1))
    return result


def held_out_losses(workdir: Path) -> dict[int, float]:
    """{step: σ²-weighted denoising loss on the held-out images}, as the training log records it at each
    checkpoint (its "val_denoising_loss")."""
    records = [json.loads(line) for line in (workdir / TRAIN_LOG).read_text().splitlines()]
    return {r["step"]: r["val_denoising_loss"] for r in records if "val_denoising_loss" in r}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="400,1000,2000,3000", help="comma-separated step counts, ascending")
    parser.add_argument("--workdir", default="runs/msma_steps")
    parser.add_argument("--override", action="append", default=[],
                        help="a config override for training and evaluation, e.g. --override=--config.model.num_filters=32")
    parser.add_argument("--section", default="msma_steps", help="the BENCHMARKS.md section to write")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    try:
        steps = sorted(int(s) for s in args.steps.split(","))
    except ValueError:
        parser.error(f"--steps={args.steps!r}: give whole numbers separated by commas, e.g. 400,1000,2000")
    workdir, overrides = Path(args.workdir), tuple(args.override)
    lines = ["| training steps | held-out loss | OOD set | msma_gmm AUROC [95% CI] | msma_knn AUROC [95% CI] "
             "| GMM on log norms | 5-NN on log norms |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    per_sigma = {}
    for s in steps:
        metrics = run_stage(workdir, s, overrides)
        logs = feature_aurocs(workdir, s, overrides)
        per_sigma[s] = logs["per_sigma"]
        loss = held_out_losses(workdir).get(s, float("nan"))
        for ood in metrics["msma_gmm"]:
            cells = " | ".join(auroc_cell(metrics[name][ood]) for name in ("msma_gmm", "msma_knn"))
            lines.append(f"| {s} | {loss:.4f} | {ood} | {cells} | {logs['log_gmm'][ood]:.3f} | "
                         f"{logs['log_knn'][ood]:.3f} |")
    sigmas = list(per_sigma[steps[0]])
    sigma_lines = ["| training steps | " + " | ".join(sigmas) + " |", "|---:|" + "---:|" * len(sigmas)] + [
        f"| {s} | " + " | ".join(f"{per_sigma[s][name]:.2f}" for name in sigmas) + " |" for s in steps]
    command = " ".join(["python -m bench.msma_steps", f"--steps {args.steps}", *(f"--override={o}" for o in overrides),
                        *([f"--workdir {workdir}"] if args.workdir != "runs/msma_steps" else []),
                        *([f"--section {args.section}"] if args.section != "msma_steps" else [])])
    body = "\n".join([
        "### MSMA AUROC as the score network trains (Fashion-MNIST in)", "",
        f"Machine: {machine_description()}. Command: `{command}` "
        f"(workdir `{workdir}`): the `{CONFIG}` network ({', '.join(overrides) or 'the defaults'}: batch 64, "
        "constant learning rate after warm-up) trained in stages, each stage's latest checkpoint scored on 500 "
        "images per set, GMM and kNN fitted on the first 2,000 held-out images; the paper's densities on the "
        "norms, then the same on log norms. Held-out loss: the denoising loss on the 5,000 held-out images at "
        "that step, as train_metrics.jsonl logs it (its `val_denoising_loss`).", "",
        *lines, "",
        "MNIST AUROC of each noise level's norm ‖σ s(x, σ)‖ alone (higher norm = more OOD; below 0.5: MNIST's norm "
        "is the smaller):", "", *sigma_lines])
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    main()
