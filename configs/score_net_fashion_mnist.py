"""A noise-conditional score network on Fashion-MNIST, for multiscale score matching (MSMA, Mahmood et al.
2021): the score norms at L = 10 noise levels under a Gaussian mixture and a k-NN distance.

  python train.py    --config configs/score_net_fashion_mnist.py --workdir runs/score_net_fashion_mnist
  python evaluate.py --workdir runs/score_net_fashion_mnist

Noise levels σ are geometric from σ_max = 1 to σ_min = 0.01 on pixels scaled to [0, 1]; the loss is
denoising score matching, σ²-weighted. The "bits/dim" training reports are of the denoising loss, a
surrogate, not a likelihood.

The network normalises inside every residual block with NCSN's conditional instance normalisation++, as the
paper's RefineNet does (ahsanMah/msma `model/refinenet.py`): without it, a stack of 3x3 convolutions sees no
image-level statistics, and its small-σ norms at clean inputs come to measure fine texture, which MNIST lacks:
the MNIST AUROC then fell from 0.914 to 0.362 (GMM) as the network trained (BENCHMARKS `msma_steps_no_norm`).

Variants, comma-separated: `paper` (the paper's budget for a GPU: 128 filters, batch 128, Adam 1e-3, 200k
steps, the ahsanMah/msma README's defaults; densities fitted on 5,000 held-out images), `tiny` (a seconds-long
smoke configuration for tests), e.g. `:paper,tiny`.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant

VARIANTS = ("paper", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = base_config(flags, steps=3000, grad_clip_norm=100.0)
    config.model.name = "score_net"
    config.model.num_filters = 16       # 32 runs at ~0.4 s/step and ~40 images/s of features on 2 CPU cores
    config.model.num_sigmas = 10
    config.model.sigma_max = 1.0
    config.model.sigma_min = 0.01
    config.model.norm = "instance_plus"  # NCSN's conditional instance norm++ in every block ("none": without)
    config.eval.scorers = ["msma"]
    # The paper's auxiliary models: a GMM on standardised features, 2-20 components by 10-fold CV; 5-NN distance.
    # Override e.g. --config.eval.msma.density_options.gmm.folds=5 or ...gmm.n_components=[2,4,8].
    config.eval.msma = ml_collections.ConfigDict(dict(
        densities=("gmm", "knn"),
        density_options=dict(gmm=dict(n_components=list(range(2, 21)), folds=10, log_features=False, seed=0,
                                      reg_covar=1e-6),
                             knn=dict(k=5))))
    if "paper" in flags:   # ahsanMah/msma README: --filters 128 --num_L 10 --steps 200000, lr 1e-3, batch 128
        config.model.num_filters = 128
        config.eval.max_examples = -1
        if "tiny" not in flags:
            config.train.update(steps=200_000, batch_size=128, learning_rate=1e-3, checkpoint_every=10_000,
                                log_every=1000)
    if "tiny" in flags and "paper" not in flags:   # :paper,tiny keeps the paper's network
        config.model.num_filters = 4
        config.model.num_sigmas = 3
    return config
