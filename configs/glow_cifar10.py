"""Glow on CIFAR-10 as in Kingma & Dhariwal 2018 and Nalisnick et al. 2019 (3 levels, depth 32, affine
coupling, learned top prior; ~3.35–3.46 bits/dim reported), and its background model, for users with
prepared TFDS copies of cifar10 and svhn_cropped and a GPU:

  python train.py --config configs/glow_cifar10.py            --workdir runs/glow_cifar10
  python train.py --config configs/glow_cifar10.py:background --workdir runs/glow_cifar10_background
  python evaluate.py --workdir runs/glow_cifar10

Variant `:tiny` runs in seconds on random 32x32x3 images (`noise`), for tests.
"""

import ml_collections

from configs import glow_fashion_mnist
from configs.exact_likelihood import parse_variant, use_cifar10

# The Fashion-MNIST file's flags but `paper`: this file already is the GPU-scale CIFAR-10 setting of the papers
# (the docstring says where it differs from them).
VARIANTS = tuple(v for v in glow_fashion_mnist.VARIANTS if v != "paper")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = glow_fashion_mnist.get_config(variant)
    config.model.num_levels = 3
    config.model.depth = 32
    config.model.hidden_channels = 512
    config.train.steps = 200_000
    config.train.learning_rate = 1e-3
    config.eval.background_ratio.workdir = "runs/glow_cifar10_background"
    if "tiny" in flags:
        config.model.num_levels = 2
        config.model.depth = 1
        config.model.hidden_channels = 4
    return use_cifar10(config, "tiny" in flags)
