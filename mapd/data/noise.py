"""Synthetic label noise: the three usual generators, seeded and exact in count.

- ``symmetric``: exactly ``round(rate * N)`` examples are chosen and each gets a label drawn
  uniformly from the OTHER classes, so every chosen label changes (the sound default).
- ``arazo``: Arazo et al. (2019)'s injection, used by MAP-D's label-correction experiment:
  ``round(rate * N)`` examples are chosen and relabelled uniformly over ALL classes, so about
  ``1/C`` of them keep their label and the share of changed labels is ``rate * (1 - 1/C)``.
  ``draw_classes=10`` reproduces the authors' CIFAR-100 code, which drew the new label from
  ``range(10)`` whatever the number of classes (a quirk; by default ``num_classes`` is used).
- ``asymmetric``: class-dependent flips ``source -> target`` from ``pairs``; within each source
  class exactly ``round(rate * n_source)`` examples are flipped (chosen on the clean labels,
  so cat <-> dog does not flip twice). Default pairs: for 10 classes the CIFAR-10 ones
  (truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog, i.e. 9->1, 2->0, 4->7,
  3->5, 5->3); for any other class count ``c -> (c + 1) % num_classes``.

Rounding is half-up (``floor(x + 0.5)``). ``is_noisy`` marks labels that differ from the
clean ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mapd.data.base import ImageDataset
from mapd.errors import ConfigError, DataError

KINDS = ("symmetric", "arazo", "asymmetric")
CIFAR10_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def default_pairs(num_classes: int) -> dict[int, int]:
    """Asymmetric flip pairs used when none are given (see the module docstring)."""
    if num_classes == 10:
        return dict(CIFAR10_PAIRS)
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def _validate(
    labels: np.ndarray,
    rate: float,
    num_classes: int,
    kind: str,
    draw_classes: int | None,
    pairs: Mapping[int, int] | None,
) -> np.ndarray:
    if kind not in KINDS:
        raise ConfigError(f"label noise: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 2
    ):
        raise ConfigError(f"label noise: num_classes must be an integer >= 2, got {num_classes!r}")
    try:
        rate_f = float(rate)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"label noise: rate must be a number in [0, 1], got {rate!r}") from e
    if not 0.0 <= rate_f <= 1.0:
        raise ConfigError(f"label noise: rate must be in [0, 1], got {rate!r}")
    if draw_classes is not None:
        if kind != "arazo":
            raise ConfigError(
                f"label noise: draw_classes only applies to kind='arazo', not {kind!r}"
            )
        if not 1 <= int(draw_classes) <= num_classes:
            raise ConfigError(
                f"label noise: draw_classes must be in [1, num_classes={num_classes}], "
                f"got {draw_classes}"
            )
    if pairs is not None:
        if kind != "asymmetric":
            raise ConfigError(f"label noise: pairs only apply to kind='asymmetric', not {kind!r}")
        for src, dst in pairs.items():
            if not (0 <= int(src) < num_classes and 0 <= int(dst) < num_classes):
                raise ConfigError(f"label noise: pair {src} -> {dst} is outside [0, {num_classes})")
            if int(src) == int(dst):
                raise ConfigError(f"label noise: pair {src} -> {dst} maps a class onto itself")
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"label noise: labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"label noise: labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(
            f"label noise: labels must be in [0, {num_classes}), "
            f"got min {arr.min()} max {arr.max()}"
        )
    return arr


def inject_label_noise(
    labels: np.ndarray,
    *,
    rate: float,
    num_classes: int,
    kind: str = "symmetric",
    seed: int = 0,
    draw_classes: int | None = None,
    pairs: Mapping[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``labels`` (N,) integer in ``[0, num_classes)``.

    Args:
        rate: share of examples chosen (symmetric, arazo) or flipped per source class
            (asymmetric), in [0, 1].
        kind: ``"symmetric"``, ``"arazo"`` or ``"asymmetric"`` (see the module docstring).
        seed: seed of the generator; the same arguments give the same output.
        draw_classes: arazo only; new labels are drawn from ``range(draw_classes)``.
        pairs: asymmetric only; ``{source: target}`` class flips.

    Returns:
        ``(noisy_labels, is_noisy)``: int64 (N,) and bool (N,), ``is_noisy`` true where the
        label changed.
    """
    clean = _validate(labels, rate, num_classes, kind, draw_classes, pairs)
    rng = np.random.default_rng(seed)
    n = len(clean)
    noisy = clean.copy()
    if kind in ("symmetric", "arazo"):
        chosen = rng.choice(n, size=_round_half_up(float(rate) * n), replace=False)
        if kind == "symmetric":
            # an offset in 1..C-1 is uniform over the other classes
            noisy[chosen] = (
                clean[chosen] + rng.integers(1, num_classes, size=len(chosen))
            ) % num_classes
        else:
            high = num_classes if draw_classes is None else int(draw_classes)
            noisy[chosen] = rng.integers(0, high, size=len(chosen))
    else:
        flips = (
            default_pairs(num_classes)
            if pairs is None
            else {int(s): int(d) for s, d in pairs.items()}
        )
        for src in sorted(flips):
            members = np.flatnonzero(clean == src)
            picked = rng.choice(
                members, size=_round_half_up(float(rate) * len(members)), replace=False
            )
            noisy[picked] = flips[src]
    return noisy, noisy != clean


def apply_label_noise(
    dataset: ImageDataset,
    *,
    rate: float,
    kind: str = "symmetric",
    seed: int = 0,
    draw_classes: int | None = None,
    pairs: Mapping[int, int] | None = None,
    num_classes: int | None = None,
) -> ImageDataset:
    """A copy of ``dataset`` with noisy labels (options as in :func:`inject_label_noise`).

    ``num_classes`` defaults to the data set's. The copy gains attrs ``clean_label`` (N,)
    int64 and ``noisy`` (N,) bool; if the data set already carries ``clean_label`` (noise
    applied twice) that column is kept and ``noisy`` compares with it. Images / paths are
    shared with the original, not copied; ``info["label_noise"]`` records the settings.
    """
    c = dataset.num_classes if num_classes is None else num_classes
    new, _ = inject_label_noise(
        dataset.labels,
        rate=rate,
        num_classes=c,
        kind=kind,
        seed=seed,
        draw_classes=draw_classes,
        pairs=pairs,
    )
    clean = np.asarray(dataset.attrs.get("clean_label", dataset.labels), dtype=np.int64)
    noisy = new != clean
    settings = {
        "kind": kind,
        "rate": float(rate),
        "seed": seed,
        "num_classes": c,
        "draw_classes": draw_classes,
        "pairs": None if pairs is None else {int(k): int(v) for k, v in pairs.items()},
        "n_noisy": int(noisy.sum()),
    }
    return dataclasses.replace(
        dataset,
        labels=new,
        attrs={**dataset.attrs, "clean_label": clean, "noisy": noisy},
        info={**dataset.info, "label_noise": settings},
    )
