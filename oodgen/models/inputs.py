"""Input checks at the public boundary of every model, applied by one decorator, `checks_inputs`.

A decorated method checks its image argument once per public call, before any work:

- always (shapes and dtypes are static, so also under `jit`, `vmap`, `grad` and `eval_shape`): rank 4,
  a non-empty batch, (H, W, C) equal to the model's `image_shape`, a numeric dtype; per-example keys and
  other per-example arguments as long as the batch;
- only for a concrete array (a numpy or JAX array, not a tracer): the value checks of `check_images`
  (no NaN or inf, whole numbers in 0..255, so no [0, 1]-scaled floats). A uint8 or bool array needs no
  value check and costs nothing; a JAX array of another dtype costs one small reduction and a host transfer
  of four scalars. Inside traced code nothing is checked beyond shapes, so a jitted caller compiles as before.

Calls a decorated method makes to other decorated methods of the model (log_prob -> log_weights -> preprocess)
are not checked again. Every failure is a one-line `OodgenError`, the same as `check_images` gives.
"""

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from oodgen import validation
from oodgen.errors import OodgenError

PIXELS = "pixels"   # uint8 pixel values 0..255 (or whole-number floats): the value checks of check_images
SCALED = "scaled"   # floats on the model's own scale (a preprocessed or noised input): float dtype, finite

_INSIDE = contextvars.ContextVar("oodgen_inside_model_call", default=False)
F = TypeVar("F", bound=Callable[..., Any])


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_keys(rng: Any, batch: int, what: str) -> None:
    """One key, or one key per image: key[B] (typed) or uint32[B, 2] (raw)."""
    if rng is None or not hasattr(rng, "dtype"):
        return
    single = 0 if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else 1
    if rng.ndim == single:
        return
    if rng.ndim != single + 1:
        raise OodgenError(f"{what}: expected one key or one key per image, got an array of shape {rng.shape}")
    if rng.shape[0] != batch:
        raise OodgenError(f"{what}: got {rng.shape[0]} per-example keys for a batch of {batch} images; "
                          "pass one key, or one key per image")


def _check_per_example(value: Any, batch: int, what: str) -> None:
    """A scalar or one value per image [B]."""
    shape = np.shape(value)
    if len(shape) > 1 or (len(shape) == 1 and shape[0] != batch):
        raise OodgenError(f"{what}: expected a scalar or one value per image [{batch}], got shape {shape}")


def check_model_input(model: Any, x: Any, what: str, kind: str = PIXELS) -> Any:
    """Checks `x`, an input [B, H, W, C] of `model` (see the module docstring); returns it as an array
    (unchanged when it already is one)."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise OodgenError(f"{what}: cannot be read as an array ({e}); pass a uint8 array [N, H, W, C]") from None
    if kind == PIXELS:
        validation.check_image_shape(x.shape, model.image_shape, what, validation.EMPTY_BATCH)
        if _is_concrete(x):
            validation.check_image_values(x, what)
        elif not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
            raise OodgenError(f"{what}: dtype {x.dtype} is not numeric; pass uint8 pixel values 0..255")
        return x
    validation.check_image_shape(x.shape, model.image_shape, what, validation.EMPTY_BATCH, kind="a float array")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise OodgenError(f"{what}: dtype {x.dtype} is not a float type; this takes inputs on the model's own "
                          "scale (see its docstring), not raw uint8 pixels")
    if _is_concrete(x):
        validation.check_finite(x, what)
    return x


def checks_inputs(arg: str = "images", *, kind: str = PIXELS, keys: str | None = None,
                  per_example: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorates a model method whose argument `arg` is an input [B, H, W, C] of kind PIXELS or SCALED.

    `keys` names its rng argument (one key or key[B]); `per_example` names arguments that are a scalar or
    one value per image (σ, t). Messages name the call: '<Model>.<method> <arg>: ...'.
    """
    def decorate(fn: F) -> F:
        names = list(inspect.signature(fn).parameters)[1:]  # after self
        position = {name: i for i, name in enumerate(names)}

        def get(name: str, args: tuple, kwargs: dict) -> Any:
            i = position[name]
            return args[i] if i < len(args) else kwargs.get(name)

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            if _INSIDE.get():  # called by another checked method of the model: already checked
                return fn(self, *args, **kwargs)
            prefix = f"{type(self).__name__}.{fn.__name__}"
            x = get(arg, args, kwargs)
            checked = check_model_input(self, x, f"{prefix} {arg}", kind)
            if checked is not x:  # a list or the like, now an array
                if position[arg] < len(args):
                    args = (*args[:position[arg]], checked, *args[position[arg] + 1:])
                else:
                    kwargs = {**kwargs, arg: checked}
            batch = checked.shape[0]
            if keys is not None:
                _check_keys(get(keys, args, kwargs), batch, f"{prefix} {keys}")
            for name in per_example:
                _check_per_example(get(name, args, kwargs), batch, f"{prefix} {name}")
            token = _INSIDE.set(True)
            try:
                return fn(self, *args, **kwargs)
            finally:
                _INSIDE.reset(token)

        return wrapper  # type: ignore[return-value]

    return decorate
