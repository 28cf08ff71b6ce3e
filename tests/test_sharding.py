import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen import sharding

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


def _run_worker(tmp_path: Path, devices: int) -> dict:
    out = tmp_path / f"devices{devices}.npz"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "tests" / "multidevice_worker.py"), str(out)],
                   check=True, env=env, cwd=ROOT, timeout=300)
    return dict(np.load(out))


def test_eight_devices_agree_with_one(tmp_path):
    one, eight = _run_worker(tmp_path, 1), _run_worker(tmp_path, 8)
    assert int(one["device_count"]) == 1 and int(eight["device_count"]) == 8
    np.testing.assert_array_equal(one["order"], np.arange(37))
    np.testing.assert_array_equal(eight["order"], np.arange(37))
    assert one["scores"].shape == (37,)
    np.testing.assert_allclose(eight["scores"], one["scores"], rtol=1e-5)
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    assert float(one["moved"]) > 1e-4  # the step really changed the parameters
    param_keys = [k for k in one if k.startswith("param/")]
    assert param_keys
    for key in param_keys:
        np.testing.assert_allclose(eight[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
