"""scikit-learn's bundled 8x8 digits: 1,797 real handwritten digits, no download needed.

This is mapd's embedded default data set. sklearn ships one set; we make a seeded,
class-stratified train/test split (``test_fraction``) so the audit has a test set too.
Pixel values 0..16 are rescaled to uint8 0..255.
"""

from __future__ import annotations

import numpy as np

from mapd.data.base import ImageDataset, register
from mapd.errors import ConfigError


@register(
    "digits",
    splits=("train", "test"),
    sizes={"train": 1438, "test": 359},
    description="scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes)",
    source="ships with scikit-learn (sklearn.datasets.load_digits); nothing to download",
)
def load_digits(split: str, *, test_fraction: float = 0.2, split_seed: int = 0) -> ImageDataset:
    from sklearn.datasets import load_digits as sk_load

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_load()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(split_seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = round(test_fraction * len(members))
        is_test[rng.choice(members, size=n_test, replace=False)] = True
    rows = np.flatnonzero(is_test if split == "test" else ~is_test)
    return ImageDataset(
        name="digits",
        split=split,
        labels=labels[rows],
        classes=tuple(str(c) for c in bunch.target_names),
        index=rows,
        images=images[rows],
        info={
            "source": "sklearn.datasets.load_digits",
            "test_fraction": test_fraction,
            "split_seed": split_seed,
        },
    )
