"""Train a generative model: python train.py --config configs/vae_fashion_mnist.py --workdir runs/vae.

Re-running the same command resumes from the latest checkpoint in --workdir. In a multi-process run
(config.distributed) every process runs this command with its own process id; process 0 writes the files.
"""

from oodgen.cli import main_wrapper, parse_args
from oodgen.training.loop import train


@main_wrapper
def main(argv: list[str]) -> None:
    config, workdir, _ = parse_args(argv, __doc__, config_required=True)
    train(config, workdir)


if __name__ == "__main__":
    main()
