import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from oodgen.evaluation import metrics
from oodgen.errors import OodgenError

CONTINUOUS = [(0, 50, 40), (1, 200, 300), (2, 7, 13), (3, 1000, 20)]


def _continuous(seed: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, n_in), rng.normal(0.8, 1.5, n_out)


def _tied(seed: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, n_in).astype(float), rng.integers(1, 4, n_out).astype(float)


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    return [_continuous(*c) for c in CONTINUOUS] + [_tied(*c) for c in CONTINUOUS]


def _naive_auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    total = 0.0
    for o in s_out:
        for i in s_in:
            total += 1.0 if o > i else 0.5 if o == i else 0.0
    return total / (len(s_in) * len(s_out))


def _naive_roc(s_in: np.ndarray, s_out: np.ndarray) -> list[tuple[float, float]]:
    """(fpr, tpr) for 'flag OOD if score >= t', t over the distinct scores from high to low, plus (0, 0)."""
    points = [(0.0, 0.0)]
    for t in sorted(set(s_in.tolist()) | set(s_out.tolist()), reverse=True):
        fpr = sum(1 for x in s_in if x >= t) / len(s_in)
        tpr = sum(1 for x in s_out if x >= t) / len(s_out)
        points.append((fpr, tpr))
    return points


def _naive_fpr_at_tpr(s_in: np.ndarray, s_out: np.ndarray, target: float) -> float:
    points = _naive_roc(s_in, s_out)
    for k, (fpr, tpr) in enumerate(points):
        if tpr >= target:
            if tpr == target:
                return fpr
            prev_fpr, prev_tpr = points[k - 1]
            return prev_fpr + (target - prev_tpr) / (tpr - prev_tpr) * (fpr - prev_fpr)
    raise AssertionError("ROC never reached the target TPR")


def _naive_detection_error(s_in: np.ndarray, s_out: np.ndarray) -> float:
    return min(0.5 * (1 - tpr) + 0.5 * fpr for fpr, tpr in _naive_roc(s_in, s_out))


def _labels(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[np.zeros(len(s_in)), np.ones(len(s_out))], np.r_[s_in, s_out]


@pytest.mark.parametrize("case", range(len(_cases())))
def test_auroc_auprc_match_sklearn_and_pairwise_count(case):
    s_in, s_out = _cases()[case]
    y, s = _labels(s_in, s_out)
    assert metrics.auroc(s_in, s_out) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.auroc(s_in, s_out) == pytest.approx(_naive_auroc(s_in, s_out), abs=1e-12)
    assert metrics.auprc_out(s_in, s_out) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert metrics.auprc_in(s_in, s_out) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("case", range(len(_cases())))
@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.8, 0.95, 0.99, 1.0])
def test_fpr_at_tpr_matches_brute_force(case, target):
    s_in, s_out = _cases()[case]
    assert metrics.fpr_at_tpr(s_in, s_out, target) == pytest.approx(_naive_fpr_at_tpr(s_in, s_out, target), abs=1e-12)


def test_fpr80_fpr95_are_fpr_at_tpr():
    s_in, s_out = _continuous(5, 300, 200)
    assert metrics.fpr80(s_in, s_out) == metrics.fpr_at_tpr(s_in, s_out, 0.80)
    assert metrics.fpr95(s_in, s_out) == metrics.fpr_at_tpr(s_in, s_out, 0.95)


def test_fpr95_interpolates_when_no_roc_point_hits_target():
    # OOD = 1..30, so TPR steps by 1/30 and 0.95 = 28.5/30 lies between thresholds 3 and 2.
    # In = [10.5, 2, 2, 2, 2, 0 x 5]: at t=3 TPR=28/30, FPR=1/10; at t=2 TPR=29/30, FPR=5/10.
    # Halfway between the two points: FPR = 0.1 + 0.5 * (0.5 - 0.1) = 0.3.
    s_out = np.arange(1.0, 31.0)
    s_in = np.array([10.5, 2, 2, 2, 2, 0, 0, 0, 0, 0], dtype=float)
    assert metrics.fpr95(s_in, s_out) == pytest.approx(0.3, abs=1e-12)


def test_fpr95_exact_hit_followed_by_horizontal_segment_takes_smaller_fpr():
    # OOD = 1..20: t=2 gives TPR 19/20 = 0.95 exactly with FPR 1/10 (only 5.5 >= 2);
    # t=1.5 keeps TPR 0.95 but FPR jumps to 4/10. The answer is the smaller FPR, 0.1.
    s_out = np.arange(1.0, 21.0)
    s_in = np.array([5.5, 1.5, 1.5, 1.5, 0, 0, 0, 0, 0, 0], dtype=float)
    assert metrics.fpr95(s_in, s_out) == pytest.approx(0.1, abs=1e-12)


@pytest.mark.parametrize("case", range(len(_cases())))
def test_detection_error_matches_brute_force(case):
    s_in, s_out = _cases()[case]
    assert metrics.detection_error(s_in, s_out) == pytest.approx(_naive_detection_error(s_in, s_out), abs=1e-12)


def test_perfect_and_reversed_separation():
    rng = np.random.default_rng(7)
    s_in = rng.normal(size=100)
    s_out = s_in.max() + 1.0 + rng.random(80)
    perfect = metrics.ood_metrics(s_in, s_out)
    assert perfect["auroc"] == 1.0
    assert perfect["auprc_in"] == pytest.approx(1.0)
    assert perfect["auprc_out"] == pytest.approx(1.0)
    assert perfect["fpr80"] == 0.0
    assert perfect["fpr95"] == 0.0
    assert perfect["detection_error"] == 0.0
    reversed_ = metrics.ood_metrics(s_out, s_in)
    assert reversed_["auroc"] == 0.0
    assert reversed_["fpr95"] == 1.0
    assert reversed_["detection_error"] == 0.5


def test_ood_metrics_keys_and_values():
    s_in, s_out = _tied(3, 60, 70)
    result = metrics.ood_metrics(s_in, s_out)
    assert list(result) == ["auroc", "auprc_in", "auprc_out", "fpr80", "fpr95", "detection_error"]
    assert result["fpr95"] == metrics.fpr95(s_in, s_out)
    assert all(isinstance(v, float) for v in result.values())


def test_weighted_auroc_matches_sklearn_sample_weight():
    rng = np.random.default_rng(11)
    uniq = np.sort(rng.choice(np.arange(40.0), size=25, replace=False))
    w_in = rng.integers(0, 4, size=(3, uniq.size)).astype(float)
    w_out = rng.integers(0, 4, size=(3, uniq.size)).astype(float)
    got = metrics._weighted_auroc(w_in, w_out)
    for b in range(3):
        y = np.r_[np.zeros(uniq.size), np.ones(uniq.size)]
        expected = roc_auc_score(y, np.r_[uniq, uniq], sample_weight=np.r_[w_in[b], w_out[b]])
        assert got[b] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    small = _continuous(0, 60, 60)
    large = _continuous(0, 3000, 3000)
    lo_s, hi_s = metrics.bootstrap_auroc_ci(*small, n_boot=500, seed=1)
    lo_l, hi_l = metrics.bootstrap_auroc_ci(*large, n_boot=500, seed=1)
    assert lo_s <= metrics.auroc(*small) <= hi_s
    assert lo_l <= metrics.auroc(*large) <= hi_l
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)
    assert metrics.bootstrap_auroc_ci(*small, n_boot=500, seed=1) == (lo_s, hi_s)


def test_bootstrap_ci_tied_scores_in_unit_interval():
    lo, hi = metrics.bootstrap_auroc_ci(*_tied(2, 80, 90), n_boot=300, level=0.9)
    assert 0.0 <= lo <= metrics.auroc(*_tied(2, 80, 90)) <= hi <= 1.0


@pytest.mark.parametrize("bad", [{"n_boot": 0}, {"n_boot": 2.5}, {"level": 1.0}, {"level": 0.0}])
def test_bootstrap_rejects_bad_settings(bad):
    with pytest.raises(OodgenError):
        metrics.bootstrap_auroc_ci(*_continuous(0, 10, 10), **bad)


def test_nan_scores_raise_one_line_error():
    s_in, s_out = _continuous(0, 20, 20)
    s_out[[2, 5]] = np.nan
    with pytest.raises(OodgenError) as info:
        metrics.ood_metrics(s_in, s_out)
    message = str(info.value)
    assert "\n" not in message
    assert "scores_out" in message and "2 non-finite" in message and "scorer" in message


def test_inf_scores_name_the_in_distribution_set():
    s_in, s_out = _continuous(0, 20, 20)
    s_in[0] = np.inf
    with pytest.raises(OodgenError, match="scores_in has 1 non-finite"):
        metrics.auroc(s_in, s_out)


@pytest.mark.parametrize("s_in", [np.array([]), np.zeros((3, 2)), np.float64(1.0)])
def test_bad_shapes_raise(s_in):
    with pytest.raises(OodgenError):
        metrics.auroc(s_in, np.ones(5))


@pytest.mark.parametrize("target", [-0.1, 1.5, float("nan")])
def test_fpr_at_tpr_rejects_bad_target(target):
    with pytest.raises(OodgenError):
        metrics.fpr_at_tpr(np.zeros(5), np.ones(5), target)


def _naive_grouped_ci(s_in, s_out, g_in, g_out, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Plain loop: each resample draws G whole groups with replacement per set (groups in sorted-id order, the
    in-set's draws first, rng.integers(0, G, G) per row), takes every member of each drawn group, sklearn AUROC."""
    rng = np.random.default_rng(seed)
    members_in = [np.flatnonzero(g_in == g) for g in np.unique(g_in)]
    members_out = [np.flatnonzero(g_out == g) for g in np.unique(g_out)]
    picks_in = rng.integers(0, len(members_in), size=(n_boot, len(members_in)))
    picks_out = rng.integers(0, len(members_out), size=(n_boot, len(members_out)))
    aucs = []
    for b in range(n_boot):
        x_in = np.concatenate([s_in[members_in[j]] for j in picks_in[b]])
        x_out = np.concatenate([s_out[members_out[j]] for j in picks_out[b]])
        aucs.append(roc_auc_score(np.r_[np.zeros(x_in.size), np.ones(x_out.size)], np.r_[x_in, x_out]))
    alpha = (1 - level) / 2
    low, high = np.quantile(aucs, [alpha, 1 - alpha])
    return float(low), float(high)


def _grouped_scores(seed: int, groups_in: int, groups_out: int, size: int):
    """Scores shared by groups of `size` (the last group smaller), group ids shuffled and not contiguous."""
    rng = np.random.default_rng(seed)
    ids_in = rng.permutation(np.arange(groups_in * size - 2) // size) * 7 + 3
    ids_out = rng.permutation(np.arange(groups_out * size - 1) // size) * 5 - 40
    return (rng.normal(0.0, 1.0, groups_in)[(ids_in - 3) // 7], rng.normal(0.7, 1.0, groups_out)[(ids_out + 40) // 5],
            ids_in, ids_out)


def test_grouped_bootstrap_matches_a_loop_over_whole_groups():
    s_in, s_out, g_in, g_out = _grouped_scores(0, 20, 15, 4)
    got = metrics.bootstrap_auroc_ci(s_in, s_out, n_boot=300, level=0.9, seed=5, groups_in=g_in, groups_out=g_out)
    assert got == pytest.approx(_naive_grouped_ci(s_in, s_out, g_in, g_out, 300, 0.9, 5), abs=1e-12)
    # one side grouped, the other per example
    got = metrics.bootstrap_auroc_ci(s_in, s_out, n_boot=300, seed=6, groups_in=g_in)
    assert got == pytest.approx(_naive_grouped_ci(s_in, s_out, g_in, np.arange(s_out.size), 300, 0.95, 6), abs=1e-12)
    # singleton groups are the per-example bootstrap, draw for draw
    plain = metrics.bootstrap_auroc_ci(s_in, s_out, n_boot=300, seed=7)
    assert plain == metrics.bootstrap_auroc_ci(s_in, s_out, n_boot=300, seed=7, groups_in=np.arange(s_in.size),
                                               groups_out=np.arange(s_out.size))
    assert plain == pytest.approx(_naive_grouped_ci(s_in, s_out, np.arange(s_in.size), np.arange(s_out.size),
                                                    300, 0.95, 7), abs=1e-12)


def test_grouped_interval_is_as_wide_as_that_of_one_score_per_group():
    """Each of 40 + 40 scores repeated 5 times: the per-image bootstrap treats the copies as independent and is
    ~sqrt(5) too narrow; resampling groups gives the width of the 40-vs-40 interval."""
    rng = np.random.default_rng(8)
    u_in, u_out = rng.normal(0.0, 1.0, 40), rng.normal(0.6, 1.0, 40)
    s_in, s_out = np.repeat(u_in, 5), np.repeat(u_out, 5)
    g_in, g_out = np.repeat(np.arange(40), 5), np.repeat(np.arange(40), 5)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    per_image = width(metrics.bootstrap_auroc_ci(s_in, s_out, n_boot=2000, seed=1))
    grouped = width(metrics.bootstrap_auroc_ci(s_in, s_out, n_boot=2000, seed=1, groups_in=g_in, groups_out=g_out))
    unique = width(metrics.bootstrap_auroc_ci(u_in, u_out, n_boot=2000, seed=2))
    assert grouped > 1.8 * per_image
    assert grouped == pytest.approx(unique, rel=0.15)


@pytest.mark.parametrize("bad", [{"groups_in": np.zeros(3)}, {"groups_out": np.zeros((10, 1))}])
def test_grouped_bootstrap_rejects_group_ids_of_the_wrong_length(bad):
    with pytest.raises(OodgenError, match="one group id per score") as e:
        metrics.bootstrap_auroc_ci(*_continuous(0, 12, 10), **bad)
    assert "\n" not in str(e.value)


def test_compute_metrics_bootstraps_groups_of_the_scores_that_have_them():
    from oodgen.evaluation.harness import compute_metrics
    s_in, s_out, g_in, g_out = _grouped_scores(1, 12, 10, 3)
    scores = {"grad_knn_group3": {"in": s_in, "ood": s_out}, "plain": {"in": s_in, "ood": s_out}}
    results = compute_metrics(scores, "in", {"grad_knn_group3": {"in": g_in, "ood": g_out}})
    expected = _naive_grouped_ci(s_in, s_out, g_in, g_out, 1000, 0.95, 0)
    assert results["grad_knn_group3"]["ood"]["auroc_ci95"] == pytest.approx(list(expected), abs=1e-12)
    singletons = _naive_grouped_ci(s_in, s_out, np.arange(s_in.size), np.arange(s_out.size), 1000, 0.95, 0)
    assert results["plain"]["ood"]["auroc_ci95"] == pytest.approx(list(singletons), abs=1e-12)
    assert results["plain"]["ood"]["auroc"] == results["grad_knn_group3"]["ood"]["auroc"]
    assert compute_metrics(scores, "in") == compute_metrics(scores, "in", {})
