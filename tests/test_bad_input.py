"""Bad input gives one line and exit 2, and nothing is written first (issue 15, section 3).

The config schema (oodgen.schema) is checked in-process; the CLIs are run in-process through their own
`main` (train.py, evaluate.py) where that is enough, and as subprocesses where what a user sees on stderr
matters. Read-only directories and full disks are real ones: a read-only bind mount and a small tmpfs in a
private mount namespace (`unshare -m` as root, where chmod does not stop writes; `unshare -rm` otherwise);
those tests are skipped, with the reason, where no mount namespace can be made.
"""

import errno
import functools
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from oodgen.config import load_config_file, load_saved_config, parse_overrides, save_config
from oodgen.errors import OodgenError

ROOT = Path(__file__).resolve().parent.parent
TINY = "configs/vae_fashion_mnist.py:tiny"
PIXELCNN_TINY = "configs/pixelcnn_fashion_mnist.py:tiny"


# --- helpers -----------------------------------------------------------------------------------------------

def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _cli(name: str):
    """The `main` of train.py or evaluate.py (wrapped by oodgen.cli.main_wrapper), imported in-process."""
    spec = importlib.util.spec_from_file_location(f"_cli_{name}", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _keep_process_hooks(monkeypatch) -> None:
    """main_wrapper sets process-wide hooks (sys/threading excepthooks, the log record factory): restore them
    after the test."""
    for module, name in ((sys, "excepthook"), (sys, "unraisablehook"), (threading, "excepthook"),
                         (logging, "_logRecordFactory")):
        monkeypatch.setattr(module, name, getattr(module, name))


def _invoke(capsys, monkeypatch, name: str, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of `python <name>.py args`, run in this process."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    _keep_process_hooks(monkeypatch)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        _cli(name)()
    return info.value.code, capsys.readouterr().err


def _one_error_line(stderr: str) -> str:
    """The single `error:` line of stderr (asserting there is exactly one and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _snapshot(path: Path) -> dict[str, str]:
    """{relative path: sha256 of a file, or "dir"} of everything under `path` ({} if it does not exist)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*"))}


@functools.cache
def _namespace() -> list[str] | None:
    """The command prefix that runs a command in a private mount namespace where it may mount (a tmpfs, a
    read-only bind mount), or None where this machine allows none."""
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def _need_namespace() -> list[str]:
    prefix = _namespace()
    if prefix is None:
        pytest.skip("needs a private mount namespace (unshare -m as root, unshare -rm otherwise) to mount a "
                    "read-only directory or a small tmpfs; as root, chmod cannot make a directory unwritable")
    return prefix


SNAPSHOT_SCRIPT = """import hashlib, json, sys
from pathlib import Path
root = Path(sys.argv[1])
print(json.dumps({} if not root.exists() else {str(p.relative_to(root)): "dir" if p.is_dir() else
                  hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}))
"""  # _snapshot, for the inside of a mount namespace


def _in_namespace(setup: str, args: list[str], tmp_path: Path, watch: Path) -> tuple[int, str, dict, dict]:
    """Runs `setup` (sh, mounts) then `python args` in a private mount namespace; returns (exit code, stderr,
    snapshot of `watch` before, after), the snapshots taken inside (a tmpfs is gone once it ends)."""
    prefix = _need_namespace()
    (tmp_path / "snapshot.py").write_text(SNAPSHOT_SCRIPT)
    q = shlex.quote
    snap = f"{q(sys.executable)} {q(str(tmp_path / 'snapshot.py'))} {q(str(watch))}"
    err, before, after, rc = (q(str(tmp_path / n)) for n in ("stderr.txt", "before.json", "after.json", "rc.txt"))
    script = (f"set -e; {setup}; {snap} > {before}; cd {q(str(ROOT))}; set +e; "
              f"{shlex.join([sys.executable, *args])} > /dev/null 2> {err}; echo $? > {rc}; {snap} > {after}")
    result = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=600)
    assert (tmp_path / "rc.txt").exists(), result.stderr
    return (int((tmp_path / "rc.txt").read_text()), (tmp_path / "stderr.txt").read_text(),
            json.loads((tmp_path / "before.json").read_text()), json.loads((tmp_path / "after.json").read_text()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny training run (4 steps), trained once for the module."""
    workdir = tmp_path_factory.mktemp("bad_input") / "run"
    result = _run("train.py", "--config", TINY, "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir


# --- the schema ------------------------------------------------------------------------------------------

VARIANT_FLAGS = ("background", "local", "tiny", "paper")


def _every_config() -> list[tuple[str, ml_collections.ConfigDict]]:
    """(spec, config) of every file in configs/ and every variant its get_config accepts (every
    comma-separated subset of the flags any config file declares)."""
    found = []
    for path in sorted((ROOT / "configs").glob("*.py")):
        if path.name in ("__init__.py", "exact_likelihood.py"):   # exact_likelihood: shared parts, no get_config
            continue
        for n in range(len(VARIANT_FLAGS) + 1):
            for flags in itertools.combinations(VARIANT_FLAGS, n):
                spec = f"configs/{path.name}:{','.join(flags)}"
                try:
                    found.append((spec, load_config_file(spec)))
                except OodgenError as e:
                    assert "unknown variant" in str(e), e
    return found


def _leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            keys += _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_key_of_every_config_and_variant_is_declared_and_its_default_passes():
    from oodgen import schema

    configs = _every_config()
    specs = {spec for spec, _ in configs}
    assert len(configs) >= 30 and "configs/pixelcnn_fashion_mnist.py:background,local,tiny" in specs
    for path in (ROOT / "configs").glob("*.py"):
        if path.name not in ("__init__.py", "exact_likelihood.py"):
            assert {f"configs/{path.name}:", f"configs/{path.name}:tiny"} <= specs, path
    for spec, config in configs:
        declared = schema._schema_for(config.model.name)
        missing = [key for key in _leaf_keys(config) if key not in declared]
        assert not missing, f"{spec}: no schema entry for {missing}"
        for purpose in ("train", "evaluate"):
            schema.validate_config(config, for_=purpose)
        schema.validate_config(json.loads(config.to_json()), for_="evaluate")   # as config.json holds it


def test_declared_names_and_keys_match_the_code_they_describe():
    import dataclasses

    from oodgen import schema
    from oodgen.features import compression, density
    from oodgen.features.gradients_fast import KERNEL_CHOICES, KERNELS
    from oodgen.models import MODELS
    from oodgen.models.pixels import LIKELIHOODS
    from oodgen.scorers import REFERENCE_SETTING, SCORERS
    from oodgen.scorers.composed import FEATURES
    from oodgen.training.ensemble import MEMBER_LOOPS

    assert set(schema.MODEL_NAMES) == set(MODELS) == set(schema.MODEL_SCHEMAS)
    assert set(schema.SCORER_NAMES) == set(SCORERS)
    assert set(schema.DENSITY_NAMES) == set(density.DENSITIES) == set(schema.DENSITY_OPTIONS)
    assert set(schema.FEATURE_NAMES) == set(FEATURES)
    assert set(schema.CODECS) == set(compression.CODECS)
    assert set(schema.GRAD_KERNELS) == {*KERNEL_CHOICES, *KERNELS["dense"], *KERNELS["conv"]}
    assert set(schema.MEMBER_LOOPS) == set(MEMBER_LOOPS) and set(schema.LIKELIHOODS) == set(LIKELIHOODS)
    for name, fields in schema.MODEL_SCHEMAS.items():   # every setting a model takes, and only those
        assert set(fields) == {f.name for f in dataclasses.fields(MODELS[name]) if f.init} - {"image_shape"}, name
    for key in schema.SCHEMA:   # config.eval.<scorer>.<setting>: a field of that scorer
        parts = key.split(".")
        if parts[0] == "eval" and len(parts) >= 3 and parts[1] in SCORERS:
            taken = {f.name for f in dataclasses.fields(SCORERS[parts[1]]) if f.init}
            assert parts[2] in taken | {REFERENCE_SETTING}, key
    for name, fields in schema.DENSITY_OPTIONS.items():
        assert set(fields) == {f.name for f in dataclasses.fields(density.DENSITIES[name])} - {"dofs"}, name


BAD_VALUES = [  # (config, override, purpose, what the one-line error must say); the table first
    (TINY, "train.steps=-5", "train", r"config.train.steps=-5 must be a positive integer"),
    (TINY, "train.batch_size=0", "train", r"config.train.batch_size=0 must be a positive integer .*"
                                          r"pass e.g. --config.train.batch_size=64"),
    (TINY, "train.log_every=0", "train", r"config.train.log_every=0 must be a positive integer"),
    (TINY, "train.checkpoint_every=0", "train", r"config.train.checkpoint_every=0 must be a positive integer"),
    (TINY, "train.batch_size=-4", "train", r"config.train.batch_size=-4 must be a positive integer"),
    (TINY, "train.keep_checkpoints=0", "train", r"keep_checkpoints=0 must be a positive integer .*keep no checkpoint"),
    (TINY, "data.num_validation=-1", "train", r"config.data.num_validation=-1 must be a positive integer"),
    (TINY, "eval.num_samples=0", "evaluate", r"config.eval.num_samples=0 must be a positive integer"),
    (TINY, "eval.batch_size=0", "evaluate", r"config.eval.batch_size=0 must be a positive integer"),
    (TINY, "eval.ood=", "evaluate", r"config.eval.ood is empty; name at least one OOD set .*e.g. --config.eval.ood=noise,constant"),
    (TINY, "eval.scorers=", "evaluate", r"config.eval.scorers is empty; name at least one scorer"),
    # a sample of the others
    (TINY, "train.checkpoint_every=3", "train", r"checkpoint_every=3 must be a multiple of config.train.log_every=2"),
    (TINY, "train.steps=True", "train", r"config.train.steps=True must be a positive integer"),
    (TINY, "train.learning_rate=0", "train", r"config.train.learning_rate=0.0 must be a number > 0"),
    (TINY, "data.max_train_examples=0", "train", r"max_train_examples=0 must be -1 \(all\) or a positive integer"),
    (TINY, "data.max_train_examples=8", "train", r"max_train_examples=8 is fewer than one batch"),
    (TINY, "data.image_shape=(28,28)", "train", r"image_shape=\(28, 28\) must be a tuple of 3 integers"),
    (TINY, "data.image_shape=(30,30,1)", "train", r"divisible by 4 .*change config.model or config.data.image_shape"),
    (TINY, "data.test=", "train", r"config.data.test='' must be a non-empty string"),
    (TINY, "model.channels=(8,0)", "train", r"config.model.channels=\(8, 0\) must be a non-empty tuple"),
    (TINY, "model.likelihood=gauss", "train",
     r"likelihood='gauss'; use one of 'bernoulli', 'discretized_logistic_mixture', 'categorical'"),
    (TINY, "seed=-1", "train", r"config.seed=-1 must be an integer >= 0"),
    (TINY, "swag.rank=1", "train", r"config.swag.rank=1 must be at least 2"),
    (TINY, "ensemble.size=0", "train", r"config.ensemble.size=0 must be a positive integer"),
    (TINY, "ensemble.member_loop=scan", "train", r"member_loop='scan'; use one of 'auto', 'vmap', 'unroll'"),
    (TINY, "eval.checkpoint=worst", "evaluate", r"config.eval.checkpoint='worst'; use 'best' or 'latest'"),
    (TINY, "eval.max_examples=0", "evaluate", r"max_examples=0 must be -1 \(all\) .*empty"),
    (TINY, "eval.max_fit_examples=-3", "evaluate", r"max_fit_examples=-3 .*nothing to fit on"),
    (TINY, "eval.ood=noise,noise", "evaluate", r"lists 'noise' twice"),
    (TINY, "eval.ood=fashion_mnist:test", "evaluate", r"lists the in-distribution test set 'fashion_mnist:test'"),
    (TINY, "eval.scorers=log_likelihood,nope", "evaluate", r"unknown scorer 'nope' in config.eval.scorers"),
    (TINY, "eval.scorers=composed", "evaluate", r"config.eval.composed.features is empty"),
    (TINY, "eval.composed.features=log_likelihood,typo", "evaluate", r"unknown feature 'typo'"),
    (TINY, "eval.typicality.alpha=1.0", "evaluate", r"alpha=1.0 must be in \(0, 1\)"),
    (TINY, "eval.ensemble.source=laplace", "evaluate", r"source='laplace'; use 'members' or 'swag'"),
    (TINY, "eval.grad_norms.density_options.gmm.folds=1", "evaluate", r"gmm.folds=1 must be at least 2"),
    (TINY, "eval.grad_norms.kernel=fastest", "evaluate", r"kernel='fastest'; use one of"),
    (TINY, "distributed.num_processes=0", "train", r"num_processes=0 must be a positive integer"),
    (PIXELCNN_TINY, "train.perturbation_rate=1.5", "train", r"perturbation_rate=1.5 must be in \[0, 1\]"),
    (PIXELCNN_TINY, "model.dropout_rate=1.0", "train", r"dropout_rate=1.0 must be in \[0, 1\)"),
    (PIXELCNN_TINY, "eval.input_complexity.codecs=gif", "evaluate", r"unknown codec 'gif'"),
    (PIXELCNN_TINY, "model.num_scales=6", "train", r"divisible by 2\*\*\(num_scales-1\) = 32"),
    ("configs/ddpm_fashion_mnist.py:tiny", "eval.ddpm_reconstruction.start_every=9", "evaluate",
     r"start_every=9 must be at most config.eval.ddpm_reconstruction.num_sampling_steps=5"),
    ("configs/score_net_fashion_mnist.py:tiny", "model.sigma_min=2.0", "train", r"sigma_min"),
    (TINY, "train.divergence_factor=0.5", "train", r"divergence_factor=0.5 must be a number > 1 .* or 0 to turn that off"),
]


@pytest.mark.parametrize("spec,override,purpose,match", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_key_the_value_and_the_fix(spec, override, purpose, match):
    from oodgen.schema import validate_config

    config = parse_overrides(load_config_file(spec), [f"--config.{override}"])
    with pytest.raises(OodgenError, match=match) as info:
        validate_config(config, for_=purpose)
    assert "\n" not in str(info.value)


def test_train_resume_from_is_optional_and_checked_when_present():
    from oodgen.schema import validate_config

    config = load_config_file(TINY)
    if "resume_from" in config.train:
        del config.train["resume_from"]
    validate_config(config)                            # absent: configs saved before it existed
    for good in ("latest", "best", "1", "500"):
        config.train.resume_from = good
        validate_config(config)
    for bad in ("0", "-3", "last", "", "5.0"):
        config.train.resume_from = bad
        with pytest.raises(OodgenError, match=r"config.train.resume_from=.* is not a checkpoint to resume from; "
                                              r"use 'latest', 'best' or the step of a checkpoint"):
            validate_config(config)
    config.train.resume_from = "latest"                # on the command line a number stays a string
    assert parse_overrides(config, ["--config.train.resume_from=500"]).train.resume_from == "500"


@pytest.mark.parametrize("edit,match", [
    (lambda c: c["train"].update(stepz=3), r"unknown config key 'train.stepz'; known keys in config.train: "),
    (lambda c: c.update(extra=1), r"unknown config key 'extra'; known keys in the config"),
    (lambda c: c["eval"].update(nope=dict(a=1)), r"unknown config key 'eval.nope'"),
    (lambda c: c["model"].update(num_resnets=2), r"config.model.num_resnets is not a setting of model 'vae'"),
    (lambda c: c["train"].pop("steps"), r"config.train.steps is missing"),
    (lambda c: c.pop("eval"), r"the config has no config.eval section"),
    (lambda c: c["model"].pop("name"), r"config.model.name is missing"),
    (lambda c: c["model"].update(name="vea"), r"config.model.name='vea'; use one of"),
    (lambda c: c.update(train=3), r"config.train=3 must be a section"),
    (lambda c: c["data"].update(image_shape=dict(h=28)), r"config.data.image_shape must be a value, not a section"),
], ids=["unknown", "unknown-top", "unknown-section", "other-model", "missing", "missing-section", "no-model",
        "bad-model", "not-a-section", "section-for-a-value"])
def test_unknown_missing_and_misplaced_keys_are_one_line_errors(edit, match):
    from oodgen.schema import validate_config

    config = load_config_file(TINY).to_dict()
    edit(config)
    with pytest.raises(OodgenError, match=match) as info:
        validate_config(config)
    assert "\n" not in str(info.value)


def test_parse_overrides_leaves_the_callers_config_as_it_was():
    config = load_config_file(TINY)
    parse_overrides(config, ["--config.train.steps=7", "--config.eval.ood=mnist"])
    assert config.train.steps == 4 and list(config.eval.ood) == ["noise", "fashion_mnist:test+vflip"]


# --- the CLIs: bad values refused before anything is written -----------------------------------------------

TRAIN_ROWS = ["train.steps=-5", "train.batch_size=0", "train.log_every=0", "train.checkpoint_every=0",
              "train.batch_size=-4", "train.keep_checkpoints=0", "data.num_validation=-1"]


@pytest.mark.parametrize("override", TRAIN_ROWS)
def test_train_refuses_a_bad_value_before_creating_the_workdir(capsys, monkeypatch, tmp_path, override):
    workdir = tmp_path / "run"
    code, err = _invoke(capsys, monkeypatch, "train", "--config", TINY, "--workdir", str(workdir),
                        f"--config.{override}")
    assert code == 2 and _one_error_line(err).startswith(f"error: config.{override.split('=')[0]}=")
    assert len(err.strip().splitlines()) == 1, err
    assert not workdir.exists()


def test_keep_checkpoints_0_on_a_finished_run_changes_nothing(capsys, monkeypatch, trained):
    before = _snapshot(trained)
    code, err = _invoke(capsys, monkeypatch, "train", "--config", TINY, "--workdir", str(trained),
                        "--config.train.keep_checkpoints=0")
    assert code == 2 and "keep_checkpoints=0" in _one_error_line(err)
    assert _snapshot(trained) == before


@pytest.mark.parametrize("override,match", [("eval.num_samples=0", "num_samples=0 must be a positive integer"),
                                            ("eval.batch_size=0", "batch_size=0 must be a positive integer"),
                                            ("eval.ood=", "config.eval.ood is empty"),
                                            ("eval.scorers=", "config.eval.scorers is empty")])
def test_evaluate_refuses_a_bad_value_and_writes_nothing(capsys, monkeypatch, trained, override, match):
    before = _snapshot(trained)
    code, err = _invoke(capsys, monkeypatch, "evaluate", "--workdir", str(trained), f"--config.{override}")
    assert code == 2 and match in _one_error_line(err) and len(err.strip().splitlines()) == 1, err
    assert _snapshot(trained) == before


def test_a_schema_error_is_exactly_one_line_on_stderr_of_the_real_command(tmp_path):
    result = _run("train.py", "--config", TINY, "--workdir", str(tmp_path / "run"), "--config.train.steps=-5")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: config.train.steps=-5 must be a positive integer (>= 1); pass e.g. --config.train.steps=2500"]
    assert not (tmp_path / "run").exists()


# --- the CLIs: directories -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command,where", [("train", "file"), ("train", "under"), ("evaluate", "file"),
                                           ("evaluate", "under"), ("evaluate-outdir", "file"),
                                           ("evaluate-outdir", "under")])
def test_a_directory_that_is_a_file_or_under_one_is_one_line(capsys, monkeypatch, tmp_path, command, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    path = str(blocker if where == "file" else blocker / "sub" / "dir")
    args = {"train": ["--config", TINY, "--workdir", path],
            "evaluate": ["--config", TINY, "--workdir", path],
            "evaluate-outdir": ["--config", TINY, "--workdir", str(tmp_path / "w"), "--outdir", path]}[command]
    code, err = _invoke(capsys, monkeypatch, command.split("-")[0], *args)
    flag = "--outdir" if command == "evaluate-outdir" else "--workdir"
    line = _one_error_line(err)
    assert code == 2 and line.startswith(f"error: {flag} {path} ") and "not a directory" in line, line
    assert str(blocker) in line and blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def _read_only(workdir: Path) -> str:
    return f"mount --bind {shlex.quote(str(workdir))} {shlex.quote(str(workdir))}; " \
           f"mount -o remount,bind,ro {shlex.quote(str(workdir))}"


def test_train_refuses_a_read_only_workdir_even_when_the_run_is_finished(trained, tmp_path):
    code, err, before, after = _in_namespace(_read_only(trained), ["train.py", "--config", TINY, "--workdir",
                                                                   str(trained)], tmp_path, trained)
    line = _one_error_line(err)
    assert code == 2 and line == f"error: --workdir {trained} is on a read-only file system; pass a --workdir " \
                                 "on a writable one", err
    assert after == before == _snapshot(trained)


def test_evaluate_refuses_a_read_only_output_directory_before_scoring(trained, tmp_path):
    code, err, before, after = _in_namespace(_read_only(trained), ["evaluate.py", "--workdir", str(trained)],
                                             tmp_path, trained)
    assert code == 2 and "is on a read-only file system; pass --outdir DIR" in _one_error_line(err), err
    assert after == before
    outdir = tmp_path / "ro_out"
    outdir.mkdir()
    code, err, _, after = _in_namespace(_read_only(outdir), ["evaluate.py", "--workdir", str(trained), "--outdir",
                                                             str(outdir)], tmp_path, outdir)
    assert code == 2 and f"--outdir {outdir} is on a read-only file system" in _one_error_line(err), err
    assert after == {}


# --- full disks and OS errors --------------------------------------------------------------------------------

def _tmpfs(path: Path, size: str) -> str:
    return f"mkdir -p {shlex.quote(str(path))}; mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(path))}"


def test_train_on_a_full_disk_is_refused_before_anything_is_written(tmp_path):
    disk = tmp_path / "disk"
    fill = f"dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null || true"
    code, err, before, after = _in_namespace(f"{_tmpfs(disk, '64k')}; {fill}", ["train.py", "--config", TINY,
                                             "--workdir", str(disk / "run")], tmp_path, disk)
    line = _one_error_line(err)
    assert code == 2 and line.startswith(f"error: --workdir {disk / 'run'} (in '{disk}'): its disk is full"), err
    assert after == before and "run" not in after


def test_train_running_out_of_disk_midway_is_one_line_naming_the_workdir(tmp_path):
    """The tiny run writes ~650 KB; on a 320 KB disk a checkpoint save fails (orbax logs its writer threads'
    errors, whose tracebacks are dropped; tensorstore may report late callbacks, one warning line each) and
    the command ends in one error line, exit 2."""
    disk = tmp_path / "disk"
    code, err, _, after = _in_namespace(_tmpfs(disk, "320k"), ["train.py", "--config", TINY, "--workdir",
                                                               str(disk / "run")], tmp_path, disk)
    line = _one_error_line(err)
    assert code == 2 and str(disk / "run") in line, err
    assert "No space left on device" in line or "RESOURCE_EXHAUSTED" in line, err
    assert "run/config.json" in after and "run/split.json" in after   # what was written before is there


def test_evaluate_out_of_disk_keeps_the_earlier_results_whole_and_leaves_no_temporary_file(trained, tmp_path):
    """An earlier evaluation's outputs lie in --outdir, on a disk with ~100 KB left (the new outputs need
    ~130 KB): the failing evaluation leaves them byte for byte, and no temporary or staging file; the
    (read-only) workdir is only read."""
    disk = tmp_path / "disk"
    earlier = {"scores.npz": b"earlier scores", "metrics.json": b'{"earlier": 1}', "plots/roc_x.png": b"png"}
    seed = tmp_path / "earlier"
    for name, payload in earlier.items():
        (seed / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / name).write_bytes(payload)
    fill = (f"cp -r {seed}/. {disk}/; free=$(df --output=avail -B1 {disk} | tail -1); "
            f"dd if=/dev/zero of={disk}/.fill bs=4096 count=$(( (free - 100000) / 4096 )) 2>/dev/null")
    code, err, before, after = _in_namespace(f"{_read_only(trained)}; {_tmpfs(disk, '512k')}; {fill}",
                                             ["evaluate.py", "--workdir", str(trained), "--outdir", str(disk)],
                                             tmp_path, disk)
    line = _one_error_line(err)
    assert code == 2 and line.startswith("error: cannot write ") and "No space left on device" in line, err
    assert after == before, set(after) ^ set(before)
    assert {"scores.npz", "metrics.json", "plots/roc_x.png"} <= set(after)


def test_the_atomic_write_removes_its_temporary_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from oodgen.evaluation import harness

    target = tmp_path / "scores.npz"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(harness.os, "fsync", full)
    with pytest.raises(OSError):
        harness._write_atomic(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.npz"]


def test_outputs_are_staged_so_a_failure_midway_leaves_the_earlier_ones_whole(tmp_path, monkeypatch):
    from oodgen.evaluation import harness, plots

    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.npz").write_bytes(b"earlier")
    (out / "metrics.json").write_text("{}")
    before = _snapshot(out)
    scores = {"log_likelihood": {"in": np.arange(8.0), "ood": np.arange(8.0) + 3}}
    results = harness.compute_metrics(scores, "in")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "hist.png")
    monkeypatch.setattr(plots, "plot_histograms", full)   # after scores.npz, metrics.json and the ROC plot
    with pytest.raises(OSError):
        with harness.staged(out) as staging:
            harness.write_outputs(staging, scores, results, {"log_likelihood": "nats"}, "in")
    assert _snapshot(out) == before
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError):
        with harness.staged(fresh) as staging:
            harness.write_outputs(staging, scores, results, {"log_likelihood": "nats"}, "in")
    assert not fresh.exists()   # created for the outputs, removed with them
    monkeypatch.undo()
    with harness.staged(out) as staging:
        harness.write_outputs(staging, scores, results, {"log_likelihood": "nats"}, "in")
    assert sorted(_snapshot(out)) == ["metrics.json", "plots", "plots/hist_grid_log_likelihood.png",
                                      "plots/hist_log_likelihood.png", "plots/roc_log_likelihood.png", "scores.npz"]
    assert set(np.load(out / "scores.npz").files) == {"log_likelihood/in", "log_likelihood/ood"}


@pytest.mark.parametrize("error,expected", [
    (OSError(errno.ENOSPC, "No space left on device"),
     "error: cannot write {w}: No space left on device; free space there, or pass a --workdir/--outdir on another "
     "disk (files written before are kept)"),
    (PermissionError(errno.EACCES, "Permission denied", "/x/y.json"),
     "error: cannot write /x/y.json: Permission denied; make it writable (chmod/chown), or pass a "
     "--workdir/--outdir you can write"),
    (ValueError("wrapped"), None),   # from an OSError(EROFS): the chain is followed
])
def test_main_wrapper_turns_os_errors_into_one_line_naming_the_path(capsys, monkeypatch, tmp_path, error, expected):
    from oodgen.cli import main_wrapper

    def main(argv):
        if isinstance(error, ValueError):
            raise error from OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro"))
        raise error
    monkeypatch.setattr(sys, "argv", ["train.py", "--workdir", str(tmp_path)])
    _keep_process_hooks(monkeypatch)
    with pytest.raises(SystemExit) as info:
        main_wrapper(main)()
    err = capsys.readouterr().err
    expected = expected or f"error: cannot write {tmp_path / 'ro'}: Read-only file system; pass a " \
                           "--workdir/--outdir on a writable file system"
    assert info.value.code == 2 and err.splitlines() == [expected.format(w=tmp_path)]


def test_errors_of_background_threads_are_one_warning_line_and_the_main_threads_keep_their_traceback(
        capsys, monkeypatch):
    from oodgen.cli import reporting as cli

    monkeypatch.setattr(cli, "_REPORTED", set())

    def fail():
        try:
            raise RuntimeError("Event loop\nis closed")
        except RuntimeError as e:
            cli._background_excepthook(type(e), e, e.__traceback__)   # as PyErr_Print from a native thread does
        raise RuntimeError("uncaught in a thread")
    monkeypatch.setattr(threading, "excepthook", cli._thread_excepthook)
    for _ in range(2):
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
    assert capsys.readouterr().err.splitlines() == [
        "warning: in a background thread: RuntimeError: Event loop is closed",
        "warning: in a background thread: RuntimeError: uncaught in a thread"]   # each once
    try:
        raise RuntimeError("late callback")
    except RuntimeError as e:   # what sys.unraisablehook gets from PyErr_WriteUnraisable(NULL)
        unraisable = type("Unraisable", (), dict(exc_type=RuntimeError, exc_value=e, exc_traceback=e.__traceback__,
                                                 err_msg=None, object=None))
        cli._unraisable_hook(unraisable)
        cli._unraisable_hook(unraisable)
    assert capsys.readouterr().err.splitlines() == ["warning: ignored: RuntimeError: late callback"]
    try:
        raise KeyError("main")
    except KeyError as e:
        cli._background_excepthook(type(e), e, e.__traceback__)
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_log_records_of_the_cli_keep_their_message_and_lose_their_traceback(caplog, monkeypatch):
    from oodgen.cli import main_wrapper

    def main(argv):
        try:
            raise ValueError("RESOURCE_EXHAUSTED: no space")
        except ValueError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
            logging.getLogger("absl").error("thread raised", exc_info=True)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    _keep_process_hooks(monkeypatch)
    with caplog.at_level(logging.ERROR):
        main_wrapper(main)()
    records = [r for r in caplog.records if r.name in ("asyncio", "absl")]
    assert [r.getMessage() for r in records] == ["Task exception was never retrieved", "thread raised"]
    assert all(r.exc_info is None and r.exc_text is None for r in records)
    assert "Traceback" not in caplog.text


def test_main_wrapper_leaves_other_errors_alone(monkeypatch):
    from oodgen.cli import main_wrapper

    def main(argv):
        raise KeyError("a bug")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    _keep_process_hooks(monkeypatch)
    with pytest.raises(KeyError):
        main_wrapper(main)()


# --- config.json -------------------------------------------------------------------------------------------

CORRUPT = [
    (b"\x89\xfe\x00random\xff\xd8 bytes", r"config.json is corrupt \(it is not text: not UTF-8\)"),
    (b"[1, 2, 3]", r"config.json is corrupt \(it holds a JSON list, not a config object\)"),
    (b"", r"config.json is corrupt \(it is empty \(0 bytes\)\)"),
    (b"  \n", r"config.json is corrupt \(it is empty"),
    (b"{broken", r"config.json is corrupt \(not valid JSON: "),
    (b'{"seed": 0}', r"config.json holds no valid config \(the config has no config.data section"),
    (b'"text"', r"config.json is corrupt \(it holds a JSON str"),
]


@pytest.mark.parametrize("content,match", CORRUPT, ids=["random-bytes", "list", "zero-bytes", "blank", "broken",
                                                        "missing-sections", "string"])
def test_a_corrupt_config_json_is_one_line_with_a_fix_that_works(tmp_path, content, match):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(OodgenError, match=match) as info:
        load_saved_config(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "config.json") in message
    assert f"move it aside and re-run train.py --config <the config it was trained with> --workdir {tmp_path}" \
           in message and "pass --config" not in message


def test_a_saved_config_with_a_bad_or_unknown_key_is_refused_naming_it(tmp_path):
    config = load_config_file(TINY)
    config.train.keep_checkpoints = 0
    save_config(config, tmp_path)
    with pytest.raises(OodgenError, match=r"holds no valid config \(config.train.keep_checkpoints=0 must be"):
        load_saved_config(tmp_path)
    saved = json.loads(load_config_file(TINY).to_json())
    saved["train"]["old_setting"] = 1
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(OodgenError, match=r"unknown config key 'train.old_setting'"):
        load_saved_config(tmp_path)
    saved["train"].pop("old_setting")
    saved.pop("ensemble"), saved.pop("swag"), saved.pop("distributed"), saved["eval"].pop("max_fit_examples")
    (tmp_path / "config.json").write_text(json.dumps(saved))   # older: without the sections added since
    assert load_saved_config(tmp_path).train.steps == 4


def test_a_corrupt_config_json_of_a_reference_model_is_one_line(tmp_path):
    from oodgen.training.restore import load_trained_model

    (tmp_path / "config.json").write_bytes(b"")
    with pytest.raises(OodgenError, match=r"config.json is corrupt \(it is empty") as info:
        load_trained_model(tmp_path, what="config.eval.background_ratio.workdir")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("with_config", [False, True])
def test_evaluate_with_a_corrupt_config_json_is_one_line_and_never_advises_passing_config(
        capsys, monkeypatch, trained, tmp_path, with_config):
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    (workdir / "config.json").write_bytes(b"")
    before = _snapshot(workdir)
    code, err = _invoke(capsys, monkeypatch, "evaluate", *(["--config", TINY] if with_config else []),
                        "--workdir", str(workdir))
    line = _one_error_line(err)
    assert code == 2 and "config.json is corrupt (it is empty (0 bytes))" in line and "pass --config" not in line
    assert _snapshot(workdir) == before


def test_a_zero_byte_config_json_is_one_line_on_stderr_of_the_real_command(trained, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    (workdir / "config.json").write_bytes(b"")
    result = _run("evaluate.py", "--workdir", str(workdir))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _one_error_line(result.stderr).startswith(f"error: {workdir / 'config.json'} is corrupt")


def test_the_advised_fix_for_a_corrupt_config_json_works(trained, tmp_path):
    """"move it aside and re-run train.py --config <the config it was trained with>": the finished run takes
    no step and config.json is written again."""
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    (workdir / "config.json").write_bytes(b"\x00\xff")
    log = (workdir / "train_metrics.jsonl").read_bytes()
    (workdir / "config.json").rename(tmp_path / "config.json.corrupt")
    result = _run("train.py", "--config", TINY, "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_saved_config(workdir).train.steps == 4
    assert (workdir / "train_metrics.jsonl").read_bytes() == log   # no step taken
