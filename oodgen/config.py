"""Config files (ml_collections, `get_config(variant)`), command-line overrides, and the workdir copy."""

import ast
import copy
import importlib.util
import json
import os
import sys
from pathlib import Path

import ml_collections

from oodgen.errors import OodgenError
from oodgen.atomic import write_atomic
from oodgen.schema import validate_config

CONFIG_FILE = "config.json"


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path/to/config.py[:variant]` -> the ConfigDict its `get_config(variant)` returns."""
    path, _, variant = spec.partition(":")
    if not Path(path).is_file():
        raise OodgenError(f"config file {path!r} not found; pass e.g. --config configs/vae_fashion_mnist.py")
    package_root = str(Path(path).resolve().parent.parent)  # so configs can import configs.<other>
    if package_root not in sys.path:
        sys.path.append(package_root)
    module_spec = importlib.util.spec_from_file_location(f"oodgen_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        return module.get_config(variant)
    except OodgenError:
        raise
    except Exception as e:
        raise OodgenError(f"config {spec!r} failed to load: {type(e).__name__}: {e}") from None


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
    """Sets `config.<dotted_key>` from its command-line text, keeping the existing field's type."""
    *parents, leaf = dotted_key.split(".")
    node = config
    for i, name in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise OodgenError(f"unknown config key {'.'.join(parents[:i + 1])!r} in --config.{dotted_key}; "
                              f"known keys at that level: {sorted(node) if isinstance(node, dict) else []}")
        node = node[name]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        known = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
        raise OodgenError(f"unknown config key {dotted_key!r} in --config.{dotted_key}; "
                          f"known keys there: {known}")
    value = _parse_value(text)
    current = node[leaf]
    if isinstance(current, str) and not isinstance(value, str):
        value = text  # a string setting keeps its text: --config.train.resume_from=500 is "500"
    elif isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        value = type(current)(value)
    elif isinstance(current, (tuple, list)) and isinstance(value, str):
        value = type(current)(v for v in value.split(",") if v)
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise OodgenError(f"--config.{dotted_key}={text}: {e}") from None


def parse_overrides(config: ml_collections.ConfigDict, args: list[str]) -> ml_collections.ConfigDict:
    """Applies `--config.a.b=value` (or `--config.a.b value`) arguments to a copy of `config` (the caller's is
    left as it was); anything else is an error."""
    config = copy.deepcopy(ml_collections.ConfigDict(config))
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise OodgenError(f"unrecognised argument {arg!r}; overrides look like --config.train.steps=100")
        key, eq, text = arg[len("--config."):].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise OodgenError(f"{arg} needs a value, e.g. {arg}=100")
            i += 1
            text = args[i]
        apply_override(config, key, text)
        i += 1
    return config


def save_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
    """Writes the config as JSON beside the checkpoints (atomically: a failed write leaves the old file and no
    temporary one)."""
    path = Path(workdir) / CONFIG_FILE
    write_atomic(path, config.to_json(indent=2).encode())
    return path


def _rewrite_fix(workdir: str | os.PathLike) -> str:
    return (f"move it aside and re-run train.py --config <the config it was trained with> --workdir {workdir}, "
            "which writes it again (a finished run takes no step)")


def load_saved_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config that train.py saved in `workdir`, checked against the schema (oodgen.schema): a file that is
    empty, not UTF-8 JSON, not an object, or not a valid config is a one-line OodgenError saying how to
    write it again."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise OodgenError(f"no {CONFIG_FILE} in {str(workdir)!r}: train there first with "
                          f"train.py --workdir {workdir}, or pass --config")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise OodgenError(f"cannot read {path}: {e.strerror}; check its permissions") from None
    try:
        if not raw.strip():
            raise ValueError(f"it is empty ({len(raw)} bytes)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("it is not text: not UTF-8") from None
        try:
            saved = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        if not isinstance(saved, dict):
            raise ValueError(f"it holds a JSON {type(saved).__name__}, not a config object")
    except ValueError as e:
        raise OodgenError(f"{path} is corrupt ({e}); {_rewrite_fix(workdir)}") from None
    try:
        validate_config(saved, for_="train")
    except OodgenError as e:
        raise OodgenError(f"{path} holds no valid config ({e}); correct it, or {_rewrite_fix(workdir)}") from None
    return ml_collections.ConfigDict(saved)
