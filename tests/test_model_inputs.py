"""The public model API checks its inputs (oodgen.models.inputs): bad images to any image-taking method of any
model are a one-line OodgenError, the same one `check_images` gives; good ones give the numbers they gave
before; and traced calls (under jit, as the scorers make them) are check-free and trace to the same program."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from oodgen import validation
from oodgen.errors import OodgenError
from oodgen.models import build_model
from oodgen.validation import check_images

SHAPE = (8, 8, 1)
BATCH = 3

FAMILIES = {
    "vae": dict(name="vae", latent_dim=3, channels=(4,)),
    "vae_8bit": dict(name="vae", latent_dim=3, channels=(4,), likelihood="discretized_logistic_mixture",
                     num_mixtures=2),
    "hvae": dict(name="hvae", width=4, dense_width=8, latent_channels=(2,), latent_units=(3, 2)),
    "pixelcnn": dict(name="pixelcnn", num_filters=4, num_resnets=1, num_scales=2, num_mixtures=2),
    "local_pixelcnn": dict(name="local_pixelcnn", horizon=2, num_filters=4, num_blocks=1, num_mixtures=2),
    "glow": dict(name="glow", num_levels=2, depth=1, hidden_channels=4),
    "score_net": dict(name="score_net", num_filters=4, num_sigmas=3, sigma_max=0.5, sigma_min=0.05),
    "ddpm": dict(name="ddpm", num_filters=4, num_timesteps=20),
}

# Every public method that takes uint8 images: (family, method, call(model, params, images, keys), takes keys).
# `keys` are per-example, key[B]; `init` takes one key.
_VAE_LIKE = {
    "init": (lambda m, p, x, k: m.init(jax.random.key(0), x), False),
    "preprocess": (lambda m, p, x, k: m.preprocess(k, x), True),
    "log_prob": (lambda m, p, x, k: m.log_prob(p, x, k, 2), True),
    "log_weights": (lambda m, p, x, k: m.log_weights(p, x, k, 2), True),
    "loss": (lambda m, p, x, k: m.loss(p, x, k), True),
    "eval_nll": (lambda m, p, x, k: m.eval_nll(p, x, k), True),
}
_AUTOREGRESSIVE = {
    "init": (lambda m, p, x, k: m.init(jax.random.key(0), x), False),
    "log_prob": (lambda m, p, x, k: m.log_prob(p, x, k), False),
    "log_prob_per_pixel": (lambda m, p, x, k: m.log_prob_per_pixel(p, x), False),
    "eval_nll": (lambda m, p, x, k: m.eval_nll(p, x, k), False),
}
PIXEL_METHODS = {
    "vae": _VAE_LIKE,
    "vae_8bit": _VAE_LIKE,
    "hvae": {**_VAE_LIKE,
             "elbo_terms": (lambda m, p, x, k: m.elbo_terms(p, x, k), True),
             "bound": (lambda m, p, x, k: m.bound(p, x, k, 1, 2), True),
             "bounds": (lambda m, p, x, k: m.bounds(p, x, k, 2), True)},
    "pixelcnn": {**_AUTOREGRESSIVE, "loss": (lambda m, p, x, k: m.loss(p, x, k), True)},
    "local_pixelcnn": {**_AUTOREGRESSIVE, "loss": (lambda m, p, x, k: m.loss(p, x, k), False)},
    "glow": {"init": _VAE_LIKE["init"],
             "dequantize": (lambda m, p, x, k: m.dequantize(k, x, 2), True),
             "log_prob": _VAE_LIKE["log_prob"], "loss": _VAE_LIKE["loss"], "eval_nll": _VAE_LIKE["eval_nll"]},
    "score_net": {"init": _VAE_LIKE["init"],
                  "preprocess": (lambda m, p, x, k: m.preprocess(x), False),
                  "loss": _VAE_LIKE["loss"],
                  "denoising_loss": (lambda m, p, x, k: m.denoising_loss(p, x, k), True),
                  "msma_features": (lambda m, p, x, k: m.msma_features(p, x), False)},
    "ddpm": {"init": _VAE_LIKE["init"],
             "preprocess": (lambda m, p, x, k: m.preprocess(x), False),
             "loss": _VAE_LIKE["loss"],
             "denoising_loss": (lambda m, p, x, k: m.denoising_loss(p, x, k), True),
             "reconstruct": (lambda m, p, x, k: m.reconstruct(p, x, k, (0, 2), 4), True),
             "reconstruction_errors": (lambda m, p, x, k: m.reconstruction_errors(p, x, k, (2, 1), 4), True)},
}

# Public methods that take an input on the model's own float scale (preprocessed or noised), not uint8:
# (family, method) -> (call(model, params, x), x from uint8 images, name of the per-example argument or None).
SCALED_METHODS = {
    ("glow", "encode"): (lambda m, p, x: m.encode(p, x), lambda m, img: img / 256.0 - 0.5),
    ("glow", "forward"): (lambda m, p, x: m.forward(p, x), lambda m, img: img / 256.0 - 0.5),
    ("glow", "continuous_log_prob"): (lambda m, p, x: m.continuous_log_prob(p, x), lambda m, img: img / 256.0 - 0.5),
    ("score_net", "score"): (lambda m, p, x: m.score(p, x, jnp.full(x.shape[:1], 0.1)), lambda m, img: img / 255.0),
    ("ddpm", "eps"): (lambda m, p, x: m.eps(p, x, jnp.arange(x.shape[0]) % 20), lambda m, img: img / 127.5 - 1.0),
    ("ddpm", "q_sample"): (lambda m, p, x: m.q_sample(x, jnp.arange(x.shape[0]) % 20, jnp.ones_like(x)),
                           lambda m, img: img / 127.5 - 1.0),
}

PIXEL_CASES = [(f, m) for f, methods in PIXEL_METHODS.items() for m in methods]
KEY_CASES = [(f, m) for f, m in PIXEL_CASES if PIXEL_METHODS[f][m][1]]


def _images(batch: int = BATCH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def built():
    """{family: (model, params)} for every family, from tiny configs; params N(0, 0.1²) with the structure
    of `init`'s (traced, not run: no compilation)."""
    out = {}
    for i, (family, config) in enumerate(FAMILIES.items()):
        model = build_model(ml_collections.ConfigDict(config), SHAPE)
        shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, *SHAPE), jnp.uint8))
        rng = np.random.default_rng(i)
        out[family] = model, jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.1, s.shape), s.dtype), shapes)
    return out


def _keys(batch: int = BATCH) -> jax.Array:
    return jax.random.split(jax.random.key(7), batch)


def _one_line_error(fn) -> str:
    with pytest.raises(OodgenError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _check_images_message(images) -> str:
    """What `check_images` says about `images` for these models, after its 'images: ' prefix."""
    return _one_line_error(lambda: check_images(images, SHAPE)).split(": ", 1)[1]


def _with_pixel(images: np.ndarray, value: int) -> np.ndarray:
    """int32 copy of `images` with pixel (1, 2, 3, 0) set to `value`."""
    out = images.astype(np.int32)
    out[1, 2, 3, 0] = value
    return out


# Bad uint8-image inputs, as numpy and as JAX arrays (the value checks take different paths for the two).
BAD_VALUES = {
    "nan": lambda img: np.where(img > 128, np.nan, img.astype(np.float32)),
    "inf": lambda img: np.where(img > 128, np.inf, img.astype(np.float32)),
    "minus_inf": lambda img: np.where(img > 128, -np.inf, img.astype(np.float32)),
    "above_255": lambda img: _with_pixel(img, 256),              # one pixel 256
    "256": lambda img: np.full(img.shape, 256, np.int32),
    "negative": lambda img: _with_pixel(img, -1),                # one pixel -1
    "negative_float": lambda img: np.full(img.shape, -1.0, np.float32),
    "unit_interval": lambda img: img.astype(np.float32) / 255,  # [0, 1]-scaled floats
    "half_steps": lambda img: img.astype(np.float32) + 0.5,
}
BAD_SHAPES = {
    "no_batch_axis": lambda img: img[0],
    "no_channel_axis": lambda img: img[..., 0],
    "rank_5": lambda img: img[None],
    "wrong_height": lambda img: img[:, :4],
    "wrong_width": lambda img: img[:, :, :6],
    "wrong_channels": lambda img: np.repeat(img, 3, axis=-1),
}
MATCHES = {"nan": "NaN or infinite", "inf": "NaN or infinite", "minus_inf": "NaN or infinite",
           "above_255": "outside 0..255", "256": "outside 0..255", "negative": "outside 0..255",
           "negative_float": "outside 0..255", "unit_interval": r"scaled to \[0, 1\]", "half_steps": "whole numbers",
           "no_batch_axis": "add a batch axis", "no_channel_axis": "expected a uint8 array",
           "rank_5": "expected a uint8",
           "wrong_height": r"\(4, 8, 1\).*expects \(8, 8, 1\)", "wrong_width": r"\(8, 6, 1\).*expects \(8, 8, 1\)",
           "wrong_channels": r"\(8, 8, 3\).*expects \(8, 8, 1\)"}


ALL_BAD = [*((b, a) for b in BAD_VALUES for a in (np.asarray, jnp.asarray)), *((b, np.asarray) for b in BAD_SHAPES)]
# The checks are one decorator: every bad input on each family's first method, a sample on the others.
SAMPLE_BAD = [("unit_interval", jnp.asarray), ("wrong_channels", np.asarray)]
BAD_IMAGE_CASES = [(f, m, b, a) for i, (f, m) in enumerate(PIXEL_CASES)
                   for b, a in (ALL_BAD if i == 0 or PIXEL_CASES[i - 1][0] != f else SAMPLE_BAD)]


@pytest.mark.parametrize("family,method,bad,as_array", BAD_IMAGE_CASES,
                         ids=lambda v: v if isinstance(v, str) else {np.asarray: "numpy", jnp.asarray: "jax"}[v])
def test_bad_images_are_refused_in_one_line_like_check_images(built, family, method, bad, as_array):
    model, params = built[family]
    call, _ = PIXEL_METHODS[family][method]
    images = as_array({**BAD_VALUES, **BAD_SHAPES}[bad](_images()))
    message = _one_line_error(lambda: call(model, params, images, _keys()))
    prefix = f"{type(model).__name__}.{method} images: "
    assert message.startswith(prefix), message
    assert message[len(prefix):] == _check_images_message(images)  # word for word what check_images says
    assert re.search(MATCHES[bad], message), message


@pytest.mark.parametrize("family,method", PIXEL_CASES)
def test_an_empty_batch_is_refused_in_one_line(built, family, method):
    model, params = built[family]
    call, _ = PIXEL_METHODS[family][method]
    message = _one_line_error(lambda: call(model, params, _images()[:0], _keys(0)))
    assert message == f"{type(model).__name__}.{method} images: the batch is empty; pass at least one image"


@pytest.mark.parametrize("family,method", KEY_CASES)
@pytest.mark.parametrize("num_keys", [BATCH - 1, BATCH + 1])
def test_per_example_keys_must_match_the_batch(built, family, method, num_keys):
    model, params = built[family]
    call, _ = PIXEL_METHODS[family][method]
    message = _one_line_error(lambda: call(model, params, _images(), _keys(num_keys)))
    assert f"got {num_keys} per-example keys for a batch of {BATCH} images" in message, message
    with pytest.raises(OodgenError, match="per-example keys"):  # also when traced: shapes are static
        jax.jit(lambda p, x, k: call(model, p, x, k)).trace(params, _images(), _keys(num_keys))


def _tree_equal(a, b, exact: bool) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and leaves_a
    for x, y in zip(leaves_a, leaves_b):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def _unchecked(model, method: str):
    """`model` with `method` replaced by its undecorated function: the computation as it was before checks."""
    return _Unchecked(model, method, getattr(type(model), method).__wrapped__)


@pytest.mark.parametrize("family,method", PIXEL_CASES)
def test_valid_images_give_the_same_numbers_and_traced_calls_are_check_free(built, family, method):
    model, params = built[family]
    call, _ = PIXEL_METHODS[family][method]
    images, keys = _images(seed=3), _keys()
    # the checked call and the unchecked computation, eagerly: exactly the same numbers
    _tree_equal(call(model, params, images, keys), call(_unchecked(model, method), params, images, keys), exact=True)

    # traced (as under jit) with NaN images: no check runs, nothing is raised, and the program is the one the
    # unchecked computation traces to, so jitted callers (every scorer) compile exactly as before
    nan = jnp.full(images.shape, jnp.nan, jnp.float32)
    traced = jax.jit(lambda p, x, k: call(model, p, x, k)).trace(params, nan, keys).jaxpr
    untraced = jax.make_jaxpr(lambda p, x, k: call(_unchecked(model, method), p, x, k))(params, nan, keys)
    assert str(traced) == str(untraced)


# One method per family, compiled (compilation is what makes these tests slow on a loaded CPU).
JITTED_CASES = [("vae", "log_prob"), ("vae_8bit", "eval_nll"), ("hvae", "bounds"), ("pixelcnn", "loss"),
                ("local_pixelcnn", "log_prob"), ("glow", "log_prob"), ("score_net", "msma_features"),
                ("ddpm", "reconstruction_errors")]


@pytest.mark.parametrize("family,method", JITTED_CASES)
def test_the_checked_call_agrees_with_the_jitted_one(built, family, method):
    """Under jit the inputs are tracers, so nothing but shapes is checked: the same numbers as the checked
    eager call; whole-number floats and other integer dtypes give the numbers uint8 gives."""
    model, params = built[family]
    call, _ = PIXEL_METHODS[family][method]
    images, keys = _images(seed=5), _keys()
    checked = call(model, params, images, keys)
    jitted = jax.jit(lambda p, x, k: call(model, p, x, k))
    _tree_equal(jitted(params, images, keys), checked, exact=False)
    jitted(params, jnp.full(images.shape, jnp.nan, jnp.float32), keys)  # NaN under jit: no check, no error
    # (numpy inputs put the first ops, e.g. images.astype(f32) / 255, on the host: equal up to rounding)
    _tree_equal(call(model, params, jnp.asarray(images, jnp.float32), keys), checked, exact=False)
    _tree_equal(call(model, params, images.astype(np.int64), keys), checked, exact=False)


class _Unchecked:
    """`model` with `method` replaced by its undecorated function (everything else delegated)."""

    def __init__(self, model, method, fn):
        self._model, self._method, self._fn = model, method, fn

    def __getattr__(self, name):
        if name == self._method:
            return lambda *args, **kwargs: self._fn(self._model, *args, **kwargs)
        return getattr(self._model, name)


@pytest.mark.parametrize("family,method", [("vae", "log_prob"), ("hvae", "bounds"), ("pixelcnn", "eval_nll"),
                                           ("glow", "log_prob"), ("ddpm", "reconstruction_errors")])
def test_values_are_checked_once_per_public_call_and_never_when_traced(built, family, method, monkeypatch):
    """Nested public calls (log_prob -> log_weights -> preprocess) are not checked again: one host sync."""
    model, params = built[family]
    call, _ = PIXEL_METHODS[family][method]
    calls = []
    original = validation.check_image_values
    monkeypatch.setattr(validation, "check_image_values", lambda x, what: calls.append(what) or original(x, what))
    call(model, params, jnp.asarray(_images(), jnp.float32), _keys())
    assert calls == [f"{type(model).__name__}.{method} images"]
    jax.jit(lambda p, x, k: call(model, p, x, k)).trace(params, jnp.asarray(_images(), jnp.float32), _keys())
    assert len(calls) == 1


def test_lists_are_read_as_arrays(built):
    model, params = built["vae"]
    images = _images()
    np.testing.assert_array_equal(model.log_prob(params, images.tolist(), _keys()),
                                  model.log_prob(params, images, _keys()))
    _one_line_error(lambda: model.log_prob(params, [[1, 2], [3]], _keys()))


SCALED_CASES = list(SCALED_METHODS)


@pytest.mark.parametrize("family,method", SCALED_CASES)
@pytest.mark.parametrize("bad,match", [
    ("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("uint8", "not a float type"),
    ("no_batch_axis", "expected a float array"), ("wrong_channels", r"\(8, 8, 3\).*expects \(8, 8, 1\)"),
    ("wrong_height", r"\(4, 8, 1\).*expects"), ("empty", "the batch is empty"),
])
def test_bad_scaled_inputs_are_refused_in_one_line(built, family, method, bad, match):
    model, params = built[family]
    call, to_x = SCALED_METHODS[family, method]
    images = _images()
    x = np.asarray(to_x(model, images.astype(np.float32)), np.float32)
    x = {"nan": lambda: np.where(images > 128, np.nan, x), "inf": lambda: np.where(images > 128, np.inf, x),
         "uint8": lambda: images, "no_batch_axis": lambda: x[0], "wrong_channels": lambda: np.repeat(x, 3, -1),
         "wrong_height": lambda: x[:, :4], "empty": lambda: x[:0]}[bad]()
    message = _one_line_error(lambda: call(model, params, jnp.asarray(x)))
    assert message.startswith(f"{type(model).__name__}.{method} "), message
    assert re.search(match, message), message


@pytest.mark.parametrize("family,method", SCALED_CASES)
def test_valid_scaled_inputs_give_the_same_numbers_and_traced_calls_are_check_free(built, family, method):
    model, params = built[family]
    call, to_x = SCALED_METHODS[family, method]
    x = jnp.asarray(to_x(model, _images(seed=4).astype(np.float32)), jnp.float32)
    _tree_equal(call(model, params, x), call(_unchecked(model, method), params, x), exact=True)
    nan = jnp.full(x.shape, jnp.nan)
    traced = jax.jit(lambda p, y: call(model, p, y)).trace(params, nan).jaxpr  # no value check while tracing
    untraced = jax.make_jaxpr(lambda p, y: call(_unchecked(model, method), p, y))(params, nan)
    assert str(traced) == str(untraced)


@pytest.mark.parametrize("family,method,call", [
    ("score_net", "score", lambda m, p, x: m.score(p, x, jnp.full(BATCH - 1, 0.1))),
    ("ddpm", "eps", lambda m, p, x: m.eps(p, x, jnp.zeros(BATCH + 1, jnp.int32))),
    ("ddpm", "q_sample", lambda m, p, x: m.q_sample(x, jnp.zeros((BATCH, 2), jnp.int32), x)),
])
def test_per_example_arguments_must_match_the_batch(built, family, method, call):
    model, params = built[family]
    x = jnp.zeros((BATCH, *SHAPE), jnp.float32)
    message = _one_line_error(lambda: call(model, params, x))
    assert message.startswith(f"{type(model).__name__}.{method} ") and "one value per image [3]" in message


def test_a_concrete_array_closed_over_inside_jit_is_still_checked(built):
    """A user's own array captured by a jitted function is data, not a tracer: its values are checked (once,
    while tracing) and a bad one is refused; the scorers never capture images, they pass them as arguments."""
    model, params = built["vae"]
    bad = jnp.asarray(_images(), jnp.float32) / 255
    with pytest.raises(OodgenError, match="scaled to"):
        jax.jit(lambda p: model.log_prob(p, bad, _keys()))(params)
    good = jnp.asarray(_images(), jnp.float32)
    np.testing.assert_allclose(jax.jit(lambda p: model.log_prob(p, good, _keys()))(params),
                               model.log_prob(params, _images(), _keys()), rtol=2e-4, atol=2e-5)
