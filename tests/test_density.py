import warnings

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from oodgen.features import density
from oodgen.errors import OodgenError

DOFS = (1, 7, 1000, 100000)


@pytest.fixture(autouse=True)
def _single_blas_thread():
    """Tiny matrices: multi-threaded BLAS only adds overhead (100x under load on this 2-core machine)."""
    with threadpool_limits(1):
        yield


def _chi_square_features(n: int, seed: int = 0, scales=(0.5, 2.0, 1e-3, 3e-6)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([s * rng.chisquare(k, n) for k, s in zip(DOFS, scales)], axis=1)


def _bimodal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.where(rng.random(n) < 0.5, -4.0, 4.0)[:, None] * np.array([1.0, 0.5])
    return centres + rng.normal(size=(n, 2))


def _gaussian(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]]) + 10.0


def test_chi_square_matches_scipy():
    fit_x = _chi_square_features(400)
    fitted = density.ChiSquareDensity(DOFS).fit(fit_x)
    np.testing.assert_allclose(fitted.scales, fit_x.mean(axis=0) / np.array(DOFS), rtol=1e-12)
    x = _chi_square_features(50, seed=1)
    expected = sum(stats.chi2(df=k, scale=s).logpdf(x[:, l]) for l, (k, s) in enumerate(zip(DOFS, fitted.scales)))
    np.testing.assert_allclose(fitted.log_density(x), expected, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(fitted.score(x), -expected, rtol=1e-10, atol=1e-8)
    of_log = density.ChiSquareDensity(DOFS, of_log=True).fit(fit_x)
    np.testing.assert_allclose(of_log.log_density(x), expected + np.log(x).sum(axis=1), rtol=1e-10, atol=1e-8)


def test_chi_square_recovers_scale():
    scales = np.array([0.5, 2.0, 1e-3, 3e-6])
    fitted = density.ChiSquareDensity(DOFS).fit(_chi_square_features(20000, seed=2, scales=scales))
    # relative std of the estimate is sqrt(2 / (k N)): at most 1% for k = 1, N = 20000
    np.testing.assert_allclose(fitted.scales, scales, rtol=0.04)


def test_gaussian_log_matches_scipy():
    rng = np.random.default_rng(3)
    fit_x = np.exp(rng.normal([0.0, -5.0, 3.0], [1.0, 0.2, 2.0], size=(300, 3)))
    x = np.exp(rng.normal(size=(40, 3)))
    mu, sigma = np.log(fit_x).mean(axis=0), np.log(fit_x).std(axis=0, ddof=0)
    expected = stats.norm(mu, sigma).logpdf(np.log(x)).sum(axis=1)
    fitted = density.GaussianLogDensity().fit(fit_x)
    np.testing.assert_allclose(fitted.log_density(x), expected, rtol=1e-12)
    np.testing.assert_allclose(fitted.score(x), -expected, rtol=1e-12)
    of_x = density.GaussianLogDensity(of_log=False).fit(fit_x)
    np.testing.assert_allclose(of_x.log_density(x), expected - np.log(x).sum(axis=1), rtol=1e-12)


def test_gmm_one_component_is_the_sample_gaussian():
    fit_x = _gaussian(500, seed=4)
    x = _gaussian(30, seed=5)
    fitted = density.GaussianMixtureDensity(n_components=1).fit(fit_x)
    expected = stats.multivariate_normal(fit_x.mean(axis=0), np.cov(fit_x.T, bias=True)).logpdf(x)
    np.testing.assert_allclose(fitted.log_density(x), expected, rtol=1e-4, atol=1e-4)
    assert fitted.cv_log_likelihood == {}


def test_gmm_log_features_is_density_of_log():
    fit_x = np.exp(_gaussian(500, seed=6) / 5.0)
    x = np.exp(_gaussian(20, seed=7) / 5.0)
    fitted = density.GaussianMixtureDensity(n_components=1, log_features=True).fit(fit_x)
    log_fit = np.log(fit_x)
    expected = stats.multivariate_normal(log_fit.mean(axis=0), np.cov(log_fit.T, bias=True)).logpdf(np.log(x))
    np.testing.assert_allclose(fitted.log_density(x), expected, rtol=1e-4, atol=1e-4)


def test_gmm_cross_validation_picks_components():
    bimodal = density.GaussianMixtureDensity(folds=5, seed=0).fit(_bimodal(1000, seed=8))
    assert bimodal.n_components >= 2
    assert set(bimodal.cv_log_likelihood) == {1, 2, 4, 8}
    unimodal = density.GaussianMixtureDensity(folds=5, seed=0).fit(_gaussian(1000, seed=9))
    assert unimodal.n_components == 1


def test_gmm_scores_far_points_higher():
    fit_x = _bimodal(400, seed=10)
    fitted = density.fit_density("gmm", fit_x, n_components=(1, 2, 4), seed=1)
    near = fitted.score(_bimodal(100, seed=11))
    far = fitted.score(np.array([[0.0, 0.0], [20.0, -20.0], [-15.0, 3.0]]))
    assert far.min() > np.quantile(near, 0.99)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(12)
    fit_x = rng.normal(size=(200, 4)) * np.array([1.0, 10.0, 0.1, 3.0])
    x = np.concatenate([rng.normal(size=(30, 4)), fit_x[:5]])
    fitted = density.KNNDistance().fit(fit_x)
    mean, std = fit_x.mean(axis=0), fit_x.std(axis=0)
    z_fit, z = (fit_x - mean) / std, (x - mean) / std
    brute = np.sort(np.sqrt(((z[:, None, :] - z_fit[None, :, :]) ** 2).sum(-1)), axis=1)[:, 4]
    np.testing.assert_allclose(fitted.score(x), brute, rtol=1e-10)


def test_knn_log_features_matches_brute_force_on_log():
    rng = np.random.default_rng(13)
    fit_x = np.exp(rng.normal(size=(150, 3)) * np.array([1.0, 0.2, 2.0]))
    x = np.exp(rng.normal(size=(25, 3)))
    fitted = density.KNNDistance(k=3, log_features=True).fit(fit_x)
    log_fit, log_x = np.log(fit_x), np.log(x)
    z_fit = (log_fit - log_fit.mean(axis=0)) / log_fit.std(axis=0)
    z = (log_x - log_fit.mean(axis=0)) / log_fit.std(axis=0)
    brute = np.sort(np.sqrt(((z[:, None, :] - z_fit[None, :, :]) ** 2).sum(-1)), axis=1)[:, 2]
    np.testing.assert_allclose(fitted.score(x), brute, rtol=1e-10)


def test_fit_density_by_name_matches_classes():
    x = _chi_square_features(100)
    np.testing.assert_array_equal(density.fit_density("chi_square", x, dofs=DOFS).score(x),
                                  density.ChiSquareDensity(DOFS).fit(x).score(x))
    np.testing.assert_array_equal(density.fit_density("gaussian_log", x).score(x),
                                  density.GaussianLogDensity().fit(x).score(x))
    np.testing.assert_array_equal(density.fit_density("knn", x, k=3).score(x), density.KNNDistance(3).fit(x).score(x))


@pytest.mark.parametrize("name, kwargs", [("gaussian_log", {}), ("chi_square", {"dofs": (3, 3, 3, 3)}),
                                          ("gmm", {"n_components": 1}), ("knn", {})])
def test_zero_variance_and_non_finite_columns_are_dropped(name, kwargs):
    rng = np.random.default_rng(13)
    good = rng.chisquare(3, size=(60, 2))
    x = np.stack([good[:, 0], np.full(60, 2.0), good[:, 1], np.full(60, 2.0)], axis=1)
    x_bad = x.copy()
    x_bad[7, 3] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 2 of 4 features.*non-finite values \[3\].*zero variance \[1\]"):
        fitted = density.fit_density(name, x_bad, **kwargs)
    np.testing.assert_array_equal(fitted.selection.kept, [0, 2])
    reference = density.fit_density(name, good, **{**kwargs, **({"dofs": (3, 3)} if "dofs" in kwargs else {})})
    np.testing.assert_allclose(fitted.score(x), reference.score(good), rtol=1e-12)


def test_no_warning_when_all_columns_are_used():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        density.GaussianLogDensity().fit(_chi_square_features(50))


@pytest.mark.parametrize("name, kwargs", [("gaussian_log", {}), ("chi_square", {"dofs": (1, 2)}),
                                          ("gmm", {}), ("knn", {})])
def test_all_constant_features_raise(name, kwargs):
    with pytest.raises(OodgenError, match="no usable feature"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        density.fit_density(name, np.ones((20, 2)), **kwargs)


def test_score_time_errors():
    fitted = density.GaussianMixtureDensity(n_components=1).fit(_gaussian(50, seed=14))
    x = _gaussian(5, seed=15)
    x[2, 1] = np.nan
    x[3, 0] = np.inf
    with pytest.raises(OodgenError, match="2 of 15 .* NaN or infinite") as e:
        fitted.score(x)
    assert "\n" not in str(e.value)
    with pytest.raises(OodgenError, match="expected 3 features .* got 4"):
        fitted.score(np.ones((5, 4)))
    with pytest.raises(OodgenError, match="2-D"):
        fitted.score(np.ones(3))
    with pytest.raises(OodgenError, match="<= 0"):
        density.GaussianLogDensity().fit(_chi_square_features(50)).score(-_chi_square_features(3))


def test_fit_errors():
    with pytest.raises(OodgenError, match="unknown density 'flow'.*gaussian_log"):
        density.fit_density("flow", np.ones((10, 2)))
    with pytest.raises(OodgenError, match="unknown option.*n_neighbours"):
        density.fit_density("knn", np.ones((10, 2)), n_neighbours=3)
    with pytest.raises(OodgenError, match="missing option.*dofs"):
        density.fit_density("chi_square", np.ones((10, 2)))
    with pytest.raises(OodgenError, match="got 2 dofs but 3 features"):
        density.ChiSquareDensity((4, 5)).fit(np.ones((10, 3)))
    with pytest.raises(OodgenError, match="shape"):
        density.GaussianLogDensity().fit(np.ones((0, 3)))
    with pytest.raises(OodgenError, match="at least 2 fit examples"):
        density.GaussianLogDensity().fit(np.ones((1, 3)))
    with pytest.raises(OodgenError, match="at least 5 fit examples"):
        density.GaussianMixtureDensity(folds=5).fit(np.ones((4, 3)))
    with pytest.raises(OodgenError, match="at least 6 fit examples"):
        density.KNNDistance(k=5).fit(np.ones((5, 3)))
    with pytest.raises(OodgenError, match="every candidate n_components \\[7, 8\\] exceeds the 6 examples"):
        density.GaussianMixtureDensity(n_components=(7, 8), folds=5).fit(_gaussian(8, seed=16))
    with pytest.raises(OodgenError, match="at least 9 fit examples"):
        density.GaussianMixtureDensity(n_components=9).fit(_gaussian(8, seed=16))
    with pytest.raises(OodgenError, match="folds must be an int >= 2"):
        density.GaussianMixtureDensity(folds=2.5)
    with pytest.raises(OodgenError, match="positive"):
        density.ChiSquareDensity((3, 0))


def test_gmm_drops_candidates_larger_than_a_training_fold_with_a_warning():
    """MSMA's 2..20 components with 10 folds on 15 examples: training folds hold 13 (15 − ceil(15 / 10))."""
    x = _bimodal(15, seed=17)
    smallest = 15 - int(np.ceil(15 / 10))
    with pytest.warns(UserWarning, match=r"dropped candidate n_components \[14, 15, .*, 20\].*choosing among"):
        fitted = density.fit_density("gmm", x, n_components=list(range(2, 21)), folds=10)
    assert sorted(fitted.cv_log_likelihood) == list(range(2, smallest + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = density.fit_density("gmm", _bimodal(40, seed=18), n_components=list(range(2, 21)), folds=10)
    assert sorted(fitted.cv_log_likelihood) == list(range(2, 21))


@pytest.mark.parametrize("options, supplied, match", [
    ({"flow": {}}, None, r"where: unknown density 'flow'; choose from \['chi_square', 'gaussian_log', 'gmm', 'knn'\]"),
    ({"gmm": {"fold": 3}}, None,
     r"where.gmm: unknown option\(s\) \['fold'\]; its options are \['n_components', 'folds'"),
    ({"gmm": 5}, None, r"where.gmm must map option names to values"),
    ({"gmm": {"folds": 1}}, None, r"where.gmm: folds must be an int >= 2"),
    ({"knn": {"k": 0}}, None, r"where.knn: k must be a positive int"),
    ({"gaussian_log": {"of_log": "yes"}}, None, r"where.gaussian_log.of_log must be True or False"),
    ({"chi_square": {"dofs": [1]}}, {"chi_square": ("dofs",)}, r"\['dofs'\] are set by the scorer itself"),
    ({}, None, r"density 'chi_square' needs option\(s\) \['dofs'\]"),
    ("gmm", None, r"where must map density names to option dicts"),
])
def test_check_options_refuses_bad_options_in_one_line(options, supplied, match):
    with pytest.raises(OodgenError, match=match) as e:
        density.check_options(options, "where", used=("chi_square",) if options == {} else (), supplied=supplied)
    assert "\n" not in str(e.value)


def test_check_options_returns_plain_dicts_and_merge_overrides_field_by_field():
    import ml_collections
    options = ml_collections.ConfigDict({"gmm": {"n_components": [2, 3], "folds": 10}, "knn": {"k": 5}})
    checked = density.check_options(options, "where", used=("gmm", "knn", "chi_square"),
                                    supplied={"chi_square": ("dofs",)})
    assert checked == {"gmm": {"n_components": [2, 3], "folds": 10}, "knn": {"k": 5}}
    assert all(type(v) is dict for v in checked.values())
    merged = density.merge_options(checked, {"gmm": {"folds": 5}, "gaussian_log": {"of_log": False}})
    assert merged == {"gmm": {"n_components": [2, 3], "folds": 5}, "knn": {"k": 5},
                      "gaussian_log": {"of_log": False}}
    assert checked["gmm"]["folds"] == 10  # not modified in place
