"""Score the in-distribution test set and every OOD set: python evaluate.py --workdir runs/vae.

Writes scores.npz, metrics.json and plots/*.png into --workdir (or --outdir DIR) and prints a
Markdown report.
"""

from oodgen.cli import main_wrapper, parse_args
from oodgen.evaluation import evaluate


@main_wrapper
def main(argv: list[str]) -> None:
    config, workdir, outdir = parse_args(argv, __doc__, config_required=False, with_outdir=True)
    _, report = evaluate(config, workdir, outdir=outdir)
    print(report)


if __name__ == "__main__":
    main()
