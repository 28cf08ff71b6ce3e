import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oodgen.features.gradients import group_grad_sq_norms, per_example_grad_sq_norms, tensor_names, tensor_sizes
from oodgen.features.gradients_fast import fast_grad_sq_norms, fast_path_coverage
from oodgen.models.hvae import HVAEModel
from oodgen.models.vae import VAEModel


class Layers(nn.Module):
    """Dense, conv and transposed-conv layers, each weight and bias a separate feature."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(3, (3, 3), strides=(2, 2))(x))
        h = nn.tanh(nn.ConvTranspose(2, (3, 3), strides=(2, 2))(h))
        return nn.Dense(1)(h.reshape(h.shape[0], -1))[:, 0]


def _layers_loss(module):
    def loss(params, images, keys):
        del keys
        return jnp.square(module.apply({"params": params}, images.astype(jnp.float64) / 255.0))
    return loss


def _naive(loss_fn, params, images, keys, group_size=1):
    """One jax.grad per group, in a Python loop, norms in float64 numpy."""
    rows = []
    for start in range(0, images.shape[0], group_size):
        sl = slice(start, start + group_size)
        grads = jax.grad(lambda p: jnp.sum(loss_fn(p, images[sl], keys[sl])))(params)
        rows.append([float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(grads)])
    return np.array(rows)


GENERATIVE_MODELS = [
    VAEModel(image_shape=(8, 8, 1), latent_dim=3, channels=(4,)),
    HVAEModel(image_shape=(8, 8, 1), width=4, dense_width=8, latent_channels=(2,), latent_units=(3, 2)),
]


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1)), jnp.uint8)


def test_dense_conv_and_transposed_conv_match_a_naive_loop_in_float64(images):
    with jax.enable_x64(True):
        module = Layers(param_dtype=jnp.float64) if hasattr(Layers, "param_dtype") else Layers()
        params = jax.tree.map(lambda p: p.astype(jnp.float64),
                              module.init(jax.random.key(0), images.astype(jnp.float64))["params"])
        keys = jax.random.split(jax.random.key(1), 6)
        loss = _layers_loss(module)
        fast = jax.jit(lambda p, x, k: per_example_grad_sq_norms(loss, p, x, k, chunk_size=4))(params, images, keys)
        assert fast.dtype == jnp.float64
        np.testing.assert_allclose(fast, _naive(loss, params, images, keys), rtol=1e-10)
    names = tensor_names(params)
    assert len(names) == 6 and all(n.endswith(("kernel", "bias")) for n in names)
    assert tensor_sizes(params)[names.index("Conv_0/kernel")] == 3 * 3 * 1 * 3


@pytest.mark.parametrize("model", GENERATIVE_MODELS, ids=["vae", "hvae"])
def test_generative_models_match_a_naive_loop_in_float64(model, images):
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: p.astype(jnp.float64), jax.jit(model.init)(jax.random.key(0), images))
        keys = jax.random.split(jax.random.key(1), 6)
        fast = jax.jit(lambda p, x, k: per_example_grad_sq_norms(model.loss, p, x, k, chunk_size=4))(
            params, images, keys)
        assert fast.dtype == jnp.float64
        np.testing.assert_allclose(fast, _naive(model.loss, params, images, keys), rtol=1e-5, atol=1e-12)
    assert fast.shape == (6, len(tensor_names(params)))


def test_chunking_and_groups(images):
    module = Layers()
    params = module.init(jax.random.key(0), images.astype(jnp.float32))["params"]
    keys = jax.random.split(jax.random.key(1), 6)
    loss = lambda p, x, k: jnp.square(module.apply({"params": p}, x.astype(jnp.float32) / 255.0))  # noqa: E731
    by_chunk = [per_example_grad_sq_norms(loss, params, images, keys, chunk_size=c) for c in (1, 4, 6, 100)]
    for other in by_chunk[1:]:
        np.testing.assert_allclose(other, by_chunk[0], rtol=1e-5)
    groups = group_grad_sq_norms(loss, params, images, keys, group_size=2, chunk_size=2)
    assert groups.shape == (3, 6)
    np.testing.assert_allclose(groups, _naive(loss, params, images, keys, group_size=2), rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of the group size"):
        group_grad_sq_norms(loss, params, images, keys, group_size=4)


class MixedLayers(nn.Module):
    """Conv variants (stride, VALID padding, dilation), a dense layer on [B, T, D] (Gram kernel),
    weight-normalised conv and dense layers, and a transposed conv (on the fallback path)."""

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(3, (3, 3), strides=(2, 2), padding="VALID")(x))
        h = nn.tanh(nn.Conv(4, (2, 2), kernel_dilation=(2, 2))(h))
        h = nn.tanh(nn.ConvTranspose(2, (3, 3), strides=(2, 2))(h))
        h = nn.tanh(nn.WeightNorm(nn.Conv(2, (3, 3)), scale_init=nn.initializers.constant(0.7))(h))
        h = nn.tanh(nn.Dense(5)(h.reshape(h.shape[0], -1, 2)))      # [B, T, 2] -> [B, T, 5]
        h = nn.tanh(nn.WeightNorm(nn.Dense(3), use_scale=False)(h.reshape(h.shape[0], -1)))
        return nn.Dense(1)(h)[:, 0]


@pytest.mark.parametrize("kernel", ["timed", "flops", "gram", "slices", "patches", "grouped", "matmul"])
def test_fast_path_matches_naive_loop_in_float64_and_falls_back_per_layer(images, kernel):
    with jax.enable_x64(True):
        module = MixedLayers()
        x64 = images.astype(jnp.float64)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), module.init(jax.random.key(0), x64)["params"])
        keys = jax.random.split(jax.random.key(1), 6)
        loss = lambda p, x, k: jnp.square(module.apply({"params": p}, x.astype(jnp.float64) / 255.0))  # noqa: E731
        fast = jax.jit(lambda p, x, k: fast_grad_sq_norms(loss, p, x, k, chunk_size=4, kernel=kernel))(
            params, images, keys)
        np.testing.assert_allclose(fast, _naive(loss, params, images, keys), rtol=1e-10)
        coverage = fast_path_coverage(loss, params, images, keys)
    assert coverage["Conv_0/kernel"] == coverage["Conv_1/bias"] == coverage["Dense_0/kernel"] == "fast"
    assert coverage["Conv_2/kernel"] == coverage["WeightNorm_0/Conv_2/kernel/scale"] == "fast"
    assert coverage["Dense_1/kernel"] == "fast"
    assert [k for k, v in coverage.items() if v == "vmap"] == ["ConvTranspose_0/bias", "ConvTranspose_0/kernel"]


@pytest.mark.parametrize("model", GENERATIVE_MODELS, ids=["vae", "hvae"])
def test_fast_path_on_generative_models_matches_a_naive_loop_in_float64(model, images):
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: p.astype(jnp.float64), jax.jit(model.init)(jax.random.key(0), images))
        keys = jax.random.split(jax.random.key(1), 6)
        fast = jax.jit(lambda p, x, k: fast_grad_sq_norms(model.loss, p, x, k, chunk_size=3))(params, images, keys)
        np.testing.assert_allclose(fast, _naive(model.loss, params, images, keys), rtol=1e-5, atol=1e-12)
        coverage = fast_path_coverage(model.loss, params, images, keys)
    assert set(coverage.values()) == {"fast"}  # every tensor on the fast path, weight-normalised ones included


def test_unknown_kernel_is_refused(images):
    module = Layers()
    params = module.init(jax.random.key(0), images.astype(jnp.float32))["params"]
    with pytest.raises(ValueError, match="kernel 'fastest'"):
        fast_grad_sq_norms(_layers_loss(module), params, images, jnp.zeros(6), kernel="fastest")


def _group_rows_by_loop(model, params, images: np.ndarray, order: np.ndarray, group_size: int, seed: int):
    """f64[ceil(N / G), T]: position j holds image order[j] with key fold_in(key(seed), j); group g sums the
    eval-mode NLL over positions [gG, (g+1)G), the last group completed with copies of its last image."""
    positions = list(order) + [order[-1]] * (-len(order) % group_size)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), jnp.arange(len(positions)))
    grad = jax.jit(jax.grad(lambda p, x, k: jnp.sum(model.eval_nll(p, x, k))))
    rows = []
    for start in range(0, len(positions), group_size):
        members = positions[start:start + group_size]
        grads = grad(params, jnp.asarray(images[members]), keys[start:start + group_size])
        rows.append([float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(grads)])
    return np.array(rows)


def test_group_variant_shuffles_positions_by_seed_and_scores_each_image_by_its_group():
    from oodgen.scorers.gradients import FEATURE_FLOOR, GradientNormScorer

    model, seed, size = GENERATIVE_MODELS[0], 7, 3
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 8, 8, 1)).astype(np.uint8)   # 10 = 3 groups of 3 and a ragged one
    fit_images = rng.integers(0, 256, (12, 8, 8, 1)).astype(np.uint8)
    params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(images[:2]))
    scorer = GradientNormScorer(model, batch_size=6, seed=seed, group_size=size, method="vmap",
                                densities=("gaussian_log",))
    order = np.random.default_rng(seed).permutation(10)   # the documented fixed-seed permutation of positions
    groups = scorer.groups(10)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    assert sorted(len(m) for m in members) == [1, 3, 3, 3]
    assert any(np.ptp(m) != len(m) - 1 for m in members)       # not runs of consecutive positions
    assert sorted(map(sorted, members)) == sorted(sorted(order[j:j + size]) for j in range(0, 10, size))
    assert not np.array_equal(GradientNormScorer(model, batch_size=6, seed=8, group_size=size).groups(10), groups)
    np.testing.assert_array_equal(GradientNormScorer(model, batch_size=6, seed=seed).groups(10), np.arange(10))

    rows = _group_rows_by_loop(model, params, images, order, size, seed)
    expected = np.empty((10, rows.shape[1]))
    for g, start in enumerate(range(0, 10, size)):
        expected[order[start:start + size]] = rows[g]           # back to the input order
    np.testing.assert_allclose(scorer.features(params, images), expected, rtol=2e-4, atol=1e-9)

    # the fit set is shuffled the same way (its own 12 positions), one row per group
    fit_order = np.random.default_rng(seed).permutation(12)
    log_rows = np.log(np.maximum(_group_rows_by_loop(model, params, fit_images, fit_order, size, seed), FEATURE_FLOOR))
    state = scorer.fit(params, fit_images)
    fitted = state.densities["gaussian_log"]
    np.testing.assert_allclose(fitted.mean, log_rows.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fitted.std, log_rows.std(axis=0), rtol=1e-3, atol=1e-4)
    scores = scorer.score_all(state, images)["grad_gaussian_log_group3"]
    log_x = np.log(np.maximum(expected, FEATURE_FLOOR))[:, fitted.selection.kept]
    z = (log_x - fitted.mean) / fitted.std
    np.testing.assert_allclose(scores, (0.5 * z ** 2 + np.log(fitted.std) + 0.5 * np.log(2 * np.pi)).sum(axis=1),
                               rtol=1e-3, atol=1e-3)
    for m in members:
        assert np.all(scores[m] == scores[m[0]])
