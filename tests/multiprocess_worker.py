"""One process of a (possibly multi-process) run, started by tests/test_multiprocess.py: what train.py and
then evaluate.py do, in one Python process, through the CLIs' own argument parsing (which joins the run).

Usage: python tests/multiprocess_worker.py WORKDIR OUTDIR [--config.key=value ...]

Trains configs/vae_fashion_mnist.py:tiny with the overrides into WORKDIR (shared by all processes), then
evaluates it from the config saved there into OUTDIR (one per process: only process 0's may be written).
Process 0 also leaves the final parameters in OUTDIR/params.npz.
"""

import sys
from pathlib import Path

import jax
import numpy as np

from oodgen import sharding
from oodgen.cli import parse_args
from oodgen.evaluation.harness import evaluate
from oodgen.training.loop import train


def main(workdir: str, outdir: str, overrides: list[str]) -> None:
    config, _, _ = parse_args(["--config", "configs/vae_fashion_mnist.py:tiny", "--workdir", workdir, *overrides],
                              "train", config_required=True)
    state = train(config, workdir)
    # evaluate.py without --config: the saved config, less its distributed settings, which come again
    distributed = [arg for arg in overrides if arg.startswith("--config.distributed.")]
    config, _, _ = parse_args(["--workdir", workdir, "--outdir", outdir, *distributed], "evaluate",
                              config_required=False, with_outdir=True)
    evaluate(config, workdir, outdir=outdir)
    if sharding.is_main_process():
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
        np.savez(Path(outdir) / "params.npz", process_count=jax.process_count(), device_count=jax.device_count(),
                 step=int(state.step), **{f"param/{k}": v for k, v in flat.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
