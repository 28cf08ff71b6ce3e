"""Evaluation: restore a trained model, run the configured scorers over the in-distribution test set
and every OOD set, and write scores.npz, metrics.json and PNG plots into the workdir.
"""

import io
import json
import os
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from oodgen import checkpoints, data, metrics, plots, sharding
from oodgen.errors import OodgenError
from oodgen.models import build_model
from oodgen.scorers import build_scorer
from oodgen.training import create_train_state, load_training_data, make_optimizer
from oodgen.validation import check_images

SCORES_FILE = "scores.npz"
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"


def load_eval_sets(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """{dataset spec: uint8 images}: the in-distribution test set first, then each OOD set."""
    image_shape = tuple(config.data.image_shape)
    if config.eval.max_examples == 0 or config.eval.max_examples < -1:
        raise OodgenError(f"config.eval.max_examples={config.eval.max_examples} would leave empty sets; "
                          "use -1 for all examples or a positive cap")
    limit = config.eval.max_examples if config.eval.max_examples > 0 else None
    sets = {}
    for spec in [config.data.test, *config.eval.ood]:
        dataset = data.load(spec, image_shape=image_shape, size=limit, seed=config.eval.seed)
        sets[spec] = check_images(dataset.images[:limit], image_shape, what=spec)
    return sets


def restore_params(config: ml_collections.ConfigDict, workdir: str | os.PathLike, model,
                   mesh: jax.sharding.Mesh):
    """Parameters of the best (lowest validation bits/dim) or latest checkpoint, per config.eval.checkpoint.

    Read without writing anything. "best" falls back to the latest when the workdir has no best/.
    """
    which = config.eval.get("checkpoint", "latest")
    if which not in ("best", "latest"):
        raise OodgenError(f"config.eval.checkpoint={which!r}; use 'best' or 'latest'")
    best = which == "best" and (Path(workdir) / checkpoints.BEST_DIR).is_dir()
    manager = checkpoints.checkpoint_manager(workdir, read_only=True, best=best)
    sample = np.zeros((1, *model.image_shape), np.uint8)
    like = create_train_state(model, make_optimizer(config.train), jax.random.key(0), sample)
    state = checkpoints.restore(manager, jax.device_put(like, sharding.replicated(mesh)))
    return state.params, int(state.step)


def compute_metrics(scores: dict[str, dict[str, np.ndarray]], in_dist: str) -> dict:
    """{scorer: {ood set: {metric: value}}}, each OOD set against the in-distribution set."""
    results = {}
    for scorer, per_set in scores.items():
        results[scorer] = {}
        for name, values in per_set.items():
            if name == in_dist:
                continue
            row = metrics.ood_metrics(per_set[in_dist], values)
            row["auroc_ci95"] = list(metrics.bootstrap_auroc_ci(per_set[in_dist], values))
            results[scorer][name] = row
    return results


def markdown_table(results: dict, scores: dict[str, dict[str, np.ndarray]], in_dist: str) -> str:
    """One row per (scorer, OOD set): mean scores, AUROC (95% CI), AUPRC in/out, FPR@80/95, error."""
    lines = [f"In-distribution: `{in_dist}`. Higher score = more OOD.", "",
             "| scorer | OOD set | N | mean score (in / OOD) | AUROC [95% CI] | AUPRC-in | AUPRC-out "
             "| FPR@80 | FPR@95 | det. error |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scorer, rows in results.items():
        mean_in = scores[scorer][in_dist].mean()
        for name, m in rows.items():
            lo, hi = m["auroc_ci95"]
            lines.append(
                f"| {scorer} | {name} | {len(scores[scorer][name])} | {mean_in:.3f} / "
                f"{scores[scorer][name].mean():.3f} | {m['auroc']:.3f} [{lo:.3f}, {hi:.3f}] | "
                f"{m['auprc_in']:.3f} | {m['auprc_out']:.3f} | {m['fpr80']:.3f} | {m['fpr95']:.3f} | "
                f"{m['detection_error']:.3f} |")
    return "\n".join(lines)


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def write_outputs(out_dir: Path, scores: dict[str, dict[str, np.ndarray]], results: dict,
                  units: dict[str, str], in_dist: str) -> None:
    """scores.npz (keys `scorer/dataset`), metrics.json, and per scorer a ROC and a histogram PNG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{s}/{d}": v for s, per_set in scores.items() for d, v in per_set.items()})
    _write_atomic(out_dir / SCORES_FILE, buffer.getvalue())
    _write_atomic(out_dir / METRICS_FILE, json.dumps(results, indent=2).encode())
    for scorer, per_set in scores.items():
        curves = {name: (per_set[in_dist], values) for name, values in per_set.items() if name != in_dist}
        plots.plot_roc(curves, out_dir / PLOTS_DIR / f"roc_{scorer}.png", title=f"{scorer}: ROC vs {in_dist}")
        plots.plot_histograms(per_set, out_dir / PLOTS_DIR / f"hist_{scorer}.png", title=scorer,
                              xlabel=units[scorer], in_dist_name=in_dist)
        plots.plot_histogram_grid(per_set, out_dir / PLOTS_DIR / f"hist_grid_{scorer}.png",
                                  title=f"{scorer}: each OOD set against {in_dist}", xlabel=units[scorer],
                                  in_dist_name=in_dist)


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
             mesh: jax.sharding.Mesh | None = None) -> tuple[dict, str]:
    """Runs every configured scorer on every configured set; returns (metrics, Markdown table)."""
    mesh = sharding.data_mesh() if mesh is None else mesh
    workdir = Path(workdir)
    model = build_model(config.model, tuple(config.data.image_shape))
    params, step = restore_params(config, workdir, model, mesh)
    eval_sets = load_eval_sets(config)
    _, fit_images = load_training_data(config)
    in_dist = config.data.test

    scores, units = {}, {}
    for name in config.eval.scorers:
        scorer = build_scorer(name, model, config.eval, mesh)
        state = scorer.fit(params, fit_images)
        scores[name] = {spec: scorer.score(state, images)
                        for spec, images in tqdm(eval_sets.items(), desc=f"{name}", unit="set")}
        units[name] = scorer.units
        for spec, values in scores[name].items():
            if not np.all(np.isfinite(values)):
                raise OodgenError(f"scorer {name!r} gave non-finite scores on {spec!r}; "
                                  f"the checkpoint at step {step} may have diverged")
    results = compute_metrics(scores, in_dist)
    write_outputs(workdir, scores, results, units, in_dist)
    table = markdown_table(results, scores, in_dist)
    return results, f"Checkpoint step {step}. " + table
