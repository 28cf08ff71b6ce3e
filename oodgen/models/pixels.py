"""The observation model every image model shares: preprocessing uint8 pixels and log p(x | decoder output)."""

import dataclasses
import math

import chex
import jax

from oodgen.models import likelihoods
from oodgen.models import capabilities as caps
from oodgen.models.inputs import checks_inputs
from oodgen.sharding import split_keys

# bernoulli: dynamically binarised pixels; discretized_logistic_mixture: 8-bit pixels, inputs on [-1, 1];
# categorical: 8-bit pixels, a 256-way softmax per sub-pixel, inputs on [0, 1] (Xiao et al. 2020's VAE decoder).
LIKELIHOODS = ("bernoulli", "discretized_logistic_mixture", "categorical")
# What each likelihood makes `log_prob` a likelihood of (oodgen.models.capabilities).
LIKELIHOOD_CAPABILITY = {"bernoulli": caps.BINARY_LIKELIHOOD, "discretized_logistic_mixture": caps.PIXEL_LIKELIHOOD,
                         "categorical": caps.PIXEL_LIKELIHOOD}


@dataclasses.dataclass(frozen=True)
class PixelLikelihood:
    """Bernoulli on dynamically binarised 1-channel images; or, on 8-bit ones, a discretised logistic mixture
    or a 256-way categorical per sub-pixel."""
    kind: str
    image_shape: tuple[int, int, int]
    num_mixtures: int = 5

    def __post_init__(self):
        if self.kind not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.kind!r}; choose one of {LIKELIHOODS}")
        if self.kind == "bernoulli" and self.image_shape[-1] != 1:
            raise ValueError("the Bernoulli likelihood is for 1-channel images; "
                             "use likelihood='discretized_logistic_mixture' for colour")

    @property
    def out_features(self) -> int:
        """Channels a decoder must output per pixel."""
        if self.kind == "bernoulli":
            return 1
        if self.kind == "categorical":
            return likelihoods.NUM_LEVELS * self.image_shape[-1]   # channel c's logits: [256 c, 256 (c + 1))
        return likelihoods.num_mixture_params(self.num_mixtures, self.image_shape[-1])

    def preprocess(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> f32 [B, H, W, C]: the network input and Bernoulli target.

        Bernoulli: a dynamic binarisation, one key per example (`rng`: a key or key[B]). Logistic: [-1, 1].
        Categorical: [0, 1] (images / 255, no binarisation, as Xiao et al.'s reference feeds its encoder).
        """
        if self.kind == "bernoulli":
            return jax.vmap(likelihoods.dynamic_binarize)(split_keys(rng, images.shape[0]), images)
        if self.kind == "categorical":
            return likelihoods.to_unit_interval(images)
        return likelihoods.to_symmetric_interval(images)

    def log_prob(self, out: jax.Array, target: jax.Array, images: jax.Array) -> jax.Array:
        """log p(x | decoder output f32[B, H, W, out_features]) in nats: f32[B]."""
        if self.kind == "bernoulli":
            per_element = likelihoods.bernoulli_log_prob(out, target)
        elif self.kind == "categorical":
            logits = out.reshape(*out.shape[:-1], self.image_shape[-1], likelihoods.NUM_LEVELS)
            per_element = likelihoods.categorical_log_prob(images, logits)
        else:
            per_element = likelihoods.discretized_logistic_mixture_log_prob(images, out, self.num_mixtures)
        return likelihoods.sum_per_example(per_element)


class ImageShapeMixin(caps.DeclaresCapabilities):
    """What every model dataclass with an `image_shape` (H, W, C) field shares."""

    @property
    def num_dims(self) -> int:
        """D = H·W·C, the divisor of bits per dimension."""
        return math.prod(self.image_shape)

    def check_divisible(self, scale: int, why: str) -> None:
        """ValueError unless image_shape is (H, W, C) of positive ints with H and W multiples of `scale`
        (`why` says which layers need it)."""
        if len(self.image_shape) != 3 or any(int(n) < 1 for n in self.image_shape):
            raise ValueError(f"image_shape must be (H, W, C) of positive ints; got {self.image_shape}")
        if self.image_shape[0] % scale or self.image_shape[1] % scale:
            raise ValueError(f"image height and width must be divisible by {scale} ({why}); "
                             f"got {self.image_shape[:2]}")

    def check_positive_int(self, field: str) -> None:
        """ValueError unless the field `field` is an integer >= 1."""
        value = getattr(self, field)
        if int(value) != value or value < 1:
            raise ValueError(f"{field} must be a positive integer; got {value}")


class PixelModelMixin(ImageShapeMixin):
    """What every latent-variable image model dataclass shares; it needs fields `image_shape`, `likelihood`,
    `num_mixtures` and a `net` property (a flax module taking the preprocessed images) whose parameters
    have a top-level `encoder` group (the inference network) and a `loss` (the negative one-sample bound)."""
    encoder_module = "encoder"   # params[encoder_module]: the inference network, by module structure

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({LIKELIHOOD_CAPABILITY[self.likelihood], caps.ENCODER, caps.EVAL_NLL})

    @property
    def summary(self) -> str:
        what = caps.DATA_OF[LIKELIHOOD_CAPABILITY[self.likelihood]]
        return f"{self.kind} models {what} (model.likelihood={self.likelihood})"

    def how_to_offer(self, capability: str) -> str | None:
        if capability == caps.PIXEL_LIKELIHOOD and self.likelihood == "bernoulli":
            return "use model.likelihood=discretized_logistic_mixture"
        return None

    @checks_inputs(keys="rng")
    def eval_nll(self, params: chex.ArrayTree, images: jax.Array, rng: jax.Array) -> jax.Array:
        """The per-example NLL for gradient features: the negative one-sample bound, f32[B], nats. Nothing in
        it is training-only; its noise (binarisation, posterior sample) is the bound's own, from each example's key."""
        return self.loss(params, images, rng)

    @property
    def pixels(self) -> PixelLikelihood:
        return PixelLikelihood(self.likelihood, self.image_shape, self.num_mixtures)

    @checks_inputs()
    def init(self, rng: jax.Array, images: jax.Array) -> chex.ArrayTree:
        """Parameters for this model, from a (small) batch of uint8 images."""
        return self.net.init(rng, self.preprocess(jax.random.fold_in(rng, 1), images))["params"]

    @checks_inputs(keys="rng")
    def preprocess(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> the network input and Bernoulli target, f32 [B, H, W, C]."""
        return self.pixels.preprocess(rng, images)
