"""Named datasets as raw uint8 NHWC arrays: `load("fashion_mnist:test+hflip")`."""

from oodgen.data.dataset import Dataset
from oodgen.data.registry import available_datasets, load
from oodgen.data.transforms import TRANSFORMS

__all__ = ["Dataset", "TRANSFORMS", "available_datasets", "load"]
