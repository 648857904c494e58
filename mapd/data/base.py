"""The one in-memory record for image-classification data, and the data-set registry.

Every loader returns an :class:`ImageDataset`. In-memory data sets carry ``images``
(N, H, W, C) uint8; file-backed ones (ImageNet, Clothing1M, ...) carry ``paths`` and are
decoded lazily by the streaming data source. Everything else (labels, the stable example
index, per-example attributes such as groups) is the same for both, so probes, training
and assignment do not care which kind they get.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mapd.errors import ConfigError, DataError


@dataclass
class ImageDataset:
    """One split of an image-classification data set.

    Attributes:
        name: registry name of the data set (e.g. ``"cifar10"``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        labels: (N,) int64 class labels in ``[0, len(classes))``.
        classes: class names, position = label.
        index: (N,) int64 stable example index (position in the official order of the split);
            published per-example scores (C-scores) are matched on it.
        images: (N, H, W, C) uint8, or ``None`` for a file-backed data set.
        paths: (N,) str file paths of a file-backed data set, else ``None``.
        attrs: optional per-example columns, each (N,), e.g. ``group``, ``place``, ``noisy``.
        info: provenance (root directory, checksum status, source), written into summaries.
    """

    name: str
    split: str
    labels: np.ndarray
    classes: tuple[str, ...]
    index: np.ndarray
    images: np.ndarray | None = None
    paths: np.ndarray | None = None
    attrs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.index = np.asarray(self.index, dtype=np.int64)
        self.classes = tuple(str(c) for c in self.classes)
        n = len(self.labels)
        if self.labels.ndim != 1:
            raise DataError(
                f"{self.name}/{self.split}: labels must be 1-D, got {self.labels.shape}"
            )
        if (self.images is None) == (self.paths is None):
            raise DataError(f"{self.name}/{self.split}: give exactly one of images or paths")
        if self.images is not None:
            if self.images.dtype != np.uint8 or self.images.ndim != 4:
                raise DataError(
                    f"{self.name}/{self.split}: images must be uint8 (N, H, W, C), "
                    f"got {self.images.dtype} {self.images.shape}"
                )
            if len(self.images) != n:
                raise DataError(
                    f"{self.name}/{self.split}: {len(self.images)} images but {n} labels"
                )
        if self.paths is not None:
            self.paths = np.asarray(self.paths, dtype=object)
            if len(self.paths) != n:
                raise DataError(f"{self.name}/{self.split}: {len(self.paths)} paths but {n} labels")
        if len(self.index) != n:
            raise DataError(f"{self.name}/{self.split}: {len(self.index)} indices but {n} labels")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(
                f"{self.name}/{self.split}: labels outside [0, {len(self.classes)}): "
                f"min {self.labels.min()}, max {self.labels.max()}"
            )
        for key, col in self.attrs.items():
            if len(col) != n:
                raise DataError(
                    f"{self.name}/{self.split}: attribute {key!r} has {len(col)} rows, not {n}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: np.ndarray) -> ImageDataset:
        """Rows ``idx`` (integer positions) as a new data set; the stable index is kept."""
        idx = np.asarray(idx, dtype=np.int64)
        return ImageDataset(
            name=self.name,
            split=self.split,
            labels=self.labels[idx],
            classes=self.classes,
            index=self.index[idx],
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else self.paths[idx],
            attrs={k: np.asarray(v)[idx] for k, v in self.attrs.items()},
            info=dict(self.info),
        )

    def summary(self) -> dict[str, Any]:
        """Counts per class (and per value of each attribute) for the data-set summary file."""
        out: dict[str, Any] = {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "num_classes": self.num_classes,
            "storage": "memory" if self.in_memory else "files",
            "per_class": {
                c: int(k)
                for c, k in zip(
                    self.classes, np.bincount(self.labels, minlength=self.num_classes), strict=True
                )
            },
        }
        if self.images is not None:
            out["image_shape"] = list(self.images.shape[1:])
        for key, col in self.attrs.items():
            values, counts = np.unique(np.asarray(col), return_counts=True)
            if len(values) <= 64:
                out[f"per_{key}"] = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
        out["info"] = self.info
        return out


# --- registry -------------------------------------------------------------------------------

Loader = Callable[..., ImageDataset]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered loader: ``loader(split, **options) -> ImageDataset``."""

    name: str
    loader: Loader
    splits: tuple[str, ...]
    description: str
    source: str  # where the data comes from / how to get it
    # examples per split of the official data set, known without reading it (start-up checks)
    sizes: dict[str, int] | None = None
    # or: count(split, **options) -> examples, cheaply (no image decoding)
    count: Callable[..., int] | None = None


_REGISTRY: dict[str, DatasetSpec] = {}


def register(
    name: str,
    *,
    splits: tuple[str, ...],
    description: str,
    source: str,
    sizes: dict[str, int] | None = None,
    count: Callable[..., int] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(split, **options)`` under ``name``.

    ``sizes`` (official examples per split) or ``count`` (a cheap counter) let the workflow
    check probe sizes against the data before any job runs.
    """

    def deco(fn: Loader) -> Loader:
        if name in _REGISTRY:
            raise RuntimeError(f"data set {name!r} registered twice")
        _REGISTRY[name] = DatasetSpec(name, fn, splits, description, source, sizes, count)
        return fn

    return deco


def get_spec(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown data set {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available() -> list[str]:
    return sorted(_REGISTRY)


def split_size(name: str, split: str, **options: Any) -> int | None:
    """Examples in a split without loading its images: the official size, a cheap count, or
    None when neither is known."""
    spec = get_spec(name)
    if spec.sizes is not None and split in spec.sizes:
        return spec.sizes[split]
    if spec.count is not None:
        return spec.count(split, **options)
    return None


def load_dataset(name: str, split: str = "train", **options: Any) -> ImageDataset:
    """Load split ``split`` of the registered data set ``name`` (options go to its loader)."""
    spec = get_spec(name)
    if split not in spec.splits:
        raise ConfigError(
            f"data set {name!r} has no split {split!r}; it has {', '.join(spec.splits)}"
        )
    try:
        return spec.loader(split, **options)
    except TypeError as e:  # an unknown option reaches the loader's signature
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"data set {name!r}: {e}") from e
        raise
