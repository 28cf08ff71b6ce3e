"""What train.py and evaluate.py share: argument parsing and turning errors into one line + exit 2."""

import argparse
import functools
import sys
from collections.abc import Callable
from typing import NamedTuple

import ml_collections

from oodgen.config import load_config_file, load_saved_config, parse_overrides
from oodgen.errors import OodgenError
from oodgen.sharding import DISTRIBUTED_DEFAULTS, initialize_distributed

EXIT_BAD_INPUT = 2


class Invocation(NamedTuple):
    config: ml_collections.ConfigDict
    workdir: str
    outdir: str | None  # where evaluate.py writes results (None: the workdir)


def parse_args(argv: list[str], description: str, config_required: bool, with_outdir: bool = False) -> Invocation:
    """--config FILE[:variant] --workdir DIR [--outdir DIR] [--config.key=value ...].

    Without --config (where allowed) the config saved in the workdir by train.py is used, less its
    `distributed` settings (those of the training run's process 0): pass them again, per process.
    Then joins the multi-process run that `config.distributed` (or OODGEN_* environment variables)
    configures, before any other JAX use; with nothing configured nothing happens.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=config_required,
                        help="configs/<name>.py[:variant]" + ("" if config_required else
                                                              " (default: the one saved in --workdir)"))
    parser.add_argument("--workdir", required=True, help="directory for checkpoints and results")
    if with_outdir:
        parser.add_argument("--outdir", default=None, help="write results here instead of --workdir")
    args, rest = parser.parse_known_args(argv)
    if args.config:
        config = load_config_file(args.config)
    else:
        config = load_saved_config(args.workdir)
        config.distributed = ml_collections.ConfigDict(DISTRIBUTED_DEFAULTS)
    config = parse_overrides(config, rest)
    initialize_distributed(config.get("distributed"))
    return Invocation(config, args.workdir, getattr(args, "outdir", None))


def main_wrapper(main: Callable[[list[str]], None]) -> Callable[[], None]:
    """Runs `main(sys.argv[1:])`; an OodgenError becomes `error: <one line>` on stderr and exit code 2."""
    @functools.wraps(main)
    def run():
        try:
            main(sys.argv[1:])
        except OodgenError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    return run
