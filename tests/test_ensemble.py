"""Deep ensembles and SWAG: the vmapped member step, resuming, SWAG's math, the `ensemble` scores, the pipeline."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen.training import ensemble, swag
from oodgen.config import load_config_file, parse_overrides
from oodgen.errors import OodgenError
from oodgen.evaluation.harness import evaluate
from oodgen.models import build_model
from oodgen.models.vae import VAEModel
from oodgen.training.restore import load_trained_model, restore_state
from oodgen.scorers import build_scorer
from oodgen.scorers.ensemble import SCORE_NAMES, EnsembleScorer, ensemble_scores
from oodgen.sharding import data_mesh, replicated
from oodgen.training.loop import (TrainState, create_run_state, make_ensemble_train_step, make_optimizer, make_train_step,
                             train)

SMALL = VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,))


def _config(*overrides):
    return parse_overrides(load_config_file("configs/vae_fashion_mnist.py:tiny"), list(overrides))


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _images(n: int, seed: int = 0, shape=(8, 8, 1)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.uint8)


# --- SWAG ------------------------------------------------------------------------------------------------

def _iterates(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"a": rng.normal(size=3).astype(np.float32), "b": {"c": rng.normal(1.0, 2.0, (2, 2)).astype(np.float32)}}
            for _ in range(n)]


def _collected(iterates, rank):
    state = swag.init_swag(iterates[0], rank)
    for it in iterates:
        state = jax.jit(swag.collect)(state, it)
    return state


def _numpy_swag(iterates, rank):
    """(mean, second moment, {ring row: deviation}) over flattened iterates, straight from the definitions."""
    thetas = np.stack([_flat(it) for it in iterates])                  # [n, P]
    deviations = {j % rank: thetas[j] - thetas[:j + 1].mean(axis=0) for j in range(max(0, len(thetas) - rank),
                                                                                   len(thetas))}
    return thetas.mean(axis=0), np.square(thetas).mean(axis=0), deviations


def test_swag_running_moments_and_deviations_equal_numpy():
    iterates, rank = _iterates(7), 3
    state = _collected(iterates, rank)
    mean, sq_mean, deviations = _numpy_swag(iterates, rank)
    assert int(state.count) == 7 and state.rank == rank
    np.testing.assert_allclose(_flat(state.mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_flat(state.sq_mean), sq_mean, rtol=1e-5, atol=1e-6)
    for row, deviation in deviations.items():
        np.testing.assert_allclose(_flat(jax.tree.map(lambda d: d[row], state.deviations)), deviation,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_iterates", [2, 7])   # 2 < K: only the collected deviations count (K = 2)
def test_swag_samples_have_the_closed_form_mean_and_covariance(num_iterates):
    rank = 3
    state = _collected(_iterates(num_iterates), rank)
    mean, sq_mean, deviations = _numpy_swag(_iterates(num_iterates), rank)
    used = min(num_iterates, rank)
    d = np.stack(list(deviations.values()), axis=1)                    # [P, K]
    covariance = 0.5 * np.diag(sq_mean - mean ** 2) + d @ d.T / (2 * (used - 1))
    draws = jax.jit(swag.swag_sample, static_argnums=2)(state, jax.random.key(0), 200_000)
    flat = np.concatenate([np.asarray(x, np.float64).reshape(200_000, -1) for x in jax.tree.leaves(draws)], axis=1)
    scale = np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
    np.testing.assert_allclose(flat.mean(axis=0), mean, atol=0.02 * np.sqrt(np.diag(covariance).max()))
    assert np.abs(np.cov(flat.T) - covariance).max() < 0.03 * scale.max()


# --- the ensemble scores ----------------------------------------------------------------------------------

def _numpy_scores(log_p: np.ndarray) -> dict[str, np.ndarray]:
    """log p [M, N] (float64) -> the five scores, from their definitions."""
    mean, var = log_p.mean(axis=0), log_p.var(axis=0)
    p = np.exp(log_p - log_p.max(axis=0))
    w = p / p.sum(axis=0)
    return {"ensemble_waic": -(mean - var), "ensemble_ll_std": np.sqrt(var), "ensemble_expected_ll": -mean,
            "ensemble_disagreement": -1.0 / np.square(w).sum(axis=0),
            "ensemble_entropy": np.sum(w * np.log(w), axis=0)}


def test_score_formulas_equal_numpy_at_large_log_likelihoods():
    log_p = -800.0 + np.random.default_rng(0).normal(0.0, 1.5, (5, 40))    # exp(log p) underflows: log space needed
    got = np.asarray(ensemble_scores(jnp.asarray(log_p.T, jnp.float32)))
    for i, (name, expected) in enumerate(_numpy_scores(log_p).items()):
        np.testing.assert_allclose(got[:, i], expected, rtol=1e-5, atol=2e-3, err_msg=name)
    assert np.all((got[:, 3] >= -5 - 1e-5) & (got[:, 3] <= -1 + 1e-5))
    assert np.all((got[:, 4] >= -np.log(5) - 1e-5) & (got[:, 4] <= 1e-5))
    agree = np.asarray(ensemble_scores(jnp.full((1, 5), -3.0)))[0]          # equal members: D = M, H = log M
    np.testing.assert_allclose(agree[3:], [-5.0, -np.log(5.0)], rtol=1e-6)


@pytest.mark.parametrize("member_loop", ["vmap", "unroll"])
def test_ensemble_scores_equal_numpy_on_each_members_log_prob_in_a_loop(member_loop):
    images = _images(11)
    members = [SMALL.init(jax.random.key(m), images[:2]) for m in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    scorer = EnsembleScorer(SMALL, num_samples=3, batch_size=8, seed=5,     # 8 // 3 = 2 images a call, ragged end
                            member_loop=member_loop)
    got = scorer.score_all(scorer.fit(stacked, images), images)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(11))
    log_prob = jax.jit(SMALL.log_prob, static_argnums=3)
    log_p = np.stack([np.asarray(log_prob(p, images, keys, 3), np.float64) for p in members])   # [M, N], one by one
    for name, expected in _numpy_scores(log_p).items():
        np.testing.assert_allclose(got[name], expected, rtol=2e-5, atol=2e-3, err_msg=name)
    np.testing.assert_array_equal(scorer.score(scorer.fit(stacked, images), images), got["ensemble_waic"])
    with pytest.raises(OodgenError, match="at least 2 models stacked"):
        scorer.fit(members[0], images)


# --- training ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("member_loop", ["vmap", "unroll"])
def test_stacked_train_step_equals_a_loop_of_single_model_steps(member_loop):
    config, size = _config(), 2
    optimizer, mesh = make_optimizer(config.train), data_mesh()
    init_keys, step_keys, _ = ensemble.member_keys(4, size)
    batches = _images(2 * size * 8).reshape(2, size, 8, 8, 8, 1)       # [steps, M, B, H, W, C]
    state = create_run_state(SMALL, optimizer, ensemble.EnsembleSettings(size=size), init_keys, batches[0, 0])
    state = jax.device_put(state, replicated(mesh))
    singles = []
    for m in range(size):   # member m alone: its own init key, step key and batches
        params = SMALL.init(init_keys[m], batches[0, 0])
        single = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None)
        singles.append(jax.device_put(single.replace(opt_state=optimizer.init(single.params)), replicated(mesh)))
    for got, single in zip(jax.tree.leaves(state.params), zip(*[jax.tree.leaves(s.params) for s in singles])):
        np.testing.assert_allclose(got, np.stack(single), rtol=1e-6, atol=1e-7)
    members_step = make_ensemble_train_step(SMALL, optimizer, mesh, member_loop=member_loop)
    single_step = make_train_step(SMALL, optimizer, mesh)
    for t in range(2):
        state, metrics = members_step(state, batches[t], step_keys)
        losses = []
        for m in range(size):
            singles[m], single_metrics = single_step(singles[m], batches[t, m], step_keys[m])
            losses.append(float(single_metrics["loss"]))
        np.testing.assert_allclose(float(metrics["loss"]), np.mean(losses), rtol=1e-5)
    assert int(state.step) == 2
    for m in range(size):
        np.testing.assert_allclose(_flat(ensemble.member(state.params, m)), _flat(singles[m].params),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_flat(ensemble.member(state.opt_state, m)), _flat(singles[m].opt_state),
                                   rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    """A tiny M=2 ensemble with SWAG (collects after steps 2, 3, 4), trained 4 steps (checkpoints at 2 and 4)."""
    root = tmp_path_factory.mktemp("ensemble")
    config = _config("--config.ensemble.size=2", "--config.swag.enabled=True", "--config.model.channels=(4,)")
    return root, config, jax.device_get(train(config, root / "straight"))


def test_resumed_ensemble_equals_uninterrupted(ensemble_run):
    root, config, straight = ensemble_run
    # An interrupted run: the same workdir as it was at step 2 (the step-2 checkpoint, nothing after it).
    shutil.copytree(root / "straight", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / "4")
    shutil.rmtree(root / "resumed" / "best")
    resumed = jax.device_get(train(config, root / "resumed"))
    assert int(resumed.step) == int(straight.step) == 4
    np.testing.assert_array_equal(straight.swag.count, [3, 3])    # the iterates after steps 2, 3 and 4
    for part in ("params", "opt_state", "swag"):
        np.testing.assert_allclose(_flat(getattr(resumed, part)), _flat(getattr(straight, part)), rtol=1e-6, atol=1e-7)
    assert not np.allclose(_flat(ensemble.member(straight.params, 0)), _flat(ensemble.member(straight.params, 1)))
    logged = [json.loads(line) for line in (root / "straight" / "train_metrics.jsonl").open()]
    assert [len(line["val_bits_per_dim_members"]) for line in logged] == [2, 2]
    assert logged[-1]["val_bits_per_dim"] == pytest.approx(np.mean(logged[-1]["val_bits_per_dim_members"]))


def test_train_and_evaluate_an_ensemble(ensemble_run):
    root, config, _ = ensemble_run
    config = parse_overrides(config, ["--config.eval.scorers=ensemble"])
    results, report = evaluate(config, root / "straight", outdir=root / "eval")
    scores, saved = np.load(root / "eval" / "scores.npz"), json.loads((root / "eval" / "metrics.json").read_text())
    for name in SCORE_NAMES:
        assert sorted(saved[name]) == sorted(config.eval.ood) and name in results
        for spec in (config.data.test, *config.eval.ood):
            assert scores[f"{name}/{spec}"].shape == (48,) and np.all(np.isfinite(scores[f"{name}/{spec}"]))
    test = config.data.test
    disagreement = scores[f"ensemble_disagreement/{test}"]
    assert np.all(disagreement <= -1.0) and np.all(disagreement >= -2.0)   # −D, D in [1, M]
    np.testing.assert_allclose(scores[f"ensemble_waic/{test}"],   # −(mean − var) = −mean + std²
                               scores[f"ensemble_expected_ll/{test}"] + scores[f"ensemble_ll_std/{test}"] ** 2,
                               rtol=1e-5)
    assert "Ensemble of 2 members" in report and (root / "eval" / "plots" / "roc_ensemble_waic.png").is_file()

    # SWAG: 3 draws from each member's statistics, member-major, near each member's SWAG mean
    swag_config = parse_overrides(config, ["--config.eval.ensemble.source=swag",
                                           "--config.eval.ensemble.num_swag_samples=3"])
    model = build_model(config.model, tuple(config.data.image_shape))
    scorer = build_scorer("ensemble", model, swag_config.eval)
    state = restore_state(swag_config, root / "straight", model, data_mesh())
    stacked = scorer.stacked_params(state)
    assert ensemble.stack_size(model, stacked) == 6 and np.all(np.isfinite(_flat(stacked)))
    for m in range(2):
        draws = np.stack([_flat(ensemble.member(stacked, 3 * m + s)) for s in range(3)])
        assert np.abs(draws - _flat(ensemble.member(state.swag.mean, m))).max() < 0.1   # iterates of 3 tiny steps
    # single-model scorers and load_trained_model use member 0
    _, _, first = load_trained_model(root / "straight")
    np.testing.assert_array_equal(_flat(first), _flat(ensemble.member(state.params, 0)))


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,match", [
    (["--config.ensemble.size=0"], r"config.ensemble.size=0 must be a positive integer"),
    (["--config.swag.enabled=True", "--config.swag.rank=1"], r"config.swag.rank=1 must be at least 2"),
    (["--config.ensemble.size=2", "--config.ensemble.member_loop=scan"], r"member_loop='scan'; use one of"),
])
def test_bad_training_settings_fail_in_one_line_and_write_nothing(tmp_path, overrides, match):
    with pytest.raises(OodgenError, match=match) as info:
        train(_config(*overrides), tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides,match", [
    (["--config.ensemble.size=2", "--config.eval.ensemble.source=swag"], "SWAG was not enabled"),
    ([], "needs an ensemble: train with --config.ensemble.size=M"),
    (["--config.ensemble.size=2", "--config.eval.ensemble.source=laplace"], "use 'members' or 'swag'"),
    (["--config.ensemble.size=2", "--config.eval.ensemble.member_loop=pmap"], r"member_loop='pmap'; use one of"),
])
def test_bad_ensemble_evaluation_fails_in_one_line_and_writes_nothing(tmp_path, overrides, match):
    config = _config("--config.eval.scorers=ensemble", *overrides)
    with pytest.raises(OodgenError, match=match) as info:
        evaluate(config, tmp_path / "run", outdir=tmp_path / "out")
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_a_workdir_refuses_another_ensemble_size(ensemble_run):
    root, config, _ = ensemble_run
    before = sorted(p.name for p in (root / "straight" / "checkpoints").iterdir())
    with pytest.raises(OodgenError, match=r"trained with config.ensemble.size=2, not 3: pass --config.ensemble.size=2"):
        train(parse_overrides(config, ["--config.ensemble.size=3"]), root / "straight")
    with pytest.raises(OodgenError, match=r"trained with config.ensemble.size=2, not 1"):
        evaluate(parse_overrides(config, ["--config.ensemble.size=1"]), root / "straight", outdir=root / "none")
    assert sorted(p.name for p in (root / "straight" / "checkpoints").iterdir()) == before
    assert not (root / "none").exists()
