"""Data sets: the in-memory record, the registry, and one loader module per data set.

Adding a data set = one module that decorates its loader with :func:`register`, plus its
import line below.
"""

from mapd.data import (  # noqa: F401  (each import registers its loaders)
    celeba,
    cifar,
    clothing1m,
    digits,
    imagefolder,
    imagenet,
    mnist,
    spurious,
    waterbirds,
)
from mapd.data.base import (
    DatasetSpec,
    ImageDataset,
    available,
    get_spec,
    load_dataset,
    register,
    split_size,
)
from mapd.data.noise import apply_label_noise, inject_label_noise

__all__ = [
    "DatasetSpec",
    "ImageDataset",
    "apply_label_noise",
    "available",
    "get_spec",
    "inject_label_noise",
    "load_dataset",
    "register",
    "split_size",
]
