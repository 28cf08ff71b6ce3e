"""Glow on 8-bit Fashion-MNIST (uniform dequantisation), and its background model.

  python train.py    --config configs/glow_fashion_mnist.py            --workdir runs/glow_fashion_mnist
  python train.py    --config configs/glow_fashion_mnist.py:background --workdir runs/glow_fashion_mnist_background
  python evaluate.py --workdir runs/glow_fashion_mnist

(`bash scripts/run_glow.sh` runs all three.) Two levels of squeeze (28 -> 14 -> 7, no zero-padding to 32:
padding MNIST-like images to 32x32 makes the reported bits/dim wrong), affine coupling, LU-decomposed
invertible 1x1 convolutions, a learned prior at the top. The paper's CIFAR-10 Glow has 3 levels of depth
32 with 512 hidden channels; the default here is sized for the CPU budget stated in BENCHMARKS.md.
Variants, comma-separated: `background` (inputs perturbed at rate μ = 0.2, with an L2 weight), `tiny`, and
`paper`: the WAIC ensemble of Choi et al. 2018 for a GPU (`:paper,background` a single background model of
the same Glow, `:paper,tiny` the same Glow at smoke sizes, with 2 members):

  python train.py    --config configs/glow_fashion_mnist.py:paper --workdir runs/glow_fashion_mnist_paper
  python evaluate.py --workdir runs/glow_fashion_mnist_paper

`:paper`, each setting with its source:
- an ensemble of 5 independently initialised Glows (seeds seed..seed+4), scored by WAIC and the other
  ensemble statistics (`ensemble` scorer; Choi et al.: ensembles of 5 models); single-model scorers use member 0;
- the Glow of Kingma & Dhariwal (the family Choi et al. use; their CIFAR-10 model is 3 levels × depth 32,
  width 512, affine coupling, invertible 1x1 convolutions, a learned top prior, 8-bit input: openai/glow
  README): here depth 32, 512 hidden channels, affine coupling, LU-decomposed 1x1 convolutions, a learned top
  prior, but 2 levels (28 -> 14 -> 7: a third would need zero-padding to 32x32, which makes the bits/dim
  wrong). The papers' Fashion-MNIST hyper-parameters beyond the family are not recorded in METHODS.md;
- Adam lr 1e-3, batch 64, learning-rate warm-up over 10 epochs (openai/glow train.py defaults; its default
  optimiser is Adamax, which oodgen does not offer); 200k steps (~230 epochs), the budget of
  configs/glow_cifar10.py (the papers give none for Fashion-MNIST);
- evaluation: every image of each set.
Budget: 200k steps of 5 members of batch 64 trained together: a GPU job of a day or more.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant, steps_for_epochs

VARIANTS = ("background", "tiny", "paper")


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

    if "paper" in flags:
        use_paper(config, flags)
    if "tiny" in flags and "paper" not in flags:   # :paper,tiny keeps the paper's Glow
        config.model.depth = 2
        config.model.hidden_channels = 8
    return config


def use_paper(config: ml_collections.ConfigDict, flags: set[str]) -> ml_collections.ConfigDict:
    """Choi et al.'s ensemble of Kingma & Dhariwal's Glow (the module docstring gives the sources): 5 members
    (2 with `tiny`; 1 for a `background` model), the budget and evaluation sizes unless `tiny`."""
    config.model.update(num_levels=2, depth=32, hidden_channels=512, coupling="affine", lu_decomposition=True)
    config.eval.background_ratio.workdir = "runs/glow_fashion_mnist_paper_background"
    if "background" not in flags:
        config.ensemble.size = 2 if "tiny" in flags else 5
        config.eval.scorers = ["ensemble", "log_likelihood", "input_complexity", "background_ratio"]
    config.train.learning_rate = 1e-3
    if "tiny" not in flags:
        config.train.update(steps=200_000, batch_size=64, log_every=500, checkpoint_every=5000)
        config.train.warmup_steps = steps_for_epochs(10, config.train.batch_size, config.data.num_validation)
        config.eval.max_examples = -1
    return config
