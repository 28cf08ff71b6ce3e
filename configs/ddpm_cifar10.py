"""A U-Net DDPM on CIFAR-10 for the reconstruction score of Graham et al. 2023, for users with prepared
TFDS copies of cifar10 and svhn_cropped (README, "Data without internet") and a GPU:

  python train.py    --config configs/ddpm_cifar10.py --workdir runs/ddpm_cifar10
  python evaluate.py --workdir runs/ddpm_cifar10

As the reference does for CIFAR-10: start points every 16th step of a 100-step deterministic schedule
(7 start steps, 448 network evaluations per image); ε-prediction, T = 1000, linear β schedule. The
network is this library's two-resolution U-Net at 128 filters, trained 300k steps of batch 128 at lr
2e-4 — smaller than the reference's U-Net, and with no EMA of the weights or LPIPS term.
Variant `:tiny` runs in seconds on random 32x32x3 images, for tests.
"""

import ml_collections

from configs import ddpm_fashion_mnist
from configs.exact_likelihood import parse_variant, use_cifar10
from configs.score_net_cifar10 import use_cifar10_unet

# The Fashion-MNIST file's flags but `paper`: this file already is the GPU-scale CIFAR-10 setting of the papers
# (the docstring says where it differs from them).
VARIANTS = tuple(v for v in ddpm_fashion_mnist.VARIANTS if v != "paper")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = ddpm_fashion_mnist.get_config(variant)
    config = use_cifar10(config, "tiny" in flags)
    if "tiny" not in flags:
        config = use_cifar10_unet(config, steps=300_000)
        config.eval.ddpm_reconstruction.start_every = 16
        config.eval.max_examples = 2000
    return config
