"""A noise-conditional score network on CIFAR-10 for MSMA (Mahmood et al. 2021), for users with
prepared TFDS copies of cifar10 and svhn_cropped (README, "Data without internet") and a GPU:

  python train.py    --config configs/score_net_cifar10.py --workdir runs/score_net_cifar10
  python evaluate.py --workdir runs/score_net_cifar10

The paper's recipe: 10 noise levels geometric from σ = 1 to 0.01 on pixels in [0, 1], a 128-filter
network, σ²-weighted denoising score matching; its reference notebook reports CIFAR-10 → SVHN AUROC 0.959 (GMM) and 0.991
(5-NN). Here the network is this library's two-resolution U-Net at 128 filters with conditional instance
normalisation++, trained 200k steps of
batch 128 (the 32-filter Fashion-MNIST model ran ~230 steps/s of batch 128 on one H100; this one is
larger and its images bigger, so time a few hundred steps before planning). Variant `:tiny` runs in seconds on random 32x32x3 images, for tests.
"""

import ml_collections

from configs import score_net_fashion_mnist
from configs.exact_likelihood import parse_variant, use_cifar10


def use_cifar10_unet(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """The CIFAR-10 U-Net recipe shared with configs/ddpm_cifar10.py: 128 filters, `steps` of batch 128
    at Adam 2e-4 after 1000 warm-up steps."""
    config.model.num_filters = 128
    config.train.update(steps=steps, batch_size=128, learning_rate=2e-4, warmup_steps=1000)
    return config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, ("tiny",))
    config = score_net_fashion_mnist.get_config(variant)
    if "tiny" not in flags:
        config = use_cifar10_unet(config, steps=200_000)
    return use_cifar10(config, "tiny" in flags)
