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
from configs.exact_likelihood import parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, glow_fashion_mnist.VARIANTS)
    config = glow_fashion_mnist.get_config(variant)
    config.data.train = "cifar10:train"
    config.data.test = "cifar10:test"
    config.data.image_shape = (32, 32, 3)
    config.eval.ood = ["svhn", "noise", "constant", "cifar10:test+hflip", "cifar10:test+vflip",
                       "cifar10:test+invert"]
    config.model.num_levels = 3
    config.model.depth = 32
    config.model.hidden_channels = 512
    config.train.steps = 200_000
    config.train.learning_rate = 1e-3
    config.train.checkpoint_every = 5000
    config.train.log_every = 500
    config.eval.batch_size = 100
    config.eval.max_examples = -1
    config.eval.background_ratio.workdir = "runs/glow_cifar10_background"

    if "tiny" in flags:
        config.data.train = config.data.test = "noise"
        config.data.num_validation = 32
        config.data.max_train_examples = 256
        config.eval.ood = ["constant", "noise+hflip"]
        config.model.num_levels = 2
        config.model.depth = 1
        config.model.hidden_channels = 4
        config.train.steps = 2
        config.train.batch_size = 8
        config.train.warmup_steps = 1
        config.train.log_every = 1
        config.train.checkpoint_every = 1
        config.eval.batch_size = 16
        config.eval.max_examples = 24
    return config
