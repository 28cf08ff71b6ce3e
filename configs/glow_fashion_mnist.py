"""Glow on 8-bit Fashion-MNIST (uniform dequantisation), and its background model.

  python train.py    --config configs/glow_fashion_mnist.py            --workdir runs/glow_fashion_mnist
  python train.py    --config configs/glow_fashion_mnist.py:background --workdir runs/glow_fashion_mnist_background
  python evaluate.py --workdir runs/glow_fashion_mnist

(`bash scripts/run_glow.sh` runs all three.) Two levels of squeeze (28 -> 14 -> 7, no zero-padding to 32:
padding MNIST-like images to 32x32 makes the reported bits/dim wrong), affine coupling, LU-decomposed
invertible 1x1 convolutions, a learned prior at the top. The paper's CIFAR-10 Glow has 3 levels of depth
32 with 512 hidden channels; the default here is sized for the CPU budget stated in BENCHMARKS.md.
Variants, comma-separated: `background` (inputs perturbed at rate μ = 0.2, with an L2 weight), `tiny`.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant

VARIANTS = ("background", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = base_config(flags, steps=3000, grad_clip_norm=50.0)
    config.model.name = "glow"
    config.model.num_levels = 2
    config.model.depth = 8
    config.model.hidden_channels = 48
    config.model.lu_decomposition = True
    config.model.coupling = "affine"

    config.eval.scorers = ["log_likelihood", "input_complexity"]
    if "background" not in flags:
        config.eval.scorers.append("background_ratio")
    config.eval.background_ratio = ml_collections.ConfigDict(dict(workdir="runs/glow_fashion_mnist_background"))

    if "tiny" in flags:
        config.model.depth = 2
        config.model.hidden_channels = 8
    return config
