"""Autoregressive pixel models: PixelCNN++ and a local (NeLLoC-style) PixelCNN.

Both factorise p(x) = Π_i p(x_i | x_<i) over pixels in raster order, each pixel's C channels
jointly under a discretised logistic mixture with linear channel dependence, so `log_prob` is the
exact log-likelihood of the 8-bit image. `PixelCNNPPModel` conditions on every previous pixel;
`LocalPixelCNNModel` only on those within a horizon h (the likelihood whose ratio to a full model's
is the local autoregressive score).

Every convolution is a plain `nn.Conv` with padding='VALID' on explicitly padded input (causal
shifts and masks are paddings and kernel shapes), every network-in-network layer a plain
`nn.Dense`, and each module instance runs once per forward pass: the layers oodgen's fast
per-example gradient norms handle (`oodgen.features.gradients_fast`). Images go in as uint8 [B, H, W, C].
"""

import dataclasses
import itertools
import math
from typing import ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from oodgen.models import likelihoods
from oodgen.models import capabilities as caps
from oodgen.models.inputs import checks_inputs
from oodgen.models.vae import depth_to_space
from oodgen.sharding import split_keys


def concat_elu(x: jax.Array) -> jax.Array:
    """f32[..., F] -> f32[..., 2F]: elu of x and of -x."""
    return nn.elu(jnp.concatenate([x, -x], axis=-1))


def pad_down(x: jax.Array, kernel_size: tuple[int, int]) -> jax.Array:
    """Pads [B, H, W, C] so a VALID (kh, kw) conv puts output (i, j) on rows i-kh+1..i, columns
    centred on j (kw odd): the down-shifted convolution."""
    kh, kw = kernel_size
    return jnp.pad(x, ((0, 0), (kh - 1, 0), ((kw - 1) // 2, (kw - 1) // 2), (0, 0)))


def pad_down_right(x: jax.Array, kernel_size: tuple[int, int]) -> jax.Array:
    """Pads [B, H, W, C] so a VALID (kh, kw) conv puts output (i, j) on rows i-kh+1..i and
    columns j-kw+1..j: the down-right-shifted convolution."""
    kh, kw = kernel_size
    return jnp.pad(x, ((0, 0), (kh - 1, 0), (kw - 1, 0), (0, 0)))


def down_shift(x: jax.Array) -> jax.Array:
    """[B, H, W, C]: row i takes row i-1 (zeros in row 0)."""
    return jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


def right_shift(x: jax.Array) -> jax.Array:
    """[B, H, W, C]: column j takes column j-1 (zeros in column 0)."""
    return jnp.pad(x[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))


def with_ones_channel(x: jax.Array) -> jax.Array:
    """f32[B, H, W, C] -> f32[B, H, W, C+1]: a constant channel, so zero padding differs from a pixel."""
    return jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)


def per_example_dropout(x: jax.Array, keys: jax.Array, index: int, rate: float) -> jax.Array:
    """Inverted dropout on x [B, ...], example b's mask drawn from fold_in(keys[b], index)."""
    keep = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, index), 1.0 - rate, x.shape[1:]))(keys)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


DOWN, DOWN_RIGHT = "down", "down_right"
_KERNELS = {DOWN: (2, 3), DOWN_RIGHT: (2, 2)}
_PADS = {DOWN: pad_down, DOWN_RIGHT: pad_down_right}


class GatedResnet(nn.Module):
    """x + a·σ(b), with (a, b) = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(aux))))).

    `stream` picks the causal conv: "down" (2x3, the u stream) or "down_right" (2x2, the ul stream).
    x f32[B, H, W, F], aux f32[B, H, W, F'] or None, keys key[B] (dropout on) or None -> f32[B, H, W, F].
    """
    stream: str
    dropout_rate: float
    index: int  # folded into each example's key, so every block draws its own dropout mask

    @nn.compact
    def __call__(self, x: jax.Array, aux: jax.Array | None = None, keys: jax.Array | None = None) -> jax.Array:
        features = x.shape[-1]
        kernel, pad = _KERNELS[self.stream], _PADS[self.stream]
        h = nn.Conv(features, kernel, padding="VALID")(pad(concat_elu(x), kernel))
        if aux is not None:
            h = h + nn.Dense(features)(concat_elu(aux))
        h = concat_elu(h)
        if keys is not None and self.dropout_rate > 0:
            h = per_example_dropout(h, keys, self.index, self.dropout_rate)
        # Small initial residual branches (the paper's init_scale=0.1).
        small = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")
        h = nn.Conv(2 * features, kernel, padding="VALID", kernel_init=small)(pad(h, kernel))
        a, b = jnp.split(h, 2, axis=-1)
        return x + a * nn.sigmoid(b)


class PixelCNNPPNet(nn.Module):
    """PixelCNN++: x f32[B, H, W, C] on [-1, 1] -> mixture parameters f32[B, H, W, out_features].

    Output (i, j) depends only on pixels before (i, j) in raster order. The u stream sees the rows
    above, the ul stream the rows above and the pixels to the left. Down-sampling is a stride-2
    causal conv; up-sampling replaces the paper's stride-2 transposed convs by a conv to 4x the
    channels and a pixel shuffle: a 1x1 conv for ul (exactly the 2x2 down-right-shifted deconv) and
    a 1x2 conv over columns j, j+1 for u (a superset of the 2x3 down-shifted deconv's taps; both
    are causal). `keys` (key[B]) turn dropout on, one mask per example. The last layer is `out`.
    """
    num_filters: int
    num_resnets: int
    num_scales: int
    out_features: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        f = self.num_filters
        x = with_ones_channel(x)
        u = down_shift(nn.Conv(f, (2, 3), padding="VALID")(pad_down(x, (2, 3))))
        ul = (down_shift(nn.Conv(f, (1, 3), padding="VALID")(pad_down(x, (1, 3))))
              + right_shift(nn.Conv(f, (2, 1), padding="VALID")(pad_down_right(x, (2, 1)))))
        index = itertools.count()

        def block(stream: str) -> GatedResnet:
            return GatedResnet(stream, self.dropout_rate, next(index))

        us, uls = [u], [ul]
        for scale in range(self.num_scales):
            if scale > 0:
                us.append(nn.Conv(f, (2, 3), strides=2, padding="VALID")(pad_down(us[-1], (2, 3))))
                uls.append(nn.Conv(f, (2, 2), strides=2, padding="VALID")(pad_down_right(uls[-1], (2, 2))))
            for _ in range(self.num_resnets):
                us.append(block(DOWN)(us[-1], keys=keys))
                uls.append(block(DOWN_RIGHT)(uls[-1], us[-1], keys))

        u, ul = us.pop(), uls.pop()
        for scale in range(self.num_scales):
            if scale > 0:
                u = depth_to_space(nn.Conv(4 * f, (1, 2), padding="VALID")(
                    jnp.pad(u, ((0, 0), (0, 0), (0, 1), (0, 0)))))
                ul = depth_to_space(nn.Dense(4 * f)(ul))
            for _ in range(self.num_resnets + int(scale > 0)):
                u = block(DOWN)(u, us.pop(), keys)
                ul = block(DOWN_RIGHT)(ul, jnp.concatenate([u, uls.pop()], axis=-1), keys)
        assert not us and not uls, "every skip connection is used once"
        return nn.Dense(self.out_features, name="out")(nn.elu(ul))


class LocalPixelCNNNet(nn.Module):
    """A local PixelCNN: x f32[B, H, W, C] on [-1, 1] -> mixture parameters f32[B, H, W, out_features].

    Output (i, j) depends exactly on the pixels (i', j') with i-h <= i' <= i, |j'-j| <= h, before
    (i, j) in raster order. The type-A masked (2h+1)x(2h+1) conv is the sum of two plain convs over
    its unmasked support: an h x (2h+1) conv over the h rows above and a 1 x h conv over the h
    pixels to the left (the same function and parameter count as the masked kernel, and no
    masked-out weights). Then `num_blocks` residual blocks of three 1x1 convs (dense layers) with
    ReLUs, and two 1x1 output layers (the last named `out`), as in NeLLoC. A constant ones channel
    (not a pixel) lets it tell the zero padding at the borders from pixel value 127.5.
    """
    horizon: int
    num_filters: int
    num_blocks: int
    out_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, f = self.horizon, self.num_filters
        x = with_ones_channel(x)
        above = jnp.pad(x[:, :-1], ((0, 0), (h, 0), (h, h), (0, 0)))   # output row i sees rows i-h..i-1
        left = jnp.pad(x[:, :, :-1], ((0, 0), (0, 0), (h, 0), (0, 0)))  # output column j sees j-h..j-1
        y = (nn.Conv(f, (h, 2 * h + 1), padding="VALID", use_bias=False)(above)
             + nn.Conv(f, (1, h), padding="VALID")(left))
        y = nn.relu(y)
        for _ in range(self.num_blocks):
            z = y
            for _ in range(3):
                z = nn.relu(nn.Dense(f)(z))
            y = y + z
        return nn.Dense(self.out_features, name="out")(nn.relu(nn.Dense(f)(y)))


def _check_image_shape(image_shape: tuple[int, ...]) -> None:
    if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes; got {image_shape}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")


class _AutoregressiveModel(caps.DeclaresCapabilities):
    """What both models share; needs fields `image_shape`, `num_mixtures`, a `net` property and
    `log_prob_per_pixel`."""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({caps.PIXEL_LIKELIHOOD, caps.EVAL_NLL, caps.PER_PIXEL})

    @property
    def summary(self) -> str:
        return f"{self.kind} models 8-bit pixels autoregressively (exact likelihood)"

    @checks_inputs()
    def eval_nll(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """−log p(x) in evaluation mode (no dropout), the per-example NLL for gradient features: f32[B], nats.
        Deterministic: `rng` is ignored."""
        return -self.log_prob(params, images, rng)

    @property
    def num_dims(self) -> int:
        """D = H·W·C, the divisor of bits per dimension."""
        return math.prod(self.image_shape)

    @property
    def out_features(self) -> int:
        """Mixture parameters the network outputs per pixel."""
        return likelihoods.num_mixture_params(self.num_mixtures, self.image_shape[-1])

    @checks_inputs()
    def init(self, rng: jax.Array, images: jax.Array) -> chex.ArrayTree:
        """Parameters for this model, from a (small) batch of uint8 images [b, H, W, C]."""
        return self.net.init(rng, likelihoods.to_symmetric_interval(images))["params"]

    def _mixture_log_prob(self, images: jax.Array, out: jax.Array) -> jax.Array:
        """log P(pixel | network output) in nats: f32[B, H, W]."""
        return likelihoods.discretized_logistic_mixture_log_prob(images, out, self.num_mixtures)

    @checks_inputs()
    def log_prob(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array | None = None,
                 num_samples: int = 1) -> jax.Array:
        """Exact log p(x) of uint8 images [B, H, W, C], in nats: f32[B]. Evaluation mode (no
        dropout); `rng` and `num_samples` are accepted for the common model interface and ignored."""
        del rng, num_samples
        return likelihoods.sum_per_example(self.log_prob_per_pixel(params, images))


@dataclasses.dataclass(frozen=True)
class PixelCNNPPModel(_AutoregressiveModel):
    """PixelCNN++ (Salimans et al. 2017) on uint8 images of `image_shape`.

    `num_resnets` gated resnet blocks per scale and stream; `num_scales` resolutions (H and W halve
    at each, so they must be divisible by 2**(num_scales-1)); `dropout_rate` inside every block
    during training. Every public function is pure; `rng` is one key or one key per example (key[B]).

    The defaults are small enough to train on a CPU (0.3-0.6 s per step of 64 28x28 images on a
    shared two-core machine; 32 filters and 2 blocks took 3-4.5 s). Ren et al.'s Fashion-MNIST
    model is num_filters=32, num_resnets=5, num_mixtures=1.
    """
    kind: ClassVar[str] = "pixelcnn"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    num_filters: int = 8
    num_resnets: int = 1
    num_scales: int = 3
    num_mixtures: int = 5
    dropout_rate: float = 0.5

    def __post_init__(self):
        _check_image_shape(self.image_shape)
        _check_positive(num_filters=self.num_filters, num_resnets=self.num_resnets,
                        num_scales=self.num_scales, num_mixtures=self.num_mixtures)
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1); got {self.dropout_rate}")
        scale = 2 ** (self.num_scales - 1)
        if self.image_shape[0] % scale or self.image_shape[1] % scale:
            raise ValueError(f"image height and width must be divisible by 2**(num_scales-1) = {scale} "
                             f"(num_scales={self.num_scales}); got {tuple(self.image_shape[:2])}: "
                             "lower num_scales")

    @property
    def net(self) -> PixelCNNPPNet:
        return PixelCNNPPNet(self.num_filters, self.num_resnets, self.num_scales, self.out_features,
                             self.dropout_rate)

    @checks_inputs()
    def log_prob_per_pixel(self, params: chex.ArrayTree, images: jax.Array) -> jax.Array:
        """log P(x_ij | x_<ij), all C channels jointly, evaluation mode: f32[B, H, W], nats."""
        out = self.net.apply({"params": params}, likelihoods.to_symmetric_interval(images))
        return self._mixture_log_prob(images, out)

    @checks_inputs(keys="rng")
    def loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """Per-example training loss −log p(x) with dropout on: f32[B], nats.

        Example b's dropout masks come from its own key (`rng` split into key[B] if it is one key),
        so its loss does not depend on the rest of the batch.
        """
        keys = split_keys(rng, images.shape[0])
        out = self.net.apply({"params": params}, likelihoods.to_symmetric_interval(images), keys)
        return -likelihoods.sum_per_example(self._mixture_log_prob(images, out))


@dataclasses.dataclass(frozen=True)
class LocalPixelCNNModel(_AutoregressiveModel):
    """A local autoregressive model (NeLLoC, Zhang et al.) on uint8 images of `image_shape`.

    Pixel (i, j) is predicted from the pixels within `horizon` h of it that come before it (a
    (2h+1)x(2h+1) type-A mask), then mixed with a uniform distribution over the 256^C values of a
    pixel at weight `uniform_weight`: p = (1-w) p_mixture + w / 256^C. No dropout.
    """
    kind: ClassVar[str] = "local_pixelcnn"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    horizon: int = 3
    num_filters: int = 64
    num_blocks: int = 2
    num_mixtures: int = 10
    uniform_weight: float = 1e-4

    def __post_init__(self):
        _check_image_shape(self.image_shape)
        _check_positive(horizon=self.horizon, num_filters=self.num_filters, num_mixtures=self.num_mixtures)
        if self.num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0; got {self.num_blocks}")
        if not 0.0 <= self.uniform_weight <= 1.0:
            raise ValueError(f"uniform_weight must be in [0, 1]; got {self.uniform_weight}")

    @property
    def net(self) -> LocalPixelCNNNet:
        return LocalPixelCNNNet(self.horizon, self.num_filters, self.num_blocks, self.out_features)

    @checks_inputs()
    def log_prob_per_pixel(self, params: chex.ArrayTree, images: jax.Array) -> jax.Array:
        """log P(x_ij | pixels within the horizon before it), all C channels jointly: f32[B, H, W], nats."""
        out = self.net.apply({"params": params}, likelihoods.to_symmetric_interval(images))
        log_mixture = self._mixture_log_prob(images, out)
        w = self.uniform_weight
        log_uniform = -self.image_shape[-1] * math.log(likelihoods.NUM_LEVELS)
        if w == 0.0:
            return log_mixture
        if w == 1.0:
            return jnp.full_like(log_mixture, log_uniform)
        return jnp.logaddexp(log_mixture + math.log1p(-w), log_uniform + math.log(w))

    @checks_inputs()
    def loss(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """Per-example training loss −log p(x): f32[B], nats (`rng` is ignored: nothing is random)."""
        return -self.log_prob(params, images)
