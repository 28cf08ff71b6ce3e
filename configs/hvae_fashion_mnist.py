"""A 3-level ladder HVAE on dynamically binarised Fashion-MNIST, for the LLR^{>k} score (Havtorn et al. 2021).

  python train.py    --config configs/hvae_fashion_mnist.py --workdir runs/hvae_fashion_mnist
  python evaluate.py --workdir runs/hvae_fashion_mnist

Levels (bottom to top): z1 conv 14x14x8, z2 dense 16, z3 dense 8, as in the reference. The reference
trains 1000 epochs on a GPU with 64 channels; the default here is sized for ~45 CPU minutes
(width 32, ~20 epochs). Variant `:tiny` is a seconds-long smoke configuration for tests.
"""

import ml_collections

from configs import vae_fashion_mnist


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = vae_fashion_mnist.get_config(variant)  # same data, OOD sets and evaluation protocol

    config.model = ml_collections.ConfigDict()
    config.model.name = "hvae"
    config.model.width = 32
    config.model.dense_width = 128
    config.model.latent_channels = (8,)
    config.model.latent_units = (16, 8)
    config.model.blocks_per_level = 1
    config.model.likelihood = "bernoulli"
    config.model.num_mixtures = 10
    config.model.prior_levels = "mode"   # L^{>k}: lowest k levels at the prior's mode (reference) or "sample"

    config.train.steps = 16000
    config.train.batch_size = 64
    config.train.learning_rate = 3e-4    # Adam, as in the reference
    config.train.grad_clip_norm = 200.0
    config.train.kl_warmup_steps = 3200  # β: 0 -> 1 linearly (reference: 200 of 1000 epochs)
    config.train.free_nats = 2.0         # per level, held, then annealed to 0
    config.train.free_nats_steps = 3200
    config.train.free_nats_anneal_steps = 3200
    config.train.log_every = 100
    config.train.checkpoint_every = 1000

    config.eval.scorers = ["hvae_llr", "kl_per_level"]  # kl_per_level: the mean KL of every level, tabled and plotted
    config.eval.num_samples = 8          # importance samples for L and every L^{>k}
    config.eval.batch_size = 100
    config.eval.max_examples = 2000      # per set: every k at S=8 costs ~25 top-down passes per image on CPU

    if variant == "tiny":
        config.data.max_train_examples = 256
        config.data.num_validation = 32
        config.model.width = 8
        config.model.dense_width = 16
        config.model.latent_channels = (2,)
        config.model.latent_units = (6, 4)
        config.train.steps = 4
        config.train.batch_size = 16
        config.train.kl_warmup_steps = 2
        config.train.free_nats_steps = 1
        config.train.free_nats_anneal_steps = 2
        config.train.log_every = 2
        config.train.checkpoint_every = 2
        config.eval.num_samples = 2
        config.eval.batch_size = 16
        config.eval.max_examples = 24
    return config
