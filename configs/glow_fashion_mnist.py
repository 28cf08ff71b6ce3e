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

from configs import vae_fashion_mnist

VARIANTS = ("background", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = {v for v in variant.split(",") if v}
    if flags - set(VARIANTS):
        raise ValueError(f"unknown variant(s) {sorted(flags - set(VARIANTS))}; use a comma-separated subset "
                         f"of {VARIANTS}")
    config = vae_fashion_mnist.get_config("tiny" if "tiny" in flags else "")

    config.model = ml_collections.ConfigDict()
    config.model.name = "glow"
    config.model.num_levels = 2
    config.model.depth = 8
    config.model.hidden_channels = 48
    config.model.lu_decomposition = True
    config.model.coupling = "affine"

    config.train.steps = 3000
    config.train.batch_size = 64
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 200
    config.train.grad_clip_norm = 50.0
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    config.train.perturbation_rate = 0.0
    config.train.l2_weight = 0.0
    if "background" in flags:
        config.train.perturbation_rate = 0.2
        config.train.l2_weight = 1e-4

    config.eval.num_samples = 1            # dequantisation draws per image (S > 1: a tighter bound)
    config.eval.batch_size = 250
    config.eval.max_examples = 2000
    config.eval.scorers = ["log_likelihood", "input_complexity"]
    if "background" not in flags:
        config.eval.scorers.append("background_ratio")
    config.eval.input_complexity = ml_collections.ConfigDict(dict(codecs=("png", "jpeg2000")))
    config.eval.background_ratio = ml_collections.ConfigDict(dict(workdir="runs/glow_fashion_mnist_background"))

    if "tiny" in flags:
        config.model.depth = 2
        config.model.hidden_channels = 8
        config.train.steps = 4
        config.train.batch_size = 16
        config.train.warmup_steps = 1
        config.train.log_every = 2
        config.train.checkpoint_every = 2
        config.eval.batch_size = 32
        config.eval.max_examples = 48
    return config
