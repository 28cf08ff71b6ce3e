import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.vae_fashion_mnist import get_config
from conftest import communicate_all
from oodgen import sharding
from oodgen.errors import OodgenError
from oodgen.scorers import SCORERS

ROOT = Path(__file__).resolve().parent.parent


def test_pad_batch_repeats_the_last_example_and_masks_it():
    batch = np.arange(3)[:, None]
    padded, mask = sharding.pad_batch(batch, 5)
    np.testing.assert_array_equal(padded[:, 0], [0, 1, 2, 2, 2])
    np.testing.assert_array_equal(mask, [True, True, True, False, False])
    with pytest.raises(ValueError):
        sharding.pad_batch(batch, 2)


@pytest.mark.parametrize("n,batch_size", [(1, 4), (7, 3), (16, 8), (37, 16)])
def test_map_batches_scores_every_example_exactly_once_in_order(n, batch_size):
    images = np.arange(n, dtype=np.uint8)[:, None]
    calls = []

    def fn(params, x, keys):
        calls.append(x.shape[0])
        return x[:, 0].astype(jnp.float32) + params

    out = sharding.map_batches(fn, images, rng=jax.random.key(0), batch_size=batch_size, params=jnp.float32(0.5))
    np.testing.assert_array_equal(out, np.arange(n) + 0.5)
    assert len(set(calls)) == 1  # one shape: one compilation


def test_example_keys_depend_only_on_the_index():
    keys = sharding.example_keys(jax.random.key(0), jnp.arange(10))
    alone = sharding.example_keys(jax.random.key(0), jnp.arange(7, 8))
    assert jnp.array_equal(jax.random.key_data(keys[7]), jax.random.key_data(alone[0]))


def test_map_batches_rounds_the_batch_to_whole_blocks_and_checks_them():
    images = np.arange(12, dtype=np.uint8)[:, None]
    calls = []

    def fn(params, x, keys):  # each row: the sum of its block of 3
        calls.append(x.shape[0])
        sums = x[:, 0].astype(jnp.float32).reshape(-1, 3).sum(axis=1)
        return jnp.repeat(sums, 3)

    out = sharding.map_batches(fn, images, rng=jax.random.key(0), batch_size=4, block=3)
    np.testing.assert_array_equal(out, np.repeat(images[:, 0].reshape(-1, 3).sum(axis=1), 3))
    assert calls == [6]  # 4 rounded up to whole blocks
    with pytest.raises(ValueError, match="blocks of 5"):
        sharding.map_batches(fn, images, rng=jax.random.key(0), batch_size=4, block=5)


@pytest.mark.parametrize("indices", [np.array([5, 0, 3, 3]), np.array([[1, 2, 3, 4], [9, 8, 7, 6]])])
def test_shard_batch_is_the_indexed_batch_split_over_data(indices):
    images = np.random.default_rng(0).integers(0, 256, (10, 2, 2, 1)).astype(np.uint8)
    mesh = sharding.data_mesh()
    batch = sharding.shard_batch(images, indices, mesh)
    np.testing.assert_array_equal(np.asarray(batch), images[indices])
    assert batch.sharding.spec[indices.ndim - 1] == sharding.DATA_AXIS
    assert sharding.process_rows(indices.shape[-1], mesh) == slice(0, indices.shape[-1])  # one process: all rows


def test_replicate_puts_host_and_device_values_on_every_device():
    mesh = sharding.data_mesh()
    tree = {"a": np.arange(3.0), "b": jnp.ones((2, 2)), "step": jnp.int32(4)}
    out = sharding.replicate(tree, mesh)
    for key, value in out.items():
        assert value.sharding.is_equivalent_to(sharding.replicated(mesh), value.ndim), key
        np.testing.assert_array_equal(np.asarray(value), np.asarray(tree[key]))
    assert sharding.replicate(out, mesh)["b"] is out["b"]  # already placed: kept


def test_a_replicated_state_compiles_a_jitted_step_once():
    # A freshly initialised array's single-device sharding is equivalent to the mesh's replicated one
    # but is a different cache key: replicate must place it so the step's output feeds it back unchanged.
    mesh = sharding.data_mesh()
    target = sharding.replicated(mesh)
    step = jax.jit(lambda state: jax.tree.map(lambda x: x + 1, state), in_shardings=target,
                   out_shardings=target, donate_argnums=0)
    state = sharding.replicate({"w": jnp.zeros((3, 2)), "step": jnp.int32(0)}, mesh)
    for _ in range(3):
        state = step(state)
    assert step._cache_size() == 1
    np.testing.assert_array_equal(np.asarray(state["w"]), np.full((3, 2), 3.0))


def test_distributed_settings_come_from_the_config_and_the_environment_wins():
    config = {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 0}
    assert sharding.distributed_settings(config, environ={}) == config
    env = {"OODGEN_PROCESS_ID": "3", "OODGEN_NUM_PROCESSES": "", "OODGEN_COORDINATOR_ADDRESS": " host:99 "}
    assert sharding.distributed_settings(config, environ=env) == {
        "coordinator_address": "host:99", "num_processes": 4, "process_id": 3}
    assert sharding.distributed_settings(None, environ={}) == sharding.DISTRIBUTED_DEFAULTS
    with pytest.raises(OodgenError, match="OODGEN_PROCESS_ID"):
        sharding.distributed_settings(config, environ={"OODGEN_PROCESS_ID": "one"})
    with pytest.raises(OodgenError, match="unknown key"):
        sharding.distributed_settings({"coordinator": "x:1"}, environ={})


@pytest.mark.parametrize("settings,match", [
    ({"num_processes": 2, "process_id": 1}, "no coordinator address"),
    ({"coordinator_address": "10.0.0.1", "num_processes": 2}, "must be HOST:PORT"),
    ({"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 2}, "process_id=2 must be in"),
])
def test_bad_distributed_settings_are_one_line_errors(settings, match, monkeypatch):
    for var in sharding.DISTRIBUTED_ENV.values():
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(OodgenError, match=match) as info:
        sharding.initialize_distributed(settings)
    assert "\n" not in str(info.value)
    assert not jax.distributed.is_initialized()


def test_nothing_configured_means_a_single_process(monkeypatch):
    for var in sharding.DISTRIBUTED_ENV.values():
        monkeypatch.delenv(var, raising=False)
    assert sharding.initialize_distributed(get_config("tiny").distributed) is False
    assert not jax.distributed.is_initialized() and jax.process_count() == 1


def _start_worker(tmp_path: Path, devices: int) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"devices{devices}.npz"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OODGEN_")}
    # Unoptimised compilation (LLVM's passes are most of the worker's time, and none of what it checks; both
    # workers use it): ~35% faster.
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "multidevice_worker.py"), str(out)],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, out


def _results(workers: list[tuple[subprocess.Popen, Path]]) -> list[dict]:
    logs = communicate_all([process for process, _ in workers], "tests/multidevice_worker.py")
    for (process, _), log in zip(workers, logs):
        assert process.returncode == 0, f"worker exited {process.returncode}:\n{log[-3000:]}"
    return [dict(np.load(out)) for _, out in workers]


def test_eight_devices_agree_with_one(tmp_path):
    """Every registered scorer, map_batches' order, a training step and an ensemble's step: 8 simulated CPU
    devices against an independent 1-device run (batches of 4 there, 8 here; 13 images, so the last batch
    is ragged)."""
    one, eight = _results([_start_worker(tmp_path, 1), _start_worker(tmp_path, 8)])
    assert int(one["device_count"]) == 1 and int(eight["device_count"]) == 8
    assert sorted(one["covered"]) == sorted(SCORERS), "tests/multidevice_worker.py must run every registered scorer"
    np.testing.assert_array_equal(one["order"], np.arange(37))
    np.testing.assert_array_equal(eight["order"], np.arange(37))

    score_keys = sorted(k for k in one if k.startswith("score/"))
    assert score_keys == sorted(k for k in eight if k.startswith("score/"))
    for scorer in SCORERS:
        assert any(k.startswith(f"score/{scorer}/") for k in score_keys), scorer
    for key in score_keys:
        if one[key].ndim:
            assert one[key].shape[0] in (2, 13), key  # typicality's (h_hat, threshold), else one row per image
        assert np.all(np.isfinite(one[key])), key
        np.testing.assert_allclose(eight[key], one[key], rtol=2e-5, atol=2e-5, err_msg=key)
    assert np.ptp(one["score/likelihood_regret/likelihood_regret"]) > 1e-3  # the encoder fit really moved

    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    assert float(one["moved"]) > 1e-4  # the step really changed the parameters
    param_keys = [k for k in one if k.startswith("param/")]
    assert param_keys
    for key in param_keys:
        np.testing.assert_allclose(eight[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)

    # the ensemble step: 2 stacked members, each batch of 8 split over the 8 devices, vmapped or unrolled
    for loop in ("vmap", "unroll"):
        np.testing.assert_allclose(eight[f"ensemble_loss/{loop}"], one[f"ensemble_loss/{loop}"], rtol=1e-5)
        member_keys = [k for k in one if k.startswith(f"ensemble_param/{loop}/")]
        assert len(member_keys) == len(param_keys)
        for key in member_keys:
            assert one[key].shape[0] == 2 and np.abs(one[key][0] - one[key][1]).max() > 1e-3, key  # distinct
            np.testing.assert_allclose(eight[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
            unrolled = key.replace("/vmap/", "/unroll/")
            np.testing.assert_allclose(one[unrolled], one[key], rtol=1e-4, atol=1e-6, err_msg=unrolled)
