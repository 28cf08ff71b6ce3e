"""A small U-Net DDPM (ε-prediction, T = 1000) on Fashion-MNIST, for the reconstruction score of Graham
et al. 2023: noise to every 4th start time of a 100-step deterministic (DDIM) schedule, denoise back,
z-score each start time's MSE against held-out in-distribution images, average.

  python train.py    --config configs/ddpm_fashion_mnist.py --workdir runs/ddpm_fashion_mnist
  python evaluate.py --workdir runs/ddpm_fashion_mnist

The reconstruction score costs ~1,300 network evaluations per image: a GPU job (on 2 CPU cores the
default model scores well under 1 image/s). The "bits/dim" training reports are of the ε-prediction
loss, a surrogate, not a likelihood. Variant `:tiny` is a seconds-long smoke configuration for tests.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant

VARIANTS = ("tiny",)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = base_config(flags, steps=3000, grad_clip_norm=100.0)
    config.model.name = "ddpm"
    config.model.num_filters = 32
    config.model.num_timesteps = 1000
    config.model.beta_schedule = "linear"
    config.eval.scorers = ["ddpm_reconstruction"]
    config.eval.ddpm_reconstruction = ml_collections.ConfigDict(dict(num_sampling_steps=100, start_every=4))
    config.eval.batch_size = 100
    config.eval.max_examples = 500
    if "tiny" in flags:
        config.model.num_filters = 4
        config.model.num_timesteps = 20
        config.eval.ddpm_reconstruction = ml_collections.ConfigDict(dict(num_sampling_steps=5, start_every=2))
        config.eval.batch_size = 16
        config.eval.max_examples = 16
    return config
