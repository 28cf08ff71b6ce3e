"""oodgen: unsupervised out-of-distribution detection with deep generative models, in JAX/Flax.

Higher score = more OOD, for every scorer. Images are uint8 [N, H, W, C]; each model owns its
preprocessing. Everything below is a pure function of (params, images, rng) or a small frozen
dataclass holding hyper-parameters.
"""

from oodgen import data, sharding
from oodgen.evaluation import metrics, plots
from oodgen.models import likelihoods
from oodgen.training.checkpoints import checkpoint_manager
from oodgen.config import load_config_file, load_saved_config, parse_overrides
from oodgen.data import Dataset, load
from oodgen.errors import DatasetNotFoundError, OodgenError
from oodgen.evaluation.harness import evaluate
from oodgen.evaluation.metrics import auroc, auprc_in, auprc_out, detection_error, fpr_at_tpr, ood_metrics
from oodgen.models import MODELS, build_model
from oodgen.models.ddpm import DDPMModel
from oodgen.models.glow import GlowModel
from oodgen.models.hvae import HVAEModel
from oodgen.models.pixelcnn import LocalPixelCNNModel, PixelCNNPPModel
from oodgen.models.score_net import ScoreNetModel
from oodgen.models.vae import VAEModel
from oodgen.scorers import SCORERS, build_scorer
from oodgen.scorers.likelihood import LikelihoodScorer
from oodgen.training.loop import TrainState, create_train_state, make_optimizer, make_train_step, train
from oodgen.validation import check_images

__all__ = [
    "DDPMModel", "Dataset", "DatasetNotFoundError", "GlowModel", "HVAEModel", "LikelihoodScorer", "LocalPixelCNNModel", "MODELS", "OodgenError", "PixelCNNPPModel", "SCORERS", "ScoreNetModel", "TrainState",
    "VAEModel", "auprc_in", "auprc_out", "auroc", "build_model", "build_scorer", "check_images",
    "checkpoint_manager", "create_train_state", "data", "detection_error", "evaluate", "fpr_at_tpr",
    "likelihoods", "load", "load_config_file", "load_saved_config", "make_optimizer", "make_train_step",
    "metrics", "ood_metrics", "parse_overrides", "plots", "sharding", "train",
]
