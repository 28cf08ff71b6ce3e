"""The observation model every image model shares: preprocessing uint8 pixels and log p(x | decoder output)."""

import dataclasses

import jax

from oodgen import likelihoods
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
