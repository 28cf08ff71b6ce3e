import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from oodgen.features.gradients_fast import fast_path_coverage
from oodgen.models.pixelcnn import LocalPixelCNNModel, PixelCNNPPModel

PP_GREY = PixelCNNPPModel(image_shape=(6, 6, 1), num_filters=8, num_resnets=1, num_scales=2, num_mixtures=2)
PP_RGB = PixelCNNPPModel(image_shape=(4, 4, 3), num_filters=8, num_resnets=1, num_scales=2, num_mixtures=2)
LOCAL_GREY = LocalPixelCNNModel(image_shape=(6, 6, 1), horizon=2, num_filters=8, num_blocks=1, num_mixtures=2)
LOCAL_PAIR = LocalPixelCNNModel(image_shape=(5, 7, 2), horizon=1, num_filters=8, num_blocks=1, num_mixtures=2)


def _images(shape, batch, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch, *shape)), jnp.uint8)


@functools.cache
def _params(model):
    """Initial parameters. Init is jitted with an rbg key: on CPU it compiles several times faster
    than threefry's truncated normals, and the properties tested hold for any parameters."""
    return jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, *model.image_shape), jnp.uint8))


def _spread_params(model, seed=0):
    """Parameters whose pixel distributions are varied and mostly interior: the output layer's
    bias sets random logits, means in (-0.8, 0.8), scales ~0.05 and channel coefficients; its
    kernel is damped so the context moves them only a little."""
    params = dict(_params(model))
    k, c = model.num_mixtures, model.image_shape[-1]
    rng = np.random.default_rng(seed)
    rows = [rng.normal(0, 1, (1, k)), rng.uniform(-0.8, 0.8, (c, k)), rng.normal(-3.0, 0.3, (c, k)),
            rng.normal(0, 1, (c * (c - 1) // 2, k))]
    bias = np.concatenate([r.reshape(-1) for r in rows])
    params["out"] = {"kernel": 0.1 * params["out"]["kernel"], "bias": jnp.asarray(bias, jnp.float32)}
    return params


def _dependencies(model, params, seed=0):
    """bool[H·W, H·W]: entry (i, j) is whether the network output at pixel i (raster order) has a
    non-zero gradient with respect to any channel of input pixel j, for a random float input."""
    h, w, c = model.image_shape

    @jax.jit
    def grads(params, x, weights):
        out, vjp = jax.vjp(lambda v: model.net.apply({"params": params}, v), x)
        one_hot = jnp.eye(h * w).reshape(h * w, 1, h, w, 1)
        return jax.vmap(vjp)(one_hot * weights)[0]                                # [H·W, 1, H, W, C]

    x = jax.random.uniform(jax.random.key(seed), (1, h, w, c), minval=-1.0, maxval=1.0)
    # One cotangent per output pixel: a random vector over its mixture parameters (no exact cancellation).
    weights = jax.random.normal(jax.random.key(seed + 1), (h, w, model.out_features))
    return np.asarray(jnp.any(grads(params, x, weights) != 0, axis=(1, 4)).reshape(h * w, h * w))


@pytest.mark.parametrize("model", [PP_GREY, PP_RGB], ids=["6x6x1", "4x4x3"])
def test_pixelcnnpp_output_depends_on_every_earlier_pixel_and_nothing_else(model):
    deps = _dependencies(model, _params(model))
    n = deps.shape[0]
    earlier = np.arange(n)[None, :] < np.arange(n)[:, None]
    assert not deps[~earlier].any(), "an output depends on its own pixel or a later one"
    # No blind spot: at these sizes every earlier pixel is in the receptive field.
    np.testing.assert_array_equal(deps[earlier], True)


@pytest.mark.parametrize("horizon", [1, 2])
def test_local_model_sees_exactly_its_horizon(horizon):
    model = dataclasses.replace(LOCAL_PAIR, horizon=horizon)
    deps = _dependencies(model, _params(model))
    h, w, _ = model.image_shape
    expected = np.zeros_like(deps)
    for (i, j), (k, m) in itertools.product(itertools.product(range(h), range(w)), repeat=2):
        expected[i * w + j, k * w + m] = i - horizon <= k <= i and abs(m - j) <= horizon and (k, m) < (i, j)
    np.testing.assert_array_equal(deps, expected)


def _values_at(image, position):
    """All 256^C images equal to `image` [H, W, C] except at pixel `position`: uint8 [256^C, H, W, C]."""
    channels = image.shape[-1]
    values = np.stack(np.meshgrid(*[np.arange(256)] * channels, indexing="ij"), -1).reshape(-1, channels)
    images = np.repeat(np.asarray(image)[None], len(values), axis=0)
    images[:, position[0], position[1]] = values
    return jnp.asarray(images, jnp.uint8)


@pytest.mark.parametrize("model, position", [
    (PP_GREY, (2, 3)),
    (LOCAL_GREY, (5, 5)),
    (dataclasses.replace(LOCAL_PAIR, image_shape=(2, 3, 2)), (1, 0)),
], ids=["pixelcnnpp-C1", "local-C1", "local-C2"])
def test_pixel_distribution_sums_to_one_over_all_values(model, position):
    params = _spread_params(model)
    images = _values_at(_images(model.image_shape, 1)[0], position)
    per_pixel = jax.jit(model.log_prob_per_pixel)(params, images)[:, position[0], position[1]]
    probs = np.exp(np.asarray(per_pixel, np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    # A spread distribution, mostly on interior values (not just the two edge bins' tails).
    assert probs.max() < 0.5 and (probs > 1e-4).sum() > 20
    assert probs.reshape([256] * model.image_shape[-1])[(slice(1, 255),) * model.image_shape[-1]].sum() > 0.5


def test_uniform_mixing():
    images = _images(LOCAL_GREY.image_shape, 3)
    params = _spread_params(LOCAL_GREY)
    log_prob = lambda model: jax.jit(model.log_prob_per_pixel)(params, images)  # noqa: E731
    all_uniform = dataclasses.replace(LOCAL_GREY, uniform_weight=1.0)
    np.testing.assert_allclose(all_uniform.log_prob(params, images, None), -LOCAL_GREY.num_dims * math.log(256.0),
                               rtol=1e-6)
    w = 0.3
    mixture = np.exp(np.asarray(log_prob(dataclasses.replace(LOCAL_GREY, uniform_weight=0.0)), np.float64))
    mixed = log_prob(dataclasses.replace(LOCAL_GREY, uniform_weight=w))
    np.testing.assert_allclose(mixed, np.log((1 - w) * mixture + w / 256), rtol=1e-5)


@pytest.mark.parametrize("model", [PP_GREY, LOCAL_GREY], ids=["pixelcnnpp", "local"])
def test_log_prob_is_sum_of_per_pixel_and_independent_of_the_batch(model):
    params, images = _params(model), _images(model.image_shape, 4, seed=3)
    log_prob = jax.jit(lambda p, x, k: model.log_prob(p, x, k, num_samples=3))
    batch = log_prob(params, images, jax.random.key(5))
    assert batch.shape == (4,) and batch.dtype == jnp.float32
    per_pixel = jax.jit(model.log_prob_per_pixel)(params, images)
    assert per_pixel.shape == (4, *model.image_shape[:2])
    np.testing.assert_allclose(batch, per_pixel.sum(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(log_prob(params, images[2:3], jax.random.key(9)), batch[2:3], rtol=1e-5)
    if isinstance(model, LocalPixelCNNModel):
        np.testing.assert_allclose(jax.jit(model.loss)(params, images, jax.random.key(1)), -batch, rtol=1e-6)


def test_pixelcnnpp_dropout_is_per_example():
    model, params, images = PP_GREY, _params(PP_GREY), _images(PP_GREY.image_shape, 4, seed=3)
    keys = jax.random.split(jax.random.key(7), 4)
    loss = jax.jit(model.loss)
    no_dropout = jax.jit(dataclasses.replace(model, dropout_rate=0.0).loss)
    neg_log_prob = -jax.jit(model.log_prob)(params, images, keys)
    np.testing.assert_allclose(no_dropout(params, images, keys), neg_log_prob, rtol=1e-6)
    batch = loss(params, images, keys)
    assert np.all(np.abs(batch - neg_log_prob) > 1e-3), "dropout had no effect"
    assert not np.allclose(loss(params, images, jax.random.split(jax.random.key(8), 4)), batch)
    for i in (0, 3):
        np.testing.assert_allclose(loss(params, images[i:i + 1], keys[i:i + 1]), batch[i:i + 1], rtol=1e-5)


@pytest.mark.parametrize("model", [dataclasses.replace(PP_GREY, dropout_rate=0.1), LOCAL_GREY],
                         ids=["pixelcnnpp", "local"])
def test_adam_steps_reduce_the_loss(model):
    # Smooth images (a ramp plus noise): far from the initial, nearly uniform, pixel distributions.
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 6)[None, :, None, None] + np.linspace(0, 30, 6)[None, None, :, None]
    images = jnp.asarray(np.clip(ramp + rng.normal(0, 5, (8, 6, 6, 1)), 0, 255), jnp.uint8)
    params = _params(PP_GREY if isinstance(model, PixelCNNPPModel) else model)  # dropout adds no parameters
    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, key):
        loss, grads = jax.value_and_grad(lambda p: model.loss(p, images, key).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for i in range(25):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("model", [PP_GREY, LOCAL_GREY], ids=["pixelcnnpp", "local"])
def test_every_layer_takes_the_fast_gradient_path(model):
    images = _images(model.image_shape, 2)
    coverage = fast_path_coverage(model.eval_nll, _params(model), images, jax.random.split(jax.random.key(1), 2))
    assert coverage and set(coverage.values()) == {"fast"}, coverage


@pytest.mark.parametrize("make, message", [
    (lambda: PixelCNNPPModel(image_shape=(28, 28, 1), num_scales=4), "divisible by 2"),
    (lambda: PixelCNNPPModel(dropout_rate=1.0), "dropout_rate"),
    (lambda: PixelCNNPPModel(num_filters=0), "num_filters"),
    (lambda: PixelCNNPPModel(image_shape=(28, 28)), "image_shape"),
    (lambda: LocalPixelCNNModel(horizon=0), "horizon"),
    (lambda: LocalPixelCNNModel(uniform_weight=1.5), "uniform_weight"),
    (lambda: LocalPixelCNNModel(num_blocks=-1), "num_blocks"),
])
def test_bad_hyper_parameters_fail_clearly(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_defaults_build_for_28x28():
    for model in (PixelCNNPPModel(), LocalPixelCNNModel()):
        assert model.num_dims == 28 * 28
        params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 28, 28, 1), jnp.uint8))
        out = jax.eval_shape(model.log_prob, params, jnp.zeros((2, 28, 28, 1), jnp.uint8), None)
        assert out.shape == (2,)


def test_gradient_features_are_deterministic_eval_mode_nll():
    """PixelCNN++'s gradient features are of the evaluation-mode NLL (no dropout): two calls with
    different keys give identical features, equal to a per-example loop of jax.grad of −log p(x)."""
    from oodgen.scorers.gradients import GradientNormScorer
    images = np.asarray(_images(PP_GREY.image_shape, 3, seed=2))
    params = _params(PP_GREY)
    features = [GradientNormScorer(PP_GREY, batch_size=3, seed=seed).features(params, images) for seed in (0, 1)]
    np.testing.assert_array_equal(features[0], features[1])
    grad = jax.jit(jax.grad(lambda p, x: -PP_GREY.log_prob(p, x[None])[0]))
    loop = np.stack([[float(np.sum(np.square(np.asarray(g, np.float64)))) for g in jax.tree.leaves(grad(params, x))]
                     for x in images])
    np.testing.assert_allclose(features[0], loop, rtol=1e-4, atol=1e-10)
    # the training loss (dropout on) would give other, key-dependent features
    dropout = jax.jit(jax.grad(lambda p, x, k: PP_GREY.loss(p, x[None], k[None])[0]))
    with_dropout = [float(np.sum(np.square(g))) for g in jax.tree.leaves(dropout(params, images[0], jax.random.key(0)))]
    assert not np.allclose(with_dropout, loop[0], rtol=1e-3)
