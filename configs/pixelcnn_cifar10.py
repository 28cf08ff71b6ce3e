"""PixelCNN++ on CIFAR-10 (Salimans et al. 2017's size), its background model and a local PixelCNN,
for users with prepared TFDS copies of cifar10 and svhn_cropped (README, "Data without internet") and a GPU:

  python train.py --config configs/pixelcnn_cifar10.py            --workdir runs/pixelcnn_cifar10
  python train.py --config configs/pixelcnn_cifar10.py:background --workdir runs/pixelcnn_cifar10_background
  python train.py --config configs/pixelcnn_cifar10.py:local      --workdir runs/pixelcnn_cifar10_local
  python evaluate.py --workdir runs/pixelcnn_cifar10

PixelCNN++: 160 filters, 5 gated resnets per stage, 3 scales, 10 mixture components with channel
dependence (the paper reports 2.92 bits/dim). Local model as in NeLLoC: horizon 3, 256 filters, 10
components. Background: μ = 0.1 (Ren et al.'s grid for CIFAR-10 is the same as for Fashion-MNIST).
Variant `:tiny` runs in seconds on random 32x32x3 images (`noise`), for tests.
"""

import ml_collections

from configs import pixelcnn_fashion_mnist
from configs.exact_likelihood import parse_variant, use_cifar10

# The Fashion-MNIST file's flags but `paper`: this file already is the GPU-scale CIFAR-10 setting of the papers
# (the docstring says where it differs from them).
VARIANTS = tuple(v for v in pixelcnn_fashion_mnist.VARIANTS if v != "paper")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = pixelcnn_fashion_mnist.get_config(variant)
    if "local" in flags:
        config.model.num_filters = 256
        config.model.num_mixtures = 10
    else:
        config.model.num_filters = 160
        config.model.num_resnets = 5
        config.model.num_mixtures = 10
    config.train.steps = 300_000
    config.train.learning_rate = 2e-4
    config.eval.background_ratio.workdir = "runs/pixelcnn_cifar10_background"
    config.eval.local_ratio.workdir = "runs/pixelcnn_cifar10_local"
    if "background" in flags:
        config.train.perturbation_rate = 0.1
    if "tiny" in flags:
        config.model.num_filters = 4
        config.model.num_mixtures = 2
        if "local" not in flags:
            config.model.num_resnets = 1
    return use_cifar10(config, "tiny" in flags)
