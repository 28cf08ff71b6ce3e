"""A noise-conditional score network on Fashion-MNIST, for multiscale score matching (MSMA, Mahmood et al.
2021): the score norms at L = 10 noise levels under a Gaussian mixture and a k-NN distance.

  python train.py    --config configs/score_net_fashion_mnist.py --workdir runs/score_net_fashion_mnist
  python evaluate.py --workdir runs/score_net_fashion_mnist

Noise levels σ are geometric from σ_max = 1 to σ_min = 0.01 on pixels scaled to [0, 1]; the loss is
denoising score matching, σ²-weighted. The "bits/dim" training reports are of the denoising loss, a
surrogate, not a likelihood. Variant `:tiny` is a seconds-long smoke configuration for tests.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant

VARIANTS = ("tiny",)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = base_config(flags, steps=3000, grad_clip_norm=100.0)
    config.model.name = "score_net"
    config.model.num_filters = 16       # 32 runs at ~0.4 s/step and ~40 images/s of features on 2 CPU cores
    config.model.num_sigmas = 10
    config.model.sigma_max = 1.0
    config.model.sigma_min = 0.01
    config.eval.scorers = ["msma"]
    # The paper's auxiliary models: a GMM on standardised features, 2-20 components by 10-fold CV; 5-NN distance.
    # Override e.g. --config.eval.msma.density_options.gmm.folds=5 or ...gmm.n_components=[2,4,8].
    config.eval.msma = ml_collections.ConfigDict(dict(
        densities=("gmm", "knn"),
        density_options=dict(gmm=dict(n_components=list(range(2, 21)), folds=10, log_features=False, seed=0,
                                      reg_covar=1e-6),
                             knn=dict(k=5))))
    if "tiny" in flags:
        config.model.num_filters = 4
        config.model.num_sigmas = 3
    return config
