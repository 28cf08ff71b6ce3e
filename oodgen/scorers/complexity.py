"""Input complexity (Serrà et al. 2020): S(x) = NLL(x) − L(x), both in bits per dimension, where L(x) is
the length of x under a lossless codec, image data only (`oodgen.features.compression`). Simple images (MNIST,
constants) get high likelihood because they compress well; subtracting L corrects for that.
Higher = more OOD. One score per codec: `input_complexity_<codec>`.

Both terms must describe the same data, the 8-bit image: the scorer needs a likelihood of the 8-bit pixels
and refuses a model of binarised pixels (a Bernoulli NLL is at most 1 bit/dim, so subtracting the 8-bit
PNG length would give about −L(x)).
"""

import dataclasses
from typing import ClassVar

import chex
import numpy as np

from oodgen.features.compression import CODECS, compressed_bits_per_dim
from oodgen.errors import OodgenError
from oodgen.models import capabilities as caps
from oodgen.scorers.base import ModelScorer
from oodgen.models.likelihoods import negative_log_likelihood_bpd
from oodgen.validation import check_images


@dataclasses.dataclass(frozen=True)
class InputComplexityScorer(ModelScorer):
    """NLL (the model's bound with `num_samples`) minus compressed length, bits/dim, for each codec."""
    codecs: tuple[str, ...] = ("png", "jpeg2000")
    name: str = "input_complexity"
    units: str = "NLL − compressed length (bits/dim)"
    requires: ClassVar = ((caps.PIXEL_LIKELIHOOD,),)

    def __post_init__(self):
        super().__post_init__()
        unknown = [c for c in self.codecs if c not in CODECS]
        if not self.codecs or unknown:
            raise OodgenError(f"config.eval.input_complexity.codecs={list(self.codecs)}; choose from {CODECS}")

    def score_all(self, params: chex.ArrayTree, images: np.ndarray) -> dict[str, np.ndarray]:
        """{input_complexity_<codec>: f32[N]} for uint8 images [N, H, W, C]."""
        images = check_images(images, self.model.image_shape)
        nll = self.map_model(negative_log_likelihood_bpd, params, images)
        return {f"{self.name}_{codec}": (nll - compressed_bits_per_dim(images, codec)).astype(np.float32)
                for codec in self.codecs}

    def score(self, params: chex.ArrayTree, images: np.ndarray) -> np.ndarray:
        """f32[N]: the score with the first codec."""
        return self.score_all(params, images)[f"{self.name}_{self.codecs[0]}"]
