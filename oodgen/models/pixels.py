"""The observation model every image model shares: preprocessing uint8 pixels and log p(x | decoder output)."""

import dataclasses
import math

import chex
import jax

from oodgen.models import likelihoods
from oodgen.models import capabilities as caps
from oodgen.models.inputs import checks_inputs
from oodgen.sharding import split_keys

LIKELIHOODS = ("bernoulli", "discretized_logistic_mixture")


@dataclasses.dataclass(frozen=True)
class PixelLikelihood:
    """Bernoulli on dynamically binarised 1-channel images, or a discretised logistic mixture on 8-bit ones."""
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
        return likelihoods.num_mixture_params(self.num_mixtures, self.image_shape[-1])

    def preprocess(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> f32 [B, H, W, C]: the network input and Bernoulli target.

        Bernoulli: a dynamic binarisation, one key per example (`rng`: a key or key[B]). Logistic: [-1, 1].
        """
        if self.kind == "bernoulli":
            return jax.vmap(likelihoods.dynamic_binarize)(split_keys(rng, images.shape[0]), images)
        return likelihoods.to_symmetric_interval(images)

    def log_prob(self, out: jax.Array, target: jax.Array, images: jax.Array) -> jax.Array:
        """log p(x | decoder output f32[B, H, W, out_features]) in nats: f32[B]."""
        if self.kind == "bernoulli":
            per_element = likelihoods.bernoulli_log_prob(out, target)
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
        kind = caps.BINARY_LIKELIHOOD if self.likelihood == "bernoulli" else caps.PIXEL_LIKELIHOOD
        return frozenset({kind, caps.ENCODER, caps.EVAL_NLL})

    @property
    def summary(self) -> str:
        what = "binarised pixels" if self.likelihood == "bernoulli" else "8-bit pixels"
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
