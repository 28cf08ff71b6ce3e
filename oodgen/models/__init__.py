"""Generative models, each a frozen dataclass of hyper-parameters with pure functions.

Every public method that takes images checks them at the call (`oodgen.models.inputs`): shapes always, values
(NaN, inf, outside 0..255, [0, 1]-scaled floats) when the array is concrete; a bad input is a one-line
OodgenError, and calls traced under jit, vmap or grad are check-free beyond their static shapes."""

import ml_collections

from oodgen.errors import OodgenError
from oodgen.models.ddpm import DDPMModel
from oodgen.models.glow import GlowModel
from oodgen.models.hvae import HVAEModel
from oodgen.models.pixelcnn import LocalPixelCNNModel, PixelCNNPPModel
from oodgen.models.score_net import ScoreNetModel
from oodgen.models.vae import VAEModel

MODELS = {"vae": VAEModel, "hvae": HVAEModel, "pixelcnn": PixelCNNPPModel, "local_pixelcnn": LocalPixelCNNModel,
          "glow": GlowModel, "score_net": ScoreNetModel, "ddpm": DDPMModel}


def build_model(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]):
    """The model named by `config.name`, built from the rest of `config` for images of `image_shape`."""
    kwargs = dict(config)
    name = kwargs.pop("name")
    if name not in MODELS:
        raise OodgenError(f"unknown model {name!r} in config.model.name; choose one of {sorted(MODELS)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return MODELS[name](image_shape=tuple(image_shape), **kwargs)
    except (TypeError, ValueError) as e:
        raise OodgenError(f"bad config.model for {name!r}: {e}") from None
