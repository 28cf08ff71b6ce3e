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
from configs.exact_likelihood import parse_variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, pixelcnn_fashion_mnist.VARIANTS)
    config = pixelcnn_fashion_mnist.get_config(variant)
    config.data.train = "cifar10:train"
    config.data.test = "cifar10:test"
    config.data.image_shape = (32, 32, 3)
    config.eval.ood = ["svhn", "noise", "constant", "cifar10:test+hflip", "cifar10:test+vflip",
                       "cifar10:test+invert"]
    if "local" in flags:
        config.model.num_filters = 256
        config.model.num_mixtures = 10
    else:
        config.model.num_filters = 160
        config.model.num_resnets = 5
        config.model.num_mixtures = 10
    config.train.steps = 300_000
    config.train.learning_rate = 2e-4
    config.train.checkpoint_every = 5000
    config.train.log_every = 500
    config.eval.batch_size = 100
    config.eval.max_examples = -1
    config.eval.background_ratio.workdir = "runs/pixelcnn_cifar10_background"
    config.eval.local_ratio.workdir = "runs/pixelcnn_cifar10_local"
    if "background" in flags:
        config.train.perturbation_rate = 0.1

    if "tiny" in flags:
        config.data.train = config.data.test = "noise"
        config.data.num_validation = 32
        config.data.max_train_examples = 256
        config.eval.ood = ["constant", "noise+hflip"]
        config.model.num_filters = 4
        config.model.num_mixtures = 2
        if "local" not in flags:
            config.model.num_resnets = 1
        config.train.steps = 2
        config.train.batch_size = 8
        config.train.warmup_steps = 1
        config.train.log_every = 1
        config.train.checkpoint_every = 1
        config.eval.batch_size = 16
        config.eval.max_examples = 24
    return config
