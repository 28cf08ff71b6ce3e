"""A convolutional VAE on Fashion-MNIST (Bernoulli likelihood on dynamically binarised pixels).

  python train.py    --config configs/vae_fashion_mnist.py --workdir runs/vae_fashion_mnist
  python evaluate.py --workdir runs/vae_fashion_mnist

Variants, comma-separated: `tiny` (a seconds-long smoke configuration for tests) and `paper`, the likelihood
regret setting of Xiao et al. 2020 for a GPU (`:paper,tiny`: its model and likelihood at smoke sizes):

  python train.py    --config configs/vae_fashion_mnist.py:paper --workdir runs/vae_fashion_mnist_paper
  python evaluate.py --workdir runs/vae_fashion_mnist_paper

`:paper`, each setting with its source (reference repo: XavierXiao/Likelihood-Regret, train_pixel.py,
DCGAN_VAE_pixel.py, compute_LR.py):
- likelihood: a 256-way categorical per 8-bit pixel (the reference decoder's nc·256 logits and cross-entropy
  on x·255), inputs scaled to [0, 1] with no binarisation (reference: ToTensor);
- latent_dim 100 (reference nz), encoder/decoder channels (32, 64) (reference ngf = 32: 32, 64, 128 on images
  resized to 32x32; oodgen does not resize, 28x28 allows two stride-2 stages, and it has no BatchNorm);
- Adam lr 3e-4, batch 128, 200 epochs (~86k steps), no learning-rate warm-up (reference); the reference's
  Adam weight decay 3e-5 as an L2 penalty 1.5e-5·Σ‖W‖² on the kernels (the same gradient; biases excluded);
- evaluation (compute_LR.py / paper): NLL by importance weighting with 1000 samples (200 repeats × 5 batches),
  regret = NLL before − after 100 Adam steps (lr 2e-4, weight decay 5e-5) on a copy of the encoder alone,
  500 images per set.
Budget: ~86k steps of a small conv VAE, then 1000-sample bounds and 100 encoder steps per scored image: a GPU job.
"""

import ml_collections

from configs.exact_likelihood import parse_variant, steps_for_epochs

VARIANTS = ("tiny", "paper")

OOD_SETS = [
    "mnist",
    "letters",
    "noise",
    "constant",
    "fashion_mnist:test+hflip",
    "fashion_mnist:test+vflip",
    "fashion_mnist:test+invert",
]


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    flags = parse_variant(variant, VARIANTS)
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.train = "fashion_mnist:train"
    config.data.test = "fashion_mnist:test"
    config.data.image_shape = (28, 28, 1)
    config.data.num_validation = 5000   # held out from the end of the training split
    config.data.max_train_examples = -1  # -1: all

    config.model = ml_collections.ConfigDict()
    config.model.name = "vae"
    config.model.latent_dim = 16
    config.model.channels = (32, 64)
    config.model.likelihood = "bernoulli"
    config.model.num_mixtures = 5

    config.train = ml_collections.ConfigDict()
    config.train.steps = 2500
    config.train.batch_size = 128
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    config.train.grad_clip_norm = 100.0
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    # The checkpoint a re-run resumes from: "latest", "best", or a step such as "300". An older one than the
    # latest discards the later history: the later checkpoints (checkpoints/ and best/) and log lines go.
    config.train.resume_from = "latest"
    # No checkpoint is saved (training stops, naming the last good one) when the parameters or the held-out
    # loss are non-finite, or the held-out loss is above best + (divergence_factor - 1)·|best|; 0: no such check.
    config.train.divergence_factor = 3.0

    # Deep ensemble: M independent members (seeds seed..seed+M-1) trained together in one jitted step.
    # member_loop: "vmap" the members, or "unroll" them in the one jitted step (faster on XLA:CPU, whose
    # convolutions vmapped over kernels are slow grouped ones); "auto" unrolls on CPU, vmaps on GPU/TPU.
    config.ensemble = ml_collections.ConfigDict(dict(size=1, member_loop="auto"))   # size 1: a single model
    # SWAG (Maddox et al. 2019): moments of the iterates after `start_step` steps, every `collect_every`
    # steps, and the last `rank` deviations, kept in the checkpoints.
    config.swag = ml_collections.ConfigDict(dict(enabled=False, start_step=1500, collect_every=50, rank=20))

    # Multi-process (multi-host) runs: every process gets the same command with its own process_id (or the
    # OODGEN_COORDINATOR_ADDRESS / OODGEN_NUM_PROCESSES / OODGEN_PROCESS_ID environment variables, which win).
    # coordinator_address "" = one process (nothing to join); "HOST:PORT" of process 0; "auto" = let JAX
    # detect the cluster (Slurm, Open MPI, TPU). See oodgen.sharding.initialize_distributed.
    config.distributed = ml_collections.ConfigDict(dict(coordinator_address="", num_processes=1, process_id=0))

    config.eval = ml_collections.ConfigDict()
    config.eval.ood = list(OOD_SETS)
    config.eval.scorers = ["log_likelihood"]
    config.eval.num_samples = 16         # importance samples per example for the likelihood bound
    config.eval.batch_size = 500
    config.eval.max_examples = -1        # per dataset cap, -1: all
    config.eval.max_fit_examples = -1    # cap on the held-out in-distribution images scorers fit on, -1: all
    config.eval.checkpoint = "best"      # "best" (lowest validation bits/dim) or "latest"
    config.eval.seed = 1
    # Settings of scorers that are not in eval.scorers by default (add them there to run them).
    # density_options: each density's settings (oodgen.features.density), Dauncey et al.'s for gaussian_log and
    # chi_square of f (of_log=True: of log f); override e.g. --config.eval.grad_norms.density_options.knn.k=10.
    config.eval.grad_norms = ml_collections.ConfigDict(
        dict(densities=("gaussian_log", "chi_square", "gmm"), group_size=1, method="fast", chunk_size=8,
             kernel="timed",
             density_options=dict(gaussian_log=dict(of_log=True), chi_square=dict(of_log=False),
                                  gmm=dict(n_components=[1, 2, 4, 8], folds=5, log_features=False, seed=0,
                                           reg_covar=1e-6),
                                  knn=dict(k=5))))
    config.eval.typicality = ml_collections.ConfigDict(dict(test_batch_size=2, num_bootstrap=1000, alpha=0.01))
    config.eval.likelihood_regret = ml_collections.ConfigDict(dict(num_steps=100, learning_rate=2e-4,
                                                                   weight_decay=5e-5))
    # The `ensemble` scorer: over the members ("members") or SWAG draws per member ("swag").
    config.eval.ensemble = ml_collections.ConfigDict(dict(source="members", num_swag_samples=8, member_loop="auto"))
    # Feature composition (scorer "composed"): features of several scorers under one density, e.g.
    # features=("kl_per_level", "grad_norms"), density="gmm"; see oodgen.scorers.composed.FEATURES.
    # density_options: the settings of `density` (the densities' own defaults; chi_square's dofs are supplied).
    config.eval.composed = ml_collections.ConfigDict(dict(
        features=(), density="gmm", standardize=False, name="",
        density_options=dict(gaussian_log=dict(of_log=True), chi_square=dict(of_log=False),
                             gmm=dict(n_components=[1, 2, 4, 8], folds=5, log_features=False, seed=0, reg_covar=1e-6),
                             knn=dict(k=5))))

    if "paper" in flags:
        use_paper(config)
    if "tiny" in flags:
        config.data.max_train_examples = 512
        config.data.num_validation = 64
        if "paper" not in flags:   # :paper,tiny keeps the paper's model and likelihood
            config.model.latent_dim = 4
            config.model.channels = (8, 8)
        config.train.steps = 4
        config.train.batch_size = 16
        config.train.warmup_steps = 1
        config.train.log_every = 2
        config.train.checkpoint_every = 2
        config.swag.update(start_step=2, collect_every=1, rank=2)
        config.eval.ood = ["noise", "fashion_mnist:test+vflip"]
        config.eval.num_samples = 2
        config.eval.batch_size = 32
        config.eval.max_examples = 48
        if "paper" in flags:   # its scorers include likelihood_regret: 2 encoder steps per image
            config.eval.likelihood_regret.num_steps = 2
    return config


def use_paper(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Xiao et al. 2020's VAE, training and likelihood-regret protocol (the module docstring gives the sources)."""
    config.model.update(latent_dim=100, channels=(32, 64), likelihood="categorical")
    config.train.update(batch_size=128, learning_rate=3e-4, warmup_steps=0, log_every=500, checkpoint_every=5000,
                        l2_weight=1.5e-5)   # = torch Adam(weight_decay=3e-5): gradient 2·1.5e-5·W
    config.train.steps = steps_for_epochs(200, config.train.batch_size, config.data.num_validation)
    config.eval.scorers = ["log_likelihood", "likelihood_regret"]
    config.eval.num_samples = 1000
    config.eval.likelihood_regret.update(num_steps=100, learning_rate=2e-4, weight_decay=5e-5)
    config.eval.max_examples = 500
    config.eval.batch_size = 8   # 1000 samples x 28x28x256 logits: ~0.8 GB of f32 logits per image
    return config
