"""The command line train.py and evaluate.py share: --config, --workdir, --outdir, overrides, and the checks
of the config and the directories before any work."""

import argparse
from typing import NamedTuple

import ml_collections

from oodgen.cli.directories import check_directory_path, check_writable
from oodgen.config import load_config_file, load_saved_config, parse_overrides
from oodgen.schema import validate_config
from oodgen.sharding import DISTRIBUTED_DEFAULTS, initialize_distributed, is_main_process


class Invocation(NamedTuple):
    config: ml_collections.ConfigDict
    workdir: str
    outdir: str | None  # where evaluate.py writes results (None: the workdir)



def parse_args(argv: list[str], description: str, config_required: bool, with_outdir: bool = False,
               for_: str | None = None) -> Invocation:
    """--config FILE[:variant] --workdir DIR [--outdir DIR] [--config.key=value ...].

    Without --config (where allowed) the config saved in the workdir by train.py is used, less its
    `distributed` settings (those of the training run's process 0): pass them again, per process. The whole
    config is then checked against the schema (oodgen.schema.validate_config) for `for_` ("train", or
    "evaluate"; by default "evaluate" when there is an --outdir), and the directories: --workdir must not be or
    lie under a file, and the directory written (train: --workdir; evaluate: --outdir, else --workdir) must be
    writable, all before any data is read or any file written. Then joins the multi-process run that
    `config.distributed` (or OODGEN_* environment variables) configures, before any other JAX use.
    """
    for_ = for_ or ("evaluate" if with_outdir else "train")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=config_required,
                        help="configs/<name>.py[:variant]" + ("" if config_required else
                                                              " (default: the one saved in --workdir)"))
    parser.add_argument("--workdir", required=True, help="directory for checkpoints and results")
    if with_outdir:
        parser.add_argument("--outdir", default=None, help="write results here instead of --workdir")
    args, rest = parser.parse_known_args(argv)
    outdir = getattr(args, "outdir", None)
    check_directory_path(args.workdir, "--workdir")
    if outdir is not None:
        check_directory_path(outdir, "--outdir")
    if args.config:
        config = load_config_file(args.config)
    else:
        config = load_saved_config(args.workdir)
        config.distributed = ml_collections.ConfigDict(DISTRIBUTED_DEFAULTS)
    config = parse_overrides(config, rest)
    validate_config(config, for_=for_)
    initialize_distributed(config.get("distributed"))
    if is_main_process():  # the only process that writes
        if for_ == "train":
            check_writable(args.workdir, "--workdir")
        elif outdir is not None:
            check_writable(outdir, "--outdir")
        else:
            check_writable(args.workdir, "--workdir", "pass --outdir DIR to write the results elsewhere "
                                                      "(the workdir is only read)")
    return Invocation(config, args.workdir, outdir)

