"""Sets only available as a prepared TFDS copy here (CIFAR-10, SVHN): no local fallback."""

from oodgen.data import tfds_source
from oodgen.data.dataset import Dataset
from oodgen.errors import DatasetNotFoundError

TFDS_NAMES = {"cifar10": "cifar10", "svhn": "svhn_cropped"}


def load(name: str, split: str, limit: int | None = None) -> Dataset:
    """uint8 [N, 32, 32, 3] and int32 [N] from a prepared TFDS copy, or a one-line error saying how to get one."""
    found = tfds_source.load(TFDS_NAMES[name], split, limit)
    if found is None:
        raise DatasetNotFoundError(
            f"{name}:{split} not found: it has no offline source; "
            + tfds_source.HOW_TO_PREPARE.format(name=TFDS_NAMES[name]))
    return found._replace(name=f"{name}:{split}")
