"""OOD-detection metrics.

Convention: higher score = more OOD. ``scores_in`` f[N_in] are in-distribution test scores,
``scores_out`` f[N_out] are OOD scores; OOD is the positive class unless a name says otherwise.
"""

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodgen.errors import OodgenError

_BOOT_CHUNK_ELEMENTS = 4_000_000


def as_scores(scores: ArrayLike, name: str) -> np.ndarray:
    """Validate one score set and return it as f64[N]: 1-D, non-empty, all finite."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise OodgenError(f"{name} must be numeric scores, got {type(scores).__name__} ({e}).") from e
    if arr.ndim != 1:
        raise OodgenError(
            f"{name} must be 1-D (one score per example), got shape {arr.shape}; flatten or pick one score per example."
        )
    if arr.size == 0:
        raise OodgenError(f"{name} is empty; every metric needs at least one score in each set.")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise OodgenError(
            f"{name} has {bad} non-finite score(s) (NaN/inf) out of {arr.size}; "
            "check the model/scorer output (diverged training, log of zero, overflow) before computing metrics."
        )
    return arr


def _labelled(scores_in: ArrayLike, scores_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels i[N_in+N_out] with OOD = 1, scores f[N_in+N_out])."""
    s_in = as_scores(scores_in, "scores_in")
    s_out = as_scores(scores_out, "scores_out")
    labels = np.concatenate([np.zeros(s_in.size, dtype=np.int64), np.ones(s_out.size, dtype=np.int64)])
    return labels, np.concatenate([s_in, s_out])


def _roc(scores_in: ArrayLike, scores_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Full ROC (fpr, tpr), one point per distinct threshold, starting at (0, 0); OOD positive."""
    labels, scores = _labelled(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the ROC curve with OOD as positive; ties count as half."""
    labels, scores = _labelled(scores_in, scores_out)
    return float(roc_auc_score(labels, scores))


def auprc_out(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Average precision with OOD as positive class (score as is)."""
    labels, scores = _labelled(scores_in, scores_out)
    return float(average_precision_score(labels, scores))


def auprc_in(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Average precision with in-distribution as positive class (score negated)."""
    labels, scores = _labelled(scores_in, scores_out)
    return float(average_precision_score(1 - labels, -scores))


def fpr_at_tpr(scores_in: ArrayLike, scores_out: ArrayLike, tpr: float) -> float:
    """Fraction of in-distribution examples flagged OOD where the OOD true-positive rate equals ``tpr``.

    Takes the first ROC point with TPR >= ``tpr``: its FPR if the TPR is hit exactly (the smallest
    such FPR), otherwise the FPR linearly interpolated from the previous point (randomised threshold).
    """
    target = float(tpr)
    if not 0.0 <= target <= 1.0:
        raise OodgenError(f"tpr must be in [0, 1], got {tpr!r}; pass e.g. 0.95 for FPR@95%TPR.")
    fpr_pts, tpr_pts = _roc(scores_in, scores_out)
    i = int(np.argmax(tpr_pts >= target))
    if tpr_pts[i] == target:
        return float(fpr_pts[i])
    frac = (target - tpr_pts[i - 1]) / (tpr_pts[i] - tpr_pts[i - 1])
    return float(fpr_pts[i - 1] + frac * (fpr_pts[i] - fpr_pts[i - 1]))


def fpr80(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """FPR at 80% TPR (OOD positive)."""
    return fpr_at_tpr(scores_in, scores_out, 0.80)


def fpr95(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """FPR at 95% TPR (OOD positive)."""
    return fpr_at_tpr(scores_in, scores_out, 0.95)


def detection_error(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Minimum over thresholds of 0.5 * (1 - TPR) + 0.5 * FPR (OOD positive)."""
    fpr_pts, tpr_pts = _roc(scores_in, scores_out)
    return float(np.min(0.5 * (1.0 - tpr_pts) + 0.5 * fpr_pts))


def ood_metrics(scores_in: ArrayLike, scores_out: ArrayLike) -> dict[str, float]:
    """All standard metrics: keys auroc, auprc_in, auprc_out, fpr80, fpr95, detection_error."""
    s_in = as_scores(scores_in, "scores_in")
    s_out = as_scores(scores_out, "scores_out")
    return {
        "auroc": auroc(s_in, s_out),
        "auprc_in": auprc_in(s_in, s_out),
        "auprc_out": auprc_out(s_in, s_out),
        "fpr80": fpr80(s_in, s_out),
        "fpr95": fpr95(s_in, s_out),
        "detection_error": detection_error(s_in, s_out),
    }


def _weighted_auroc(w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
    """AUROC f[B] from example counts on shared ascending unique values: w_in, w_out f[B, U].

    Mann-Whitney: each (in, out) pair scores 1 if out > in, 1/2 if tied.
    """
    below = np.cumsum(w_in, axis=1) - w_in
    pairs = (w_out * (below + 0.5 * w_in)).sum(axis=1)
    return pairs / (w_in.sum(axis=1) * w_out.sum(axis=1))


def _group_members(groups: ArrayLike | None, codes: np.ndarray, n_unique: int, name: str) -> sparse.csr_matrix:
    """Counts f[G, n_unique] of each unique-value code among the members of each of G groups (one group per
    example when ``groups`` is None); ``groups`` holds any label per example, shape [N]."""
    if groups is None:
        ids, n_groups = np.arange(codes.size), codes.size
    else:
        labels = np.asarray(groups)
        if labels.shape != codes.shape:
            raise OodgenError(f"{name} must give one group id per score, shape ({codes.size},), got shape "
                              f"{labels.shape}; pass the scorer's groups(N) for the same images.")
        _, ids = np.unique(labels, return_inverse=True)
        n_groups = int(ids.max()) + 1
    return sparse.csr_matrix((np.ones(codes.size), (ids.reshape(-1), codes)), shape=(n_groups, n_unique))


def _resample_counts(rng: np.random.Generator, members: sparse.csr_matrix, n_rows: int) -> np.ndarray:
    """Counts f[n_rows, n_unique] of unique-value codes in n_rows bootstrap resamples of whole groups.

    Each resample draws G groups with replacement (``rng.integers(0, G, size=(n_rows, G))``) and counts
    every member of every drawn group; ``members`` f[G, n_unique] is `_group_members`.
    """
    n_groups = members.shape[0]
    picks = rng.integers(0, n_groups, size=(n_rows, n_groups))
    flat = picks + n_groups * np.arange(n_rows)[:, None]
    drawn = np.bincount(flat.ravel(), minlength=n_rows * n_groups).reshape(n_rows, n_groups).astype(np.float64)
    return np.asarray((members.T @ drawn.T).T)


def bootstrap_auroc_ci(
    scores_in: ArrayLike,
    scores_out: ArrayLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups_in: ArrayLike | None = None,
    groups_out: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap (low, high) interval for AUROC, resampling each set independently.

    ``groups_in`` / ``groups_out``: a group id per example, int[N_in] / int[N_out], for scores shared by a
    group (e.g. grad_norms with group_size > 1): whole groups are resampled, as G draws with replacement
    among the set's G groups. None: each example is its own group (the usual bootstrap).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise OodgenError(f"n_boot must be a positive integer, got {n_boot!r}; use e.g. 1000.")
    if not 0.0 < float(level) < 1.0:
        raise OodgenError(f"level must be in (0, 1), got {level!r}; use e.g. 0.95 for a 95% interval.")
    s_in = as_scores(scores_in, "scores_in")
    s_out = as_scores(scores_out, "scores_out")
    uniq, codes = np.unique(np.concatenate([s_in, s_out]), return_inverse=True)
    codes = codes.reshape(-1)
    members_in = _group_members(groups_in, codes[: s_in.size], uniq.size, "groups_in")
    members_out = _group_members(groups_out, codes[s_in.size :], uniq.size, "groups_out")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // max(uniq.size, s_in.size + s_out.size))
    aucs = []
    for start in range(0, int(n_boot), chunk):
        rows = min(chunk, int(n_boot) - start)
        w_in = _resample_counts(rng, members_in, rows)
        w_out = _resample_counts(rng, members_out, rows)
        aucs.append(_weighted_auroc(w_in, w_out))
    alpha = (1.0 - float(level)) / 2.0
    low, high = np.quantile(np.concatenate(aucs), [alpha, 1.0 - alpha])
    return float(low), float(high)
