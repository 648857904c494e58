"""Offline spurious-correlation stand-ins in the Waterbirds mould, built from real digit images.

Two registered data sets share one construction:

- ``spurious_digits``: scikit-learn's 8x8 digits (``load_dataset("digits", ...)``);
- ``spurious_mnist``: MNIST 28x28 (``load_dataset("mnist", ..., root=root)``).

Construction, per split:

1. label = 1 if the digit is in ``positive_digits`` (default 5-9), else 0;
2. a binary spurious attribute agrees with the label on an exact share of each class:
   ``train_agreement`` (default 0.95) for train, ``eval_agreement`` (default 0.5) for val
   and test, so the cue is predictive in training and useless at evaluation, like the
   land/water background of Waterbirds; per class, ``round((1 - agreement) * n_class)``
   randomly chosen examples get the disagreeing value;
3. the attribute is rendered into an RGB image: ``cue="background"`` tints the background
   (spurious 0 red, 1 green; the white stroke is kept, intermediate pixels blend), and
   ``cue="border"`` pads the white-on-black digit with a frame of that colour
   (``border`` pixels wide, default 1 for 8x8 and 2 for 28x28).

Splits: train is the source's train split; val and test are a seeded, digit-stratified
halving of the source's test split (val gets the floor half of each digit). ``index`` is the
example's position in that source split. attrs: ``spurious`` int64, ``group`` int64
(= 2 * label + spurious: 0 = label 0 / cue 0, 1 = label 0 / cue 1, 2 = label 1 / cue 0,
3 = label 1 / cue 1), ``minority`` bool (= label != spurious), ``orig_digit`` int64.

Everything random is drawn from ``seed`` (the digits' own train/test split keeps its
default split_seed, so train is always the same images): the same options give identical
arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import mapd.data.digits  # noqa: F401  (registers "digits")
from mapd.data.base import ImageDataset, available, load_dataset, register
from mapd.errors import ConfigError

CUES = ("background", "border")
# RGB colour per spurious value: 0 red, 1 green (muted so the white stroke stays visible).
CUE_COLOURS = np.array([[200, 40, 40], [40, 170, 40]], dtype=np.int32)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_CARVE_STREAM = 101  # seed-sequence stream for the val/test halving (splits use 0, 1, 2)


def _validate(
    train_agreement: float,
    eval_agreement: float,
    cue: str,
    positive_digits: Sequence[int],
    border: int | None,
) -> tuple[int, ...]:
    for name, value in (("train_agreement", train_agreement), ("eval_agreement", eval_agreement)):
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"spurious: {name} must be in [0, 1], got {value}")
    if cue not in CUES:
        raise ConfigError(f"spurious: cue must be one of {', '.join(CUES)}, got {cue!r}")
    pos = tuple(sorted({int(d) for d in positive_digits}))
    if not pos or len(pos) == 10 or pos[0] < 0 or pos[-1] > 9:
        raise ConfigError(
            f"spurious: positive_digits must be a non-empty proper subset of 0..9, "
            f"got {positive_digits!r}"
        )
    if border is not None and border < 1:
        raise ConfigError(f"spurious: border must be >= 1 pixel, got {border}")
    return pos


def assign_spurious(
    labels: np.ndarray, *, agreement: float, rng: np.random.Generator
) -> np.ndarray:
    """Binary attribute equal to ``labels`` (N,) except on ``round((1 - agreement) * n_c)``
    random examples of each class c, where it is flipped. Returns (N,) int64."""
    labels = np.asarray(labels, dtype=np.int64)
    spur = labels.copy()
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        n_flip = int(np.floor((1.0 - agreement) * len(members) + 0.5))
        spur[rng.choice(members, size=n_flip, replace=False)] = 1 - c
    return spur


def render_cue(
    gray: np.ndarray, spurious: np.ndarray, *, cue: str, border: int | None = None
) -> np.ndarray:
    """Render ``spurious`` (N,) 0/1 into grey digits ``gray`` (N, H, W[, 1]) uint8 (white stroke
    on black). Returns uint8 (N, H, W, 3) for ``"background"``, (N, H+2b, W+2b, 3) for
    ``"border"``."""
    gray = np.asarray(gray)
    if gray.ndim == 4:
        gray = gray[..., 0]
    colours = CUE_COLOURS[np.asarray(spurious, dtype=np.int64)]  # (N, 3)
    n, h, w = gray.shape
    if cue == "background":
        out = np.empty((n, h, w, 3), dtype=np.uint8)
        step = 4096  # chunks keep the int32 intermediate small for 60k MNIST images
        for s in range(0, n, step):
            g = gray[s : s + step, :, :, None].astype(np.int32)
            bg = colours[s : s + step, None, None, :]
            # alpha-blend: stroke intensity g over the coloured background
            out[s : s + step] = ((g * 255 + (255 - g) * bg + 127) // 255).astype(np.uint8)
        return out
    b = border if border is not None else max(1, round(h / 14))
    out = np.empty((n, h + 2 * b, w + 2 * b, 3), dtype=np.uint8)
    out[:] = colours[:, None, None, :].astype(np.uint8)
    out[:, b : b + h, b : b + w, :] = gray[..., None]
    return out


def _build(
    name: str,
    source: str,
    split: str,
    *,
    source_options: dict,
    seed: int,
    train_agreement: float,
    eval_agreement: float,
    cue: str,
    positive_digits: Sequence[int],
    border: int | None,
) -> ImageDataset:
    pos = _validate(train_agreement, eval_agreement, cue, positive_digits, border)
    src_split = "train" if split == "train" else "test"
    src = load_dataset(source, src_split, **source_options)
    digits = src.labels.astype(np.int64)
    if split == "train":
        rows = np.arange(len(src), dtype=np.int64)
    else:
        carve = np.random.default_rng(np.random.SeedSequence([seed, _CARVE_STREAM]))
        is_val = np.zeros(len(src), dtype=bool)
        for d in np.unique(digits):
            members = carve.permutation(np.flatnonzero(digits == d))
            is_val[members[: len(members) // 2]] = True
        rows = np.flatnonzero(is_val if split == "val" else ~is_val)
    orig = digits[rows]
    labels = np.isin(orig, pos).astype(np.int64)
    agreement = train_agreement if split == "train" else eval_agreement
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split]]))
    spur = assign_spurious(labels, agreement=agreement, rng=rng)
    assert src.images is not None  # both sources are in memory
    images = render_cue(src.images[rows], spur, cue=cue, border=border)
    neg = tuple(d for d in range(10) if d not in pos)
    return ImageDataset(
        name=name,
        split=split,
        labels=labels,
        classes=("digit_in_" + "".join(map(str, neg)), "digit_in_" + "".join(map(str, pos))),
        index=src.index[rows],
        images=images,
        attrs={
            "spurious": spur,
            "group": 2 * labels + spur,
            "minority": labels != spur,
            "orig_digit": orig,
        },
        info={
            "source": f"{source}/{src_split}",
            "seed": seed,
            "agreement": agreement,
            "cue": cue,
            "cue_colours": {"0": CUE_COLOURS[0].tolist(), "1": CUE_COLOURS[1].tolist()},
            "positive_digits": list(pos),
            "groups": "group = 2 * label + spurious; minority = label != spurious",
        },
    )


@register(
    "spurious_digits",
    splits=("train", "val", "test"),
    sizes={"train": 1438, "val": 178, "test": 181},
    description="sklearn digits, label digit>=5, red/green colour cue (95% agreement in train)",
    source="built from sklearn.datasets.load_digits; nothing to download",
)
def load_spurious_digits(
    split: str,
    *,
    seed: int = 0,
    train_agreement: float = 0.95,
    eval_agreement: float = 0.5,
    cue: str = "background",
    positive_digits: Sequence[int] = (5, 6, 7, 8, 9),
    border: int | None = None,
    root: str | Path | None = None,
) -> ImageDataset:
    """Spurious-correlation stand-in from sklearn digits; images uint8 (N, 8, 8, 3) (border: 10x10).

    ``root`` is accepted for a uniform config and ignored (the digits ship with sklearn).
    See the module docstring for the construction, splits and attrs.
    """
    del root
    return _build(
        "spurious_digits",
        "digits",
        split,
        source_options={},
        seed=seed,
        train_agreement=train_agreement,
        eval_agreement=eval_agreement,
        cue=cue,
        positive_digits=positive_digits,
        border=border,
    )


def _ensure_mnist_registered() -> None:
    try:
        import mapd.data.mnist  # noqa: F401  (registers "mnist"; written separately)
    except ModuleNotFoundError as e:
        if e.name != "mapd.data.mnist":
            raise
        if "mnist" not in available():
            raise ConfigError(
                "spurious_mnist needs the MNIST loader (mapd.data.mnist), which is missing"
            ) from e


@register(
    "spurious_mnist",
    splits=("train", "val", "test"),
    sizes={"train": 60000},
    description="MNIST, label digit>=5, spurious red/green colour cue (95% agreement in train)",
    source="built from MNIST (see the mnist data set for where to put the files)",
)
def load_spurious_mnist(
    split: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    train_agreement: float = 0.95,
    eval_agreement: float = 0.5,
    cue: str = "background",
    positive_digits: Sequence[int] = (5, 6, 7, 8, 9),
    border: int | None = None,
) -> ImageDataset:
    """Spurious-correlation stand-in from MNIST; images uint8 (N, 28, 28, 3) (border: 32x32).

    ``root`` goes to the ``mnist`` loader. Train = MNIST train (60,000); val / test = halves
    of MNIST test (about 5,000 each). See the module docstring for the construction and attrs.
    """
    _ensure_mnist_registered()
    return _build(
        "spurious_mnist",
        "mnist",
        split,
        source_options={} if root is None else {"root": root},
        seed=seed,
        train_agreement=train_agreement,
        eval_agreement=eval_agreement,
        cue=cue,
        positive_digits=positive_digits,
        border=border,
    )
