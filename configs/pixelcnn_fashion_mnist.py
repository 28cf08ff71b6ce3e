"""PixelCNN++ on 8-bit Fashion-MNIST, with its background model and a local PixelCNN as references.

  python train.py    --config configs/pixelcnn_fashion_mnist.py            --workdir runs/pixelcnn_fashion_mnist
  python train.py    --config configs/pixelcnn_fashion_mnist.py:background --workdir runs/pixelcnn_fashion_mnist_background
  python train.py    --config configs/pixelcnn_fashion_mnist.py:local      --workdir runs/pixelcnn_fashion_mnist_local
  python evaluate.py --workdir runs/pixelcnn_fashion_mnist

(`bash scripts/run_pixelcnn.sh` runs all four.) The full model's evaluation scores the likelihood, input
complexity, the background ratio (Ren et al. 2019) and the full-vs-local ratio (Zhang et al.); the two
reference workdirs are `config.eval.background_ratio.workdir` and `config.eval.local_ratio.workdir`.

Variants, comma-separated: `background` (inputs perturbed at rate μ = 0.2 with an L2 weight; the
reference's grid is μ ∈ {0.1, 0.2, 0.3}), `local` (NeLLoC-style local model: 7x7 type-A masked
conv, horizon 3, then 1x1 blocks), `tiny` (seconds-long smoke configuration for tests), e.g. `:local,tiny`.
The reference PixelCNN++ for Fashion-MNIST has 5 resnets of 32 filters and trains for days on a GPU;
the default here is sized for the CPU budget stated in BENCHMARKS.md.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant

VARIANTS = ("background", "local", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = base_config(flags, steps=2000, grad_clip_norm=200.0)
    if "local" in flags:
        config.model.name = "local_pixelcnn"
        config.model.horizon = 3
        config.model.num_filters = 32      # NeLLoC: 256 filters, 10 components (GPU scale)
        config.model.num_blocks = 2
        config.model.num_mixtures = 5
        config.model.uniform_weight = 1e-4
    else:
        config.model.name = "pixelcnn"
        config.model.num_filters = 8       # reference: 32 filters, 5 resnets (GPU scale); ~0.3 s/step here
        config.model.num_resnets = 1
        config.model.num_scales = 3
        config.model.num_mixtures = 5
        config.model.dropout_rate = 0.5

    if flags & {"background", "local"}:
        config.eval.scorers = ["log_likelihood", "input_complexity"]
    else:
        config.eval.scorers = ["log_likelihood", "input_complexity", "background_ratio", "local_ratio"]
    config.eval.background_ratio = ml_collections.ConfigDict(
        dict(workdir="runs/pixelcnn_fashion_mnist_background"))
    config.eval.local_ratio = ml_collections.ConfigDict(dict(workdir="runs/pixelcnn_fashion_mnist_local"))

    if "tiny" in flags:
        config.model.num_filters = 4
        config.model.num_mixtures = 2
        if "local" in flags:
            config.model.horizon = 1
            config.model.num_blocks = 1
        else:
            config.model.num_scales = 2
    return config
