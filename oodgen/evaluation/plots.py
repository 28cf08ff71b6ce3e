"""PNG plots of OOD scores: ROC curves and score histograms.

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, so pyplot state and a user's
interactive backend are untouched. Files are written atomically (temp file + ``os.replace``).
Convention: higher score = more OOD.
"""

import os
import io
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from oodgen.atomic import write_atomic
from oodgen.errors import OodgenError
from oodgen.evaluation.metrics import as_scores, auroc

_DPI = 120


def _new_figure() -> tuple[Figure, Axes]:
    """A fresh Agg-backed figure and its single axes."""
    fig = Figure(figsize=(6.0, 4.5), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure_atomic(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG to ``path`` via a fsynced temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return write_atomic(path, buffer.getvalue())


def _check_named(mapping: dict, what: str) -> None:
    """Reject an empty name -> scores mapping."""
    if not mapping:
        raise OodgenError(f"{what} is empty; pass at least one dataset name mapped to its scores.")


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str) -> Path:
    """One ROC curve (OOD positive) per OOD dataset; ``curves[name] = (scores_in f[N_in], scores_out f[N_out])``.

    The legend shows each AUROC; a dashed diagonal marks chance. Returns the PNG path.
    """
    _check_named(curves, "curves")
    fig, ax = _new_figure()
    for name, (scores_in, scores_out) in curves.items():
        s_in = as_scores(scores_in, f"{name} scores_in")
        s_out = as_scores(scores_out, f"{name} scores_out")
        labels = np.concatenate([np.zeros(s_in.size), np.ones(s_out.size)])
        fpr, tpr, _ = roc_curve(labels, np.concatenate([s_in, s_out]))
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(s_in, s_out):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (in-dist flagged OOD)",
           ylabel="true positive rate (OOD flagged)", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return save_figure_atomic(fig, path)


def _shared_bins(arrays: list[np.ndarray], n_bins: int, lo_pct: float, hi_pct: float) -> np.ndarray:
    """Bin edges f[n_bins + 1] spanning the pooled [lo_pct, hi_pct] percentile range."""
    lo, hi = np.percentile(np.concatenate(arrays), [lo_pct, hi_pct])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n_bins + 1)


def _prepare_histograms(scores: dict[str, np.ndarray], in_dist_name: str, n_bins: int,
                        robust_range: tuple[float, float]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validated score arrays and shared bin edges; raises OodgenError on bad arguments."""
    _check_named(scores, "scores")
    if in_dist_name not in scores:
        raise OodgenError(
            f"in_dist_name {in_dist_name!r} is not among the score sets {sorted(scores)}; pass one of those names."
        )
    if n_bins < 1:
        raise OodgenError(f"n_bins must be a positive integer, got {n_bins!r}.")
    arrays = {name: as_scores(s, f"{name} scores") for name, s in scores.items()}
    return arrays, _shared_bins(list(arrays.values()), n_bins, *robust_range)


def _draw_histogram(ax: Axes, values: np.ndarray, edges: np.ndarray, label: str, emphasised: bool) -> None:
    """A normalised step histogram; values outside the edges are counted in the edge bins."""
    ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges, density=True, histtype="step",
            linewidth=2.5 if emphasised else 1.2, color="black" if emphasised else None,
            zorder=3 if emphasised else 2, label=label)


def plot_histograms(
    scores: dict[str, np.ndarray],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    in_dist_name: str,
    *,
    n_bins: int = 60,
    robust_range: tuple[float, float] = (0.5, 99.5),
) -> Path:
    """Overlaid normalised step histograms of ``scores[name]`` f[N_name] on shared bins.

    Bins span the pooled ``robust_range`` percentiles; values outside are counted in the edge bins.
    ``in_dist_name`` is drawn emphasised. Returns the PNG path.
    """
    arrays, edges = _prepare_histograms(scores, in_dist_name, n_bins, robust_range)
    fig, ax = _new_figure()
    for name, arr in arrays.items():
        is_in = name == in_dist_name
        _draw_histogram(ax, arr, edges, f"{name} (in-dist)" if is_in else name, is_in)
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize="small")
    return save_figure_atomic(fig, path)


def plot_histogram_grid(
    scores: dict[str, np.ndarray],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    in_dist_name: str,
    *,
    n_bins: int = 60,
    robust_range: tuple[float, float] = (0.5, 99.5),
) -> Path:
    """One panel per OOD dataset: its score histogram against the in-distribution one, shared bins."""
    arrays, edges = _prepare_histograms(scores, in_dist_name, n_bins, robust_range)
    others = [name for name in arrays if name != in_dist_name] or [in_dist_name]
    cols = min(3, len(others))
    rows = -(-len(others) // cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes.flat, others)):
        _draw_histogram(ax, arrays[in_dist_name], edges, f"{in_dist_name} (in-dist)", True)
        if name != in_dist_name:
            _draw_histogram(ax, arrays[name], edges, name, False)
        ax.set_title(f"{name}: AUROC {auroc(arrays[in_dist_name], arrays[name]):.3f}", fontsize="medium")
        ax.set_xlim(edges[0], edges[-1])
        ax.legend(fontsize="x-small")
        if i + cols >= len(others):  # nothing drawn below this panel
            ax.set_xlabel(xlabel)
    for ax in axes.flat[len(others):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save_figure_atomic(fig, path)


def plot_feature_means(values: dict[str, np.ndarray], feature_names: list[str], path: str | os.PathLike,
                       in_dist_name: str, title: str = "mean feature score per set",
                       ylabel: str = "mean score") -> Path:
    """Mean of each feature, one line per dataset, with ±1.96 standard-error bars.

    ``values[name]`` is f[N, F], column j the feature ``feature_names[j]`` (e.g. the KL of latent level
    j + 1: OOD data spends its extra KL in the lowest levels, the picture behind LLR^{>k}). Log y-axis when
    every value is positive.
    """
    _check_named(values, "values")
    fig, ax = _new_figure()
    positive = True
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != len(feature_names) or not np.all(np.isfinite(v)):
            raise OodgenError(f"values for {name!r} must be a finite [N, {len(feature_names)}] array; "
                              f"got shape {v.shape}")
        positive = positive and bool(np.all(v > 0))
        columns = np.arange(1, v.shape[1] + 1)
        error = 1.96 * v.std(axis=0) / np.sqrt(v.shape[0])
        is_in = name == in_dist_name
        ax.errorbar(columns, v.mean(axis=0), yerr=error, marker="o", capsize=3,
                    linewidth=2.5 if is_in else 1.2, color="black" if is_in else None, zorder=3 if is_in else 2,
                    label=f"{name} (in-dist)" if is_in else name)
    ax.set(ylabel=ylabel, title=title, yscale="log" if positive else "linear")
    ax.set_xticks(np.arange(1, len(feature_names) + 1), feature_names)
    ax.legend(fontsize="small")
    return save_figure_atomic(fig, path)


def plot_pixel_maps(images: dict[str, np.ndarray], maps: dict[str, np.ndarray], path: str | os.PathLike,
                    title: str, units: str = "bits") -> Path:
    """Per dataset (a row), each image beside its per-pixel score map (diverging colours, 0 = white).

    ``images[name]`` uint8 [n, H, W, C] and ``maps[name]`` f[n, H, W] for the same n examples.
    """
    _check_named(maps, "maps")
    names = list(maps)
    cols = max(len(maps[name]) for name in names)
    limit = max(float(np.max(np.abs(maps[name]))) for name in names) or 1.0
    fig = Figure(figsize=(2.2 * cols, 1.2 * len(names) + 0.6), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(names), 2 * cols, squeeze=False)
    for row, name in enumerate(names):
        for i in range(cols):
            image_ax, map_ax = grid[row, 2 * i], grid[row, 2 * i + 1]
            for ax in (image_ax, map_ax):
                ax.set_xticks([])
                ax.set_yticks([])
            if i >= len(maps[name]):
                image_ax.set_visible(False)
                map_ax.set_visible(False)
                continue
            image = images[name][i]
            image_ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            shown = map_ax.imshow(maps[name][i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            map_ax.set_title(f"{maps[name][i].sum():+.0f}", fontsize="x-small")
        grid[row, 0].set_ylabel(name, fontsize="x-small", rotation=0, ha="right", va="center")
    fig.colorbar(shown, ax=grid, shrink=0.8, label=units)
    fig.suptitle(title)
    return save_figure_atomic(fig, path)
