"""Score the in-distribution test set and every OOD set: python evaluate.py --workdir runs/vae.

Writes scores.npz, metrics.json and plots/*.png into --workdir (or --outdir DIR) and prints a
Markdown report. In a multi-process run (config.distributed) every process scores its share of each
batch and process 0 writes the files and prints the report.
"""

from oodgen.cli import main_wrapper, parse_args
from oodgen.evaluation.harness import evaluate
from oodgen.sharding import is_main_process


@main_wrapper
def main(argv: list[str]) -> None:
    config, workdir, outdir = parse_args(argv, __doc__, config_required=False, with_outdir=True)
    _, report = evaluate(config, workdir, outdir=outdir)
    if is_main_process():
        print(report)


if __name__ == "__main__":
    main()
