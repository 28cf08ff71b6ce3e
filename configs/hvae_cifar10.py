"""A ladder HVAE on CIFAR-10 with a discretised logistic mixture (Havtorn et al. 2021's CIFAR-10 setting).

Needs prepared TFDS copies of cifar10 and svhn_cropped (see README, "Data without internet") and a GPU:
  python train.py --config configs/hvae_cifar10.py --workdir runs/hvae_cifar10
  python evaluate.py --workdir runs/hvae_cifar10
Levels (bottom to top): conv 16x16x128, conv 8x8x64, dense 32; 256 channels. The reference trains with
Adam 3e-4, batch 128, and reports AUROC ≈ 0.81 for LLR^{>2} on CIFAR-10 -> SVHN (3 levels: k = 2).
Variant `:tiny` runs in seconds on random 32x32x3 images (`noise`), for tests.
"""

import ml_collections

from configs import hvae_fashion_mnist


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = hvae_fashion_mnist.get_config()
    config.data.train = "cifar10:train"
    config.data.test = "cifar10:test"
    config.data.image_shape = (32, 32, 3)

    config.model.width = 256
    config.model.dense_width = 512
    config.model.latent_channels = (128, 64)
    config.model.latent_units = (32,)
    config.model.blocks_per_level = 2
    config.model.likelihood = "discretized_logistic_mixture"
    config.model.num_mixtures = 10

    config.train.steps = 400_000
    config.train.batch_size = 128
    config.train.kl_warmup_steps = 80_000
    config.train.free_nats_steps = 80_000
    config.train.free_nats_anneal_steps = 80_000
    config.train.checkpoint_every = 5000
    config.train.log_every = 500

    config.eval.ood = ["svhn", "noise", "constant", "cifar10:test+hflip", "cifar10:test+vflip",
                       "cifar10:test+invert"]
    config.eval.num_samples = 8
    config.eval.batch_size = 64

    if variant == "tiny":
        config.data.train = "noise"
        config.data.test = "noise"
        config.data.num_validation = 32
        config.data.max_train_examples = 256
        config.model.width = 8
        config.model.dense_width = 16
        config.model.latent_channels = (4, 2)
        config.model.latent_units = (4,)
        config.model.blocks_per_level = 1
        config.model.num_mixtures = 2
        config.train.steps = 2
        config.train.batch_size = 8
        config.train.warmup_steps = 1
        config.train.kl_warmup_steps = 2
        config.train.free_nats_steps = 1
        config.train.free_nats_anneal_steps = 1
        config.train.log_every = 1
        config.train.checkpoint_every = 1
        config.eval.ood = ["constant", "noise+hflip"]
        config.eval.num_samples = 2
        config.eval.batch_size = 8
        config.eval.max_examples = 16
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; use '' or 'tiny'")
    return config
