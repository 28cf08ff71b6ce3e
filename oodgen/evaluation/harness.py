"""Evaluation: restore a trained model, run the configured scorers over the in-distribution test set
and every OOD set, and write scores.npz, metrics.json and PNG plots into the workdir.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from oodgen import data, sharding
from oodgen.evaluation import metrics, plots
from oodgen.training import ensemble, heldout
from oodgen.errors import OodgenError
from oodgen.atomic import write_atomic
from oodgen.models import build_model
from oodgen.schema import validate_config
from oodgen.training.restore import load_trained_model, restore_state
from oodgen.scorers import build_scorer
from oodgen.scorers.ratios import Reference
from oodgen.training.loop import load_training_data
from oodgen.validation import check_images

SCORES_FILE = "scores.npz"
METRICS_FILE = "metrics.json"
RUN_FILE = "evaluation.json"  # what was evaluated: checkpoint step, importance samples, fit images
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


def load_fit_images(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> np.ndarray:
    """uint8[M, H, W, C]: the held-out in-distribution images scorers fit on (densities, z-scores), the
    first `config.eval.max_fit_examples` of the validation split (-1 or absent: all of it).

    Refused (one-line OodgenError) unless the validation split is the one the model in `workdir` was
    trained with (its split.json, oodgen.training.heldout): another split would fit on training images."""
    cap = config.eval.get("max_fit_examples", -1)
    if cap == 0 or cap < -1:
        raise OodgenError(f"config.eval.max_fit_examples={cap} would leave scorers nothing to fit on; "
                          "use -1 for the whole validation split or a positive cap")
    _, fit_images = load_training_data(config)
    heldout.check_split(workdir, config, fit_images)
    return fit_images if cap == -1 else fit_images[:cap]


def compute_metrics(scores: dict[str, dict[str, np.ndarray]], in_dist: str,
                    groups: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """{score name: {ood set: {metric: value}}}, each OOD set against the in-distribution set.

    `groups`: {score name: {dataset: int[N] group id per example}} for scores shared by groups of images
    (grad_norms with group_size > 1, `scorer.groups(N)`); the AUROC interval then resamples whole groups.
    Score names or datasets absent from it are bootstrapped per example.
    """
    results = {}
    for scorer, per_set in scores.items():
        results[scorer] = {}
        ids = (groups or {}).get(scorer, {})
        for name, values in per_set.items():
            if name == in_dist:
                continue
            row = metrics.ood_metrics(per_set[in_dist], values)
            row["auroc_ci95"] = list(metrics.bootstrap_auroc_ci(per_set[in_dist], values, groups_in=ids.get(in_dist),
                                                                groups_out=ids.get(name)))
            results[scorer][name] = row
    return results


def auroc_cell(m: dict) -> str:
    """"AUROC [lo, hi]" of one metrics row (`compute_metrics`), three decimals."""
    lo, hi = m["auroc_ci95"]
    return f"{m['auroc']:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown_table(results: dict, scores: dict[str, dict[str, np.ndarray]], in_dist: str) -> str:
    """One row per (scorer, OOD set): mean scores, AUROC (95% CI), AUPRC in/out, FPR@80/95, error."""
    lines = [f"In-distribution: `{in_dist}`. Higher score = more OOD.", "",
             "| scorer | OOD set | N | mean score (in / OOD) | AUROC [95% CI] | AUPRC-in | AUPRC-out "
             "| FPR@80 | FPR@95 | det. error |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scorer in scores:
        mean_in = scores[scorer][in_dist].mean()
        for name, m in results[scorer].items():
            lines.append(
                f"| {scorer} | {name} | {len(scores[scorer][name])} | {mean_in:.3f} / "
                f"{scores[scorer][name].mean():.3f} | {auroc_cell(m)} | "
                f"{m['auprc_in']:.3f} | {m['auprc_out']:.3f} | {m['fpr80']:.3f} | {m['fpr95']:.3f} | "
                f"{m['detection_error']:.3f} |")
    return "\n".join(lines)


_write_atomic = write_atomic


STAGING_PREFIX = ".evaluate-staging-"


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A fresh directory inside `out_dir` to write every output into; when the block succeeds its files are
    moved into `out_dir` (same relative paths), and when it fails (a full disk) it is removed, with `out_dir`
    itself if this created it: the outputs of an earlier evaluation stay whole, never half replaced."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        yield staging
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        for path in files:
            target = out_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def write_outputs(out_dir: Path, scores: dict[str, dict[str, np.ndarray]], results: dict,
                  units: dict[str, str], in_dist: str, extra_arrays: dict[str, np.ndarray] | None = None) -> None:
    """scores.npz (keys `score/dataset`, plus `extra_arrays`), metrics.json, and per score a ROC and
    histogram PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{s}/{d}": v for s, per_set in scores.items() for d, v in per_set.items()},
             **(extra_arrays or {}))
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


PIXEL_MAP_EXAMPLES = 4


def reference_resolver(eval_config: ml_collections.ConfigDict, mesh) -> Callable[[str], Reference]:
    """scorer name -> the `Reference` trained in `config.eval.<name>.workdir` (restored read-only)."""
    def resolve(name: str) -> Reference:
        setting = f"config.eval.{name}.workdir"
        workdir = (eval_config.get(name, None) or {}).get("workdir", "")
        if not workdir:
            raise OodgenError(f"{setting} is not set; point it at the workdir of the trained reference model")
        _, model, params = load_trained_model(workdir, mesh, what=setting)
        return Reference(model, params, f"{setting}={str(workdir)!r}")
    return resolve


def build_scorers(config: ml_collections.ConfigDict, model, mesh) -> list:
    """Every scorer of config.eval.scorers, each (scorer, model) pair checked: one-line refusals come here,
    before any checkpoint or dataset is read."""
    if not config.eval.scorers:
        raise OodgenError("config.eval.scorers is empty; name at least one scorer, e.g. log_likelihood")
    references = reference_resolver(config.eval, mesh)
    return [build_scorer(name, model, config.eval, mesh, references) for name in config.eval.scorers]


class ScorerOutputs(NamedTuple):
    """What `run_scorers` gives: scores {score name: {dataset: f32[N]}}, their units {score name: str},
    pixel maps {scorer: {dataset: f32[n, H, W]}} of the first few images of each set (scorers that have
    them), the names of the scores of `feature_report` scorers, and group ids {score name: {dataset: int[N]}}
    of scores that images share (the grouped gradient variant)."""
    scores: dict[str, dict[str, np.ndarray]]
    units: dict[str, str]
    maps: dict[str, dict[str, np.ndarray]]
    reported: set[str]
    groups: dict[str, dict[str, np.ndarray]]


def run_scorers(scorers: list, params, eval_sets: dict[str, np.ndarray], fit_images: np.ndarray,
                train_state=None) -> ScorerOutputs:
    """Fits every built scorer and scores every set (`ScorerOutputs`). Scorers over
    several parameter sets (`needs_stacked_params`, the `ensemble` scorer) are fitted on the sets they take
    from the restored `train_state`; the others on `params`."""
    scores: dict[str, dict[str, np.ndarray]] = {}
    units: dict[str, str] = {}
    maps: dict[str, dict[str, np.ndarray]] = {}
    reported: set[str] = set()
    groups: dict[str, dict[str, np.ndarray]] = {}
    for scorer in scorers:
        if scorer.needs_stacked_params:
            if train_state is None:
                raise OodgenError(f"scorer {scorer.name!r} needs the restored train state; pass train_state")
            state = scorer.fit(scorer.stacked_params(train_state), fit_images)
        else:
            state = scorer.fit(params, fit_images)
        if scorer.has_pixel_maps(state):
            maps[scorer.name] = {spec: scorer.pixel_maps(state, images[:PIXEL_MAP_EXAMPLES])
                                 for spec, images in eval_sets.items()}
        for spec, images in tqdm(eval_sets.items(), desc=scorer.name, unit="set"):
            for score_name, values in scorer.score_all(state, images).items():
                if not np.all(np.isfinite(values)):
                    raise OodgenError(f"scorer {scorer.name!r} gave non-finite {score_name!r} scores on {spec!r}; "
                                      "the checkpoint may have diverged")
                scores.setdefault(score_name, {})[spec] = values
                units[score_name] = scorer.score_units.get(score_name, scorer.units)
                if scorer.feature_report:
                    reported.add(score_name)
                ids = scorer.groups(len(images))
                if ids is not None and len(np.unique(ids)) < len(images):
                    groups.setdefault(score_name, {})[spec] = ids
    return ScorerOutputs(scores, units, maps, reported, groups)


def means_table(scores: dict[str, dict[str, np.ndarray]], names: list[str]) -> str:
    """Markdown: the mean of each score in `names` (columns) for each dataset (rows)."""
    sets = list(scores[names[0]])
    lines = ["Mean of each feature score per set:", "", "| dataset | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    lines += [f"| {spec} | " + " | ".join(f"{scores[n][spec].mean():.2f}" for n in names) + " |" for spec in sets]
    return "\n".join(lines)


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
             mesh: jax.sharding.Mesh | None = None, outdir: str | os.PathLike | None = None) -> tuple[dict, str]:
    """Runs every configured scorer on every configured set; returns (metrics, Markdown report).

    The whole config is checked against the schema (oodgen.schema.validate_config) and every (scorer, model)
    pair before anything is read. Outputs go to `outdir` (default: the workdir), so several evaluations of one
    model can coexist; they are written all together at the end (`staged`): a failure while writing them leaves
    the earlier ones whole.
    """
    validate_config(config, for_="evaluate")
    ensemble.check_eval_config(config)
    mesh = sharding.data_mesh() if mesh is None else mesh
    workdir = Path(workdir)
    outdir = workdir if outdir is None else Path(outdir)
    model = build_model(config.model, tuple(config.data.image_shape))
    scorers = build_scorers(config, model, mesh)
    train_state = restore_state(config, workdir, model, mesh)
    step, members = int(train_state.step), ensemble.settings(config).size
    params = ensemble.member(train_state.params, 0) if members > 1 else train_state.params  # single-model scorers
    fit_images = load_fit_images(config, workdir)   # refuses another held-out split before any scoring
    eval_sets = load_eval_sets(config)
    in_dist = config.data.test

    scores, units, maps, reported, groups = run_scorers(scorers, params, eval_sets, fit_images, train_state)
    results = compute_metrics(scores, in_dist, groups)
    note = f"Ensemble of {members} members; single-model scores use member 0. " if members > 1 else ""
    header = (f"Checkpoint step {step} ({config.eval.get('checkpoint', 'latest')}), {config.eval.num_samples} "
              f"importance samples per bound, {len(fit_images)} held-out images to fit on. {note}")
    report = [header + markdown_table(results, scores, in_dist)]
    feature_scores = [name for name in scores if name in reported]
    if feature_scores:
        report.append(means_table(scores, feature_scores))
    extra_arrays = {f"pixel_map/{scorer}/{spec}": m for scorer, per_set in maps.items()
                    for spec, m in per_set.items()}
    if not sharding.is_main_process():  # every process holds every score; only process 0 writes files
        return results, "\n\n".join(report)
    run = {"checkpoint": config.eval.get("checkpoint", "latest"), "checkpoint_step": step,
           "num_samples": int(config.eval.num_samples), "num_fit_images": len(fit_images),
           "scorers": list(config.eval.scorers)}
    with staged(outdir) as staging:
        write_outputs(staging, scores, results, units, in_dist, extra_arrays)
        _write_atomic(staging / RUN_FILE, json.dumps(run, indent=2).encode())
        for scorer, per_set in maps.items():
            plots.plot_pixel_maps({spec: eval_sets[spec][:PIXEL_MAP_EXAMPLES] for spec in per_set}, per_set,
                                  staging / PLOTS_DIR / f"pixel_map_{scorer}.png",
                                  title=f"{scorer} per pixel (red = evidence for OOD)", units="bits per pixel")
        if feature_scores:
            plots.plot_feature_means({spec: np.stack([scores[n][spec] for n in feature_scores], axis=1)
                                      for spec in eval_sets}, feature_scores, staging / PLOTS_DIR / "feature_means.png",
                                     in_dist_name=in_dist)
    return results, "\n\n".join(report)
