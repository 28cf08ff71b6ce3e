"""Per-example gradient norms without per-example gradients of the whole model.

One batched backward pass gives the cotangent g of every Dense/Conv layer's *output* (by adding a
zero probe to each output and differentiating the summed loss with respect to the probes); with the
layer's input a, the per-example weight gradient is Σ_t a_t ⊗ g_t over the positions t of that
example (one position for a dense layer on [B, D], H'·W' patches for a convolution). Its squared
norm is computed exactly by one of several kernels, per layer the fastest when timed once on this
backend for that shape (`kernel="timed"`), or the cheaper in FLOPs of the first two (`kernel="flops"`):

  gram:     Σ_{t,t'} (a_t · a_t') (g_t · g_t') on patches        cost ~ T² (D_in + D_out) per example
  slices:   ‖Σ_t a_t g_tᵀ‖², the per-example kernel gradient from shifted slices of the input, one
            contraction per kernel offset (no patches)         cost ~ T D_in D_out
  patches:  the same gradient as one contraction of the patches with g (matmul for a dense layer)
  grouped:  the same gradient as one convolution with the examples as feature groups

and the bias gradient is Σ_t g_t. For a weight-normalised layer (flax `nn.WeightNorm`, W = s·v/‖v‖
per output column) the raw kernel's and the scale's norms follow from ‖∇W_c‖² and u_c·∇W_c per
column. Layers this cannot handle — other layer types (e.g. transposed convolutions), layers called
more than once or inside an inner `vmap` — fall back to `vmap(grad)` over just their own tensors
(`oodgen.features.gradients`).
"""

import dataclasses
import functools
import math
import time
from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import batching

from oodgen.features.gradients import LossFn, group_grad_sq_norms, tensor_names


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One intercepted Dense/Conv call: where its parameters live and how to recover its patches."""
    path: tuple[str, ...]
    kind: str  # "dense" | "conv"
    output_shape: tuple[int, ...]
    output_dtype: jnp.dtype
    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: str | tuple[tuple[int, int], ...] = "SAME"
    dilation: tuple[int, ...] = ()
    weight_norm: tuple[str, ...] | None = None  # path of the nn.WeightNorm wrapping this layer
    scale_name: str | None = None                # that wrapper's scale parameter (None: use_scale=False)


def _conv_padding(module: nn.Conv) -> str | tuple[tuple[int, int], ...] | None:
    padding = module.padding
    if isinstance(padding, str):
        return padding if padding in ("SAME", "VALID") else None
    if isinstance(padding, int):
        return tuple((padding, padding) for _ in module.kernel_size)
    pairs = tuple(tuple(p) if isinstance(p, Sequence) else (p, p) for p in padding)
    return pairs if all(len(p) == 2 for p in pairs) else None


def _weight_norm_fields(wrappers: list) -> dict | None:
    """LayerCall fields for a layer inside `wrappers` (nn.WeightNorm modules), or None if unsupported.

    Supported: no wrapper, or one WeightNorm that normalises only the kernel over all axes but the last.
    """
    if not wrappers:
        return {}
    wrapper = wrappers[-1]
    axes = wrapper.feature_axes
    if (len(wrappers) > 1 or axes not in (-1, (-1,)) or set(wrapper.variable_filter or ()) != {"kernel"}):
        return None
    name = wrapper.layer_instance.name
    return {"weight_norm": tuple(wrapper.path),
            "scale_name": "/".join((*wrapper.path, f"{name}/kernel/scale")) if wrapper.use_scale else None}


def _as_call(module, x, y, batch: int, wrappers: list) -> LayerCall | None:
    """The call's description if the fast path can handle it, else None."""
    wn = _weight_norm_fields(wrappers)
    if wn is None or isinstance(x, batching.BatchTracer) or x.shape[0] != batch:
        return None
    path = tuple(module.path)
    if type(module) is nn.Dense:
        return LayerCall(path, "dense", tuple(y.shape), y.dtype, **wn)
    if type(module) is nn.Conv:
        padding = _conv_padding(module)
        ndim = len(module.kernel_size)
        if (padding is None or module.feature_group_count != 1 or ndim != 2 or x.ndim != 4
                or module.input_dilation not in (None, 1, (1, 1))):
            return None
        as_tuple = lambda v: (v,) * ndim if v is None or isinstance(v, int) else tuple(v)  # noqa: E731
        strides = as_tuple(module.strides or 1)
        dilation = as_tuple(module.kernel_dilation or 1)
        return LayerCall(path, "conv", tuple(y.shape), y.dtype, tuple(module.kernel_size), strides, padding,
                         dilation, **wn)
    return None


def _run_with_probes(loss_fn: LossFn, params, images, keys, probes=None):
    """Runs the loss, recording handled layer calls (and their inputs); adds probes[i] to the outputs."""
    calls: list[LayerCall | None] = []
    inputs: list[jax.Array] = []
    wrappers: list[nn.WeightNorm] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(context.module, nn.WeightNorm):
            wrappers.append(context.module)
            try:
                return next_fun(*args, **kwargs)
            finally:
                wrappers.pop()
        if type(context.module) not in (nn.Dense, nn.Conv):
            return next_fun(*args, **kwargs)
        x = args[0]
        y = next_fun(*args, **kwargs)
        call = _as_call(context.module, x, y, images.shape[0], wrappers)
        calls.append(call)
        if call is not None and probes is not None:
            inputs.append(x)
            y = y + probes[len(inputs) - 1]
        return y

    with nn.intercept_methods(interceptor):
        losses = loss_fn(params, images, keys)
    return losses, calls, inputs


def trace_layers(loss_fn: LossFn, params, images, keys) -> list[LayerCall]:
    """The Dense/Conv calls the fast path handles, in call order (layers called twice are excluded)."""
    recorded: list[LayerCall | None] = []

    def shapes_only(p, x, k):
        _, calls, _ = _run_with_probes(loss_fn, p, x, k)
        recorded.extend(calls)
        return 0.0

    jax.eval_shape(shapes_only, params, images, keys)
    counts: dict[tuple[str, ...], int] = {}
    for call in recorded:
        if call is not None:
            counts[call.path] = counts.get(call.path, 0) + 1
    return [c for c in recorded if c is not None and counts[c.path] == 1]


def _patches(x: jax.Array, call: LayerCall) -> jax.Array:
    """Conv input [B, H, W, C] -> the patch each output position sees, [B, T, C·kh·kw]."""
    patches = jax.lax.conv_general_dilated_patches(
        x, call.kernel_size, call.strides, call.padding, rhs_dilation=call.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return patches.reshape(x.shape[0], -1, patches.shape[-1])


def gram_sq_norm(a: jax.Array, g: jax.Array) -> jax.Array:
    """‖Σ_t a_t g_tᵀ‖² per example by the Gram kernel: a [B, T, I], g [B, T, O] -> f32[B]."""
    return jnp.sum(jnp.einsum("bti,bsi->bts", a, a) * jnp.einsum("bto,bso->bts", g, g), axis=(1, 2))


def gram_column_sq_norms(a: jax.Array, g: jax.Array) -> jax.Array:
    """‖Σ_t a_t g_{t,c}‖² for every output column c by the Gram kernel: -> f32[B, O]."""
    return jnp.einsum("bts,btc,bsc->bc", jnp.einsum("bti,bsi->bts", a, a), g, g)


def _unit_columns(call: LayerCall, params, channel_major: bool) -> tuple[jax.Array, jax.Array]:
    """A weight-normalised kernel W = s · v / sqrt(‖v‖² + eps) as (u = v / sqrt(‖v‖² + eps) [I, O],
    s / sqrt(‖v‖² + eps) [O]); conv rows in patch order (channel-major) or kernel order (HWIO)."""
    kernel = _lookup(params, (*call.path, "kernel"))
    if call.kind == "conv" and channel_major:
        kernel = jnp.moveaxis(kernel, -2, 0)
    v = kernel.reshape(-1, kernel.shape[-1])
    inv_norm = jax.lax.rsqrt(jnp.sum(v * v, axis=0) + 1e-12)                    # WeightNorm's epsilon
    scale = _lookup(params, call.scale_name) if call.scale_name else jnp.ones_like(inv_norm)
    return v * inv_norm, scale * inv_norm


def _weight_norm_sq_norms(call: LayerCall, u: jax.Array, gain: jax.Array, full: jax.Array,
                          along_u: jax.Array) -> dict[str, jax.Array]:
    """Norms of the raw kernel v and the scale s from ‖∇W_c‖² (`full`) and u_c · ∇W_c (`along_u`), [B, O].

    ∇s_c = u_c · ∇W_c and ∇v_c = s_c/sqrt(‖v_c‖² + eps) · (∇W_c − u_c (u_c · ∇W_c)).
    """
    residual = full - 2 * along_u**2 + jnp.sum(u * u, axis=0) * along_u**2
    norms = {"kernel": jnp.sum(gain**2 * residual, axis=-1)}
    if call.scale_name:
        norms[call.scale_name] = jnp.sum(along_u**2, axis=-1)
    return norms


def _explicit_pads(call: LayerCall, x: jax.Array) -> tuple[tuple[int, int], ...]:
    """The conv's padding of x [B, H, W, C] as ((lo, hi), (lo, hi))."""
    if not isinstance(call.padding, str):
        return call.padding
    (kh, kw), (dh, dw) = call.kernel_size, call.dilation
    return tuple(jax.lax.padtype_to_pads(x.shape[1:3], ((kh - 1) * dh + 1, (kw - 1) * dw + 1), call.strides,
                                         call.padding))


def conv_kernel_grads(call: LayerCall, x: jax.Array, cotangent: jax.Array) -> jax.Array:
    """Per-example kernel gradients of a conv by shifted slices: x [B, H, W, C], g [B, H', W', O] ->
    f32[B, kh·kw·C, O] in the kernel's HWIO order; one small contraction per kernel offset, no patches."""
    (kh, kw), (sh, sw), (dh, dw) = call.kernel_size, call.strides, call.dilation
    out_h, out_w = cotangent.shape[1:3]
    x = jnp.pad(x, ((0, 0), *_explicit_pads(call, x), (0, 0)))
    grads = []
    for i in range(kh):
        for j in range(kw):
            window = jax.lax.slice(x, (0, i * dh, j * dw, 0),
                                   (x.shape[0], i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1,
                                    x.shape[3]), (1, sh, sw, 1))
            grads.append(jnp.einsum("bhwc,bhwo->bco", window, cotangent))
    return jnp.stack(grads, axis=1).reshape(x.shape[0], -1, cotangent.shape[-1])


def _lookup(params, path):
    node = params
    for key in (path if isinstance(path, tuple) else _split_scale_name(params, path)):
        node = node[key]
    return node


def _split_scale_name(params, name: str) -> tuple[str, ...]:
    """A WeightNorm scale name 'a/b/<layer>/kernel/scale' -> its key path ('a', 'b', '<layer>/kernel/scale')."""
    parts = name.split("/")
    return (*parts[:-3], "/".join(parts[-3:]))


def conv_kernel_grads_grouped(call: LayerCall, x: jax.Array, cotangent: jax.Array) -> jax.Array:
    """Per-example kernel gradients of a conv as one grouped convolution (examples as feature groups):
    x [B, H, W, C], g [B, H', W', O] -> f32[B, kh·kw·C, O] in the kernel's HWIO order."""
    (kh, kw), (sh, sw), (dh, dw) = call.kernel_size, call.strides, call.dilation
    batch, out_h, out_w, out_c = cotangent.shape
    dtype = jnp.result_type(x, cotangent)
    x, cotangent = x.astype(dtype), cotangent.astype(dtype)
    x = jnp.pad(x, ((0, 0), *_explicit_pads(call, x), (0, 0)))
    lhs = jnp.transpose(x, (3, 1, 2, 0))                                        # [C, Hp, Wp, B]
    rhs = jnp.transpose(cotangent, (1, 2, 0, 3)).reshape(out_h, out_w, 1, batch * out_c)
    out = jax.lax.conv_general_dilated(lhs, rhs, (dh, dw), "VALID", rhs_dilation=(sh, sw),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=batch)
    out = out[:, :kh, :kw].reshape(x.shape[3], kh, kw, batch, out_c)           # [C, kh, kw, B, O]
    return jnp.transpose(out, (3, 1, 2, 0, 4)).reshape(batch, kh * kw * x.shape[3], out_c)


KERNELS = {"dense": ("gram", "matmul"), "conv": ("gram", "slices", "patches", "grouped")}
KERNEL_CHOICES = ("flops", "timed")


def _kernel_stats(kernel: str, call: LayerCall, x: jax.Array, cotangent: jax.Array,
                  u: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """One kernel's exact per-example statistics of the layer's kernel gradient G_i = Σ_t a_t g_tᵀ.

    Without weight norm (u None): (‖G_i‖² f32[B], None). With it: (‖G_i[:, c]‖² f32[B, O], u_c · G_i[:, c]
    f32[B, O]), u's rows in patch (channel-major) order for "gram"/"patches"/dense, HWIO order otherwise.
    """
    batch = x.shape[0]
    g = cotangent.reshape(batch, -1, cotangent.shape[-1])
    if kernel in ("gram", "matmul", "patches"):
        a = _patches(x, call) if call.kind == "conv" else x.reshape(batch, g.shape[1], -1)
        if kernel == "gram":
            if u is None:
                return gram_sq_norm(a, g), None
            return gram_column_sq_norms(a, g), jnp.einsum("bti,io,bto->bo", a, u, g)
        grad = jnp.einsum("bti,bto->bio", a, g)                                  # [B, I, O]
    else:
        grad = (conv_kernel_grads if kernel == "slices" else conv_kernel_grads_grouped)(call, x, cotangent)
    if u is None:
        return jnp.sum(grad**2, axis=(1, 2)), None
    return jnp.sum(grad**2, axis=1), jnp.einsum("bio,io->bo", grad, u)


def _channel_major(kernel: str, call: LayerCall) -> bool:
    return call.kind == "conv" and kernel in ("gram", "patches")


def _flop_counts(call: LayerCall, x_shape: tuple[int, ...], cotangent_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-adds per example of each kernel: T² (I + O) for the Gram kernel, T I O for the others."""
    t, o = math.prod(cotangent_shape[1:-1]), cotangent_shape[-1]
    i = x_shape[-1] * (math.prod(call.kernel_size) if call.kind == "conv" else 1)
    return {kernel: t * t * (i + o) if kernel == "gram" else t * i * o for kernel in KERNELS[call.kind]}


def _flops_choice(call: LayerCall, x_shape: tuple[int, ...], cotangent_shape: tuple[int, ...]) -> str:
    """The Gram kernel when it needs fewer FLOPs, else the per-example gradient (shifted slices for a conv)."""
    flops = _flop_counts(call, x_shape, cotangent_shape)
    if flops["gram"] < flops[KERNELS[call.kind][1]]:
        return "gram"
    return KERNELS[call.kind][1]


_TIMED_CHOICES: dict[tuple, str] = {}


def _timed_choice(call: LayerCall, x: jax.Array, cotangent: jax.Array, weight_norm: bool) -> str:
    """The kernel that ran fastest on random inputs of these shapes on the default backend, among those
    within 4× of the fewest FLOPs (timed once per shape signature and process, and cached)."""
    key = (call.kind, call.kernel_size, call.strides, call.padding, call.dilation, x.shape, x.dtype,
           cotangent.shape, weight_norm, jax.default_backend())
    if key not in _TIMED_CHOICES:
        with jax.ensure_compile_time_eval():
            rng = np.random.default_rng(0)
            x_value = jnp.asarray(rng.standard_normal(x.shape), x.dtype)
            g_value = jnp.asarray(rng.standard_normal(cotangent.shape), cotangent.dtype)
            rows = x.shape[-1] * (math.prod(call.kernel_size) if call.kind == "conv" else 1)
            u = jnp.asarray(rng.standard_normal((rows, cotangent.shape[-1])), x.dtype) if weight_norm else None
            flops = _flop_counts(call, x.shape, cotangent.shape)
            seconds = {}
            for kernel in (k for k in KERNELS[call.kind] if flops[k] <= 4 * min(flops.values())):
                fn = jax.jit(functools.partial(_kernel_stats, kernel, call))
                jax.block_until_ready(fn(x_value, g_value, u))
                runs = []
                for _ in range(3):
                    start = time.perf_counter()
                    jax.block_until_ready(fn(x_value, g_value, u))
                    runs.append(time.perf_counter() - start)
                seconds[kernel] = min(runs)
        _TIMED_CHOICES[key] = min(seconds, key=seconds.get)
    return _TIMED_CHOICES[key]


def _layer_norms(call: LayerCall, params, x: jax.Array, cotangent: jax.Array,
                 kernel_choice: str = "flops") -> dict[str, jax.Array]:
    """Per-example squared gradient norms of the layer's tensors, f32[B] each: {"kernel", "bias", scale}."""
    weight_norm = call.weight_norm is not None
    # Timings differ between processes, and every process must compile the same program: with several
    # processes "timed" picks by FLOPs instead.
    timed = kernel_choice == "timed" and jax.process_count() == 1
    kernel = (_timed_choice(call, x, cotangent, weight_norm) if timed
              else kernel_choice if kernel_choice in KERNELS[call.kind]
              else _flops_choice(call, x.shape, cotangent.shape))
    norms = {"bias": jnp.sum(jnp.sum(cotangent.reshape(x.shape[0], -1, cotangent.shape[-1]), axis=1) ** 2,
                             axis=-1)}
    if not weight_norm:
        norms["kernel"] = _kernel_stats(kernel, call, x, cotangent, None)[0]
        return norms
    u, gain = _unit_columns(call, params, channel_major=_channel_major(kernel, call))
    full, along_u = _kernel_stats(kernel, call, x, cotangent, u)
    norms.update(_weight_norm_sq_norms(call, u, gain, full, along_u))
    return norms


def fast_grad_sq_norms(loss_fn: LossFn, params: chex.ArrayTree, images: jax.Array, keys: jax.Array,
                       chunk_size: int = 8, kernel: str = "timed") -> jax.Array:
    """‖∇_{θ_l} loss(x_i)‖² for every example and tensor: f32[B, n_tensors], columns as `tensor_names`.

    Exact; the same numbers as `per_example_grad_sq_norms`, from one batched backward pass for the
    Dense/Conv layers it handles and `vmap(grad)` (chunked) over the remaining tensors only. `kernel`
    picks each layer's kernel: "timed" (the fastest on this backend, timed once per shape), "flops"
    (by a FLOP count), or one of `KERNELS` for every layer that has it (the FLOP rule for the others).
    """
    valid = {*KERNEL_CHOICES, *KERNELS["dense"], *KERNELS["conv"]}
    if kernel not in valid:
        raise ValueError(f"fast_grad_sq_norms kernel {kernel!r}; use one of {sorted(valid)}")
    names = tensor_names(params)
    column = {name: i for i, name in enumerate(names)}
    calls = trace_layers(loss_fn, params, images, keys)
    probes = [jnp.zeros(call.output_shape, call.output_dtype) for call in calls]

    def summed(probe_values):
        losses, _, inputs = _run_with_probes(loss_fn, params, images, keys, probe_values)
        return jnp.sum(losses), inputs

    columns: dict[int, jax.Array] = {}
    if calls:
        (_, inputs), cotangents = jax.value_and_grad(summed, has_aux=True)(probes)
        for call, x, g in zip(calls, inputs, cotangents):
            for leaf, value in _layer_norms(call, params, x, g, kernel).items():
                name = leaf if "/" in leaf else "/".join((*call.path, leaf))
                if name in column:
                    columns[column[name]] = value

    rest = [i for i in range(len(names)) if i not in columns]
    if rest:
        leaves, treedef = jax.tree.flatten(params)

        def loss_of_rest(rest_leaves, x, k):
            full = list(leaves)
            for i, leaf in zip(rest, rest_leaves):
                full[i] = leaf
            return loss_fn(treedef.unflatten(full), x, k)

        rest_norms = group_grad_sq_norms(loss_of_rest, [leaves[i] for i in rest], images, keys, 1, chunk_size)
        for j, i in enumerate(rest):
            columns[i] = rest_norms[:, j]
    return jnp.stack([columns[i] for i in range(len(names))], axis=1)


def fast_path_coverage(loss_fn: LossFn, params: chex.ArrayTree, images: jax.Array,
                       keys: jax.Array) -> dict[str, str]:
    """{tensor name: "fast" | "vmap"}: which path computes each feature column."""
    fast = {name for call in trace_layers(loss_fn, params, images, keys)
            for name in ("/".join((*call.path, "kernel")), "/".join((*call.path, "bias")), call.scale_name) if name}
    return {name: "fast" if name in fast else "vmap" for name in tensor_names(params)}
