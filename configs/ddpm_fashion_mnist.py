"""A small U-Net DDPM (ε-prediction, T = 1000) on Fashion-MNIST, for the reconstruction score of Graham
et al. 2023: noise to every 4th start time of a 100-step deterministic (DDIM) schedule, denoise back,
z-score each start time's MSE against held-out in-distribution images, average.

  python train.py    --config configs/ddpm_fashion_mnist.py --workdir runs/ddpm_fashion_mnist
  python evaluate.py --workdir runs/ddpm_fashion_mnist

The reconstruction score costs ~1,300 network evaluations per image: a GPU job (on 2 CPU cores the
default model scores well under 1 image/s). The "bits/dim" training reports are of the ε-prediction
loss, a surrogate, not a likelihood. Variants, comma-separated: `tiny` (a seconds-long smoke configuration for
tests) and `paper`, Graham et al.'s setting for a GPU (`:paper,tiny`: its model at smoke sizes):

  python train.py    --config configs/ddpm_fashion_mnist.py:paper --workdir runs/ddpm_fashion_mnist_paper
  python evaluate.py --workdir runs/ddpm_fashion_mnist_paper

`:paper`, each setting with its source (paper; reference repo marksgraham/ddpm-ood: README's Fashion-MNIST
commands, train_ddpm.py, src/trainers/base.py):
- ε-prediction, T = 1000, β linear 1e-4 -> 0.02 (train_ddpm.py's default; the README's Fashion-MNIST command
  uses a scaled-linear schedule 0.0015 -> 0.0195, which oodgen's DDPM does not offer);
- U-Net: this library's two-resolution U-Net at 128 filters (128, then 256 at half resolution). The
  reference's "small" MONAI U-Net has three levels (128, 256, 256), one residual block each and attention at
  the lowest resolution; oodgen's U-Net has no third level or attention;
- Adam lr 2.5e-5, batch 512, 300 epochs (~34k steps), no warm-up (reference); the reference's training
  augmentation is not done here;
- reconstruction: a 100-step deterministic schedule, start points every 4th step (25 reconstructions per
  image), clamped to [0, 1]; per start point the MSE, z-scored against the held-out 5% of the training split
  (3000 of 60000 images, all of them) and averaged (paper). The reference's sampler is PNDM; oodgen's is DDIM
  (η = 0) on the same 100 timesteps. The optional LPIPS term is not computed;
- evaluation: every image of each set (flipped Fashion-MNIST among the OOD sets, as in the paper).
Budget: ~34k steps of batch 512, then 1,300 network evaluations per scored image: a GPU job.
"""

import ml_collections

from configs.exact_likelihood import base_config, parse_variant, steps_for_epochs

VARIANTS = ("tiny", "paper")


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
    if "paper" in flags:
        config.model.update(num_filters=128, num_timesteps=1000, beta_schedule="linear")
        config.eval.ddpm_reconstruction.update(num_sampling_steps=100, start_every=4)
        config.train.update(learning_rate=2.5e-5, warmup_steps=0)
        if "tiny" not in flags:
            config.data.num_validation = 3000   # 5% of the 60000 training images
            config.train.update(batch_size=512, log_every=100, checkpoint_every=1000)
            config.train.steps = steps_for_epochs(300, config.train.batch_size, config.data.num_validation)
            config.eval.max_examples = -1
    if "tiny" in flags:
        if "paper" not in flags:   # :paper,tiny keeps the paper's model
            config.model.num_filters = 4
            config.model.num_timesteps = 20
        config.eval.ddpm_reconstruction = ml_collections.ConfigDict(dict(num_sampling_steps=5, start_every=2))
        config.eval.batch_size = 16
        config.eval.max_examples = 16
    return config
