"""The held-out split a model was trained with, recorded in its workdir and checked before it is used.

Training holds out the tail `config.data.num_validation` images of `config.data.train` and chooses the
`best/` checkpoint on them; evaluation fits scorers' densities on the same images. Both recompute the
split from the config they are given, so `train()` records it in `<workdir>/split.json` (the settings
that define it and SHA-256 digests of the images) and evaluation refuses a config whose held-out images
differ: with another split, scorers would fit on images the model was trained on.
"""

import hashlib
import json
import os
from pathlib import Path

import ml_collections
import numpy as np

from oodgen import sharding
from oodgen.config import CONFIG_FILE, load_saved_config
from oodgen.errors import OodgenError

SPLIT_FILE = "split.json"
SETTINGS = ("data.train", "num_validation")   # the config settings that choose the held-out images
IMAGES = ("image_shape", "num_held_out", "held_out_sha256")   # what the held-out images are
EVALUATE_FIX = ("evaluate with the training run's data settings (evaluate.py --workdir without --config uses "
                "them), or retrain")
RESUME_FIX = "resume with the data settings it was trained with, or train in a new --workdir"


def sha256(images: np.ndarray) -> str:
    """Hex SHA-256 of the raw bytes of a uint8 array [N, H, W, C] (C order)."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def _held_out(config: ml_collections.ConfigDict, val_images: np.ndarray) -> dict:
    """The part of a split description that fixes the held-out images uint8[N, H, W, C]."""
    return {"data.train": str(config.data.train), "num_validation": int(config.data.num_validation),
            "image_shape": [int(d) for d in val_images.shape[1:]], "num_held_out": int(val_images.shape[0]),
            "held_out_sha256": sha256(val_images)}


def describe_split(config: ml_collections.ConfigDict, train_images: np.ndarray, val_images: np.ndarray) -> dict:
    """JSON-able description of a (train uint8[N_t, H, W, C], held-out uint8[N_v, H, W, C]) split:
    data.train, num_validation, max_train_examples, image_shape, the image counts and SHA-256 digests."""
    return {**_held_out(config, val_images), "max_train_examples": int(config.data.max_train_examples),
            "num_train": int(train_images.shape[0]), "train_sha256": sha256(train_images)}


def record_split(workdir: str | os.PathLike, description: dict) -> Path:
    """Writes `description` to `<workdir>/split.json` atomically (process 0 only); returns the path."""
    path = Path(workdir) / SPLIT_FILE
    if sharding.is_main_process():
        tmp = path.with_name(f".{SPLIT_FILE}.tmp")
        tmp.write_text(json.dumps(description, indent=2))
        os.replace(tmp, path)
    return path


def load_split(workdir: str | os.PathLike) -> dict | None:
    """The split recorded in `workdir`, or None where there is none (a run trained before splits were recorded)."""
    path = Path(workdir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise OodgenError(f"{path} is not valid JSON ({e}); re-run train.py with the run's config and "
                          f"--workdir {workdir} to record it again (a finished run takes no step)") from None
    if not isinstance(recorded, dict) or any(key not in recorded for key in (*SETTINGS, *IMAGES)):
        raise OodgenError(f"{path} is not a split record; re-run train.py with the run's config and "
                          f"--workdir {workdir} to record it again (a finished run takes no step)")
    return recorded


def _shown(key: str, value) -> str:
    """A value as an error message shows it: digests shortened to 12 hex digits, strings quoted."""
    if key.endswith("sha256"):
        return value[:12]
    return repr(value) if isinstance(value, str) else str(value)


def _differences(current: dict, recorded: dict) -> list[str]:
    """"key <now> vs <at training>" for each differing setting; the image facts only when the settings agree."""
    keys = [k for k in SETTINGS if current[k] != recorded[k]] or [k for k in IMAGES if current[k] != recorded[k]]
    return [f"{k} {_shown(k, current[k])} vs {_shown(k, recorded[k])}" for k in keys]


def check_split(workdir: str | os.PathLike, config: ml_collections.ConfigDict, val_images: np.ndarray,
                fix: str = EVALUATE_FIX) -> None:
    """Raises a one-line OodgenError unless `val_images` (uint8[N, H, W, C], the held-out split of `config`)
    are the held-out images recorded in `workdir`, or if none was recorded."""
    recorded = load_split(workdir)
    if recorded is None:
        raise OodgenError(f"{workdir} has no {SPLIT_FILE} (it was trained before held-out splits were recorded), "
                          "so the held-out images scorers fit on cannot be checked: re-run train.py with its "
                          f"training config and --workdir {workdir} to record them (a finished run takes no "
                          "training step), then evaluate again")
    differences = _differences(_held_out(config, val_images), recorded)
    if differences:
        hint = "" if any(d.split()[0] in SETTINGS for d in differences) else \
            f"; the data behind {config.data.train!r} changed"
        raise OodgenError(f"the held-out split differs from the one {workdir} was trained with "
                          f"({', '.join(differences)}, now vs at training{hint}): {fix}")


def check_resume(workdir: str | os.PathLike, config: ml_collections.ConfigDict, val_images: np.ndarray) -> None:
    """Before training resumes in `workdir`: refuses another held-out split than the recorded one, or, in a
    workdir trained before splits were recorded, other data settings than its saved config.json."""
    if load_split(workdir) is not None:
        check_split(workdir, config, val_images, fix=RESUME_FIX)
        return
    if not (Path(workdir) / CONFIG_FILE).is_file():
        return
    saved = load_saved_config(workdir)
    was = {"data.train": str(saved.data.train), "num_validation": int(saved.data.num_validation)}
    now = {"data.train": str(config.data.train), "num_validation": int(config.data.num_validation)}
    differences = [f"{k} {_shown(k, now[k])} vs {_shown(k, was[k])}" for k in SETTINGS if now[k] != was[k]]
    if differences:
        raise OodgenError(f"the held-out split differs from the one {workdir} was trained with "
                          f"({', '.join(differences)}, now vs its {CONFIG_FILE}): {RESUME_FIX}")
