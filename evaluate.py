"""Score the in-distribution test set and every OOD set: python evaluate.py --workdir runs/vae.

Writes scores.npz, metrics.json and plots/*.png into --workdir and prints a Markdown table.
"""

from oodgen.cli import main_wrapper, parse_args
from oodgen.evaluation import evaluate


@main_wrapper
def main(argv: list[str]) -> None:
    config, workdir = parse_args(argv, __doc__, config_required=False)
    _, table = evaluate(config, workdir)
    print(table)


if __name__ == "__main__":
    main()
