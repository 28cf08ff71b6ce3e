"""What the exact-likelihood model configs (PixelCNN++, local PixelCNN, Glow) share: variant flags, the
training budget, the background model's settings and the evaluation protocol."""

import math

import ml_collections

FASHION_MNIST_TRAIN_IMAGES = 60_000   # the training split; config.data.num_validation of them are held out


def parse_variant(variant: str, allowed: tuple[str, ...]) -> set[str]:
    """A comma-separated variant string -> its set of flags; ValueError on an unknown one."""
    flags = {v for v in variant.split(",") if v}
    if flags - set(allowed):
        raise ValueError(f"unknown variant(s) {sorted(flags - set(allowed))}; use a comma-separated subset "
                         f"of {allowed}")
    return flags


def steps_for_epochs(epochs: int, batch_size: int, num_validation: int,
                     train_images: int = FASHION_MNIST_TRAIN_IMAGES) -> int:
    """Optimiser steps of `epochs` passes over the training images left after the held-out ones (a paper's
    budget in epochs -> config.train.steps)."""
    return epochs * math.ceil((train_images - num_validation) / batch_size)


def base_config(flags: set[str], steps: int, grad_clip_norm: float) -> ml_collections.ConfigDict:
    """Fashion-MNIST data and OOD sets of the VAE config; Adam 1e-3 after 200 warm-up steps, batch 64;
    μ = 0.2 and L2 1e-4 for the `background` flag; exact likelihoods scored on 2,000 images per set.
    The model (`config.model`) and the scorers are the caller's."""
    from configs import vae_fashion_mnist   # here, not at the top: vae_fashion_mnist imports parse_variant

    tiny = "tiny" in flags
    config = vae_fashion_mnist.get_config("tiny" if tiny else "")
    config.model = ml_collections.ConfigDict()
    config.train.steps = steps
    config.train.batch_size = 64
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 200
    config.train.grad_clip_norm = grad_clip_norm
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    background = "background" in flags
    config.train.perturbation_rate = 0.2 if background else 0.0   # μ: the background model's input perturbation
    config.train.l2_weight = 1e-4 if background else 0.0          # λ of λ·Σ‖W‖² added to the mean NLL (nats)

    config.eval.num_samples = 1            # exact likelihoods (Glow: dequantisation draws per image)
    config.eval.batch_size = 250
    config.eval.max_examples = 2000
    config.eval.input_complexity = ml_collections.ConfigDict(dict(codecs=("png", "jpeg2000")))
    if tiny:
        config.train.steps = 4
        config.train.batch_size = 16
        config.train.warmup_steps = 1
        config.train.log_every = 2
        config.train.checkpoint_every = 2
        config.eval.batch_size = 32
        config.eval.max_examples = 48
    return config


def use_cifar10(config: ml_collections.ConfigDict, tiny: bool) -> ml_collections.ConfigDict:
    """Switches a config to CIFAR-10 in, SVHN and the synthetic sets out (prepared TFDS copies needed), at
    GPU-run logging intervals; `tiny`: random 32x32x3 images (`noise`) for a seconds-long smoke test."""
    config.data.train = "cifar10:train"
    config.data.test = "cifar10:test"
    config.data.image_shape = (32, 32, 3)
    config.eval.ood = ["svhn", "noise", "constant", "cifar10:test+hflip", "cifar10:test+vflip",
                       "cifar10:test+invert"]
    config.train.checkpoint_every = 5000
    config.train.log_every = 500
    config.eval.batch_size = 100
    config.eval.max_examples = -1
    if tiny:
        config.data.train = config.data.test = "noise"
        config.data.num_validation = 32
        config.data.max_train_examples = 256
        config.eval.ood = ["constant", "noise+hflip"]
        config.train.steps = 2
        config.train.batch_size = 8
        config.train.warmup_steps = 1
        config.train.log_every = 1
        config.train.checkpoint_every = 1
        config.eval.batch_size = 16
        config.eval.max_examples = 24
    return config
