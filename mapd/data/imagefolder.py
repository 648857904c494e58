"""Your own images: a folder tree of class folders, or a CSV manifest.

Nothing is downloaded: this loader reads data the user already has. Two on-disk forms:

1. A tree of class folders, with or without split folders::

       ROOT/train/<class>/<image>        ROOT/<class>/<image>
       ROOT/val/<class>/<image>          (no split folders: all of it is the "train" split)
       ROOT/test/<class>/<image>

   The tree counts as split when ROOT/train, ROOT/val or ROOT/test exists (so these names
   cannot be class names at the top level). Images may sit in sub-folders of a class folder.
   Files whose extension is not an image extension (``mapd.data.files.IMAGE_EXTENSIONS``) are
   ignored, as are hidden folders.
   Classes are the class-folder names sorted; with split folders they are the union over all
   split folders, so a label means the same class in every split. Rows are in sorted file-path
   order.

2. A CSV manifest (``manifest=``), one row per image::

       path,label[,group][,split]
       cats/001.png,cat,0,train

   ``path`` is relative to the manifest's folder, or absolute. ``label`` is a class name or a
   0-based integer class index; without ``classes=`` the class list is the sorted names, or
   ``"0".."K-1"`` when every label is an integer (so integers keep their meaning). ``group``
   becomes ``attrs["group"]``; ``split`` (``train``/``val``/``test``) selects rows, and without
   it every row is ``train``. Rows are kept in file order; every listed file must exist
   (manifest rows are never skipped for their extension).

Storage (``in_memory``): ``True`` decodes every image into ``images`` (N, H, W, C) uint8,
``False`` returns ``paths`` (decoded later by the training engine's streaming source), and
``"auto"`` loads into memory when the decoded size fits in ``max_memory_mb`` and all images
share one size (or ``image_size`` is set), else returns paths; ``info["storage_reason"]`` says
why. In memory, ``image_size`` (int or ``[h, w]``) resizes with PIL bilinear; mixed sizes
without it are an error. C is 1 when every image is grayscale (PIL mode ``"L"``), else 3 (RGB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from mapd.data.base import ImageDataset, register
from mapd.data.files import (
    IMAGE_EXTENSIONS,
    check_decodable,
    check_files_exist,
    decode_image,
    require_dir,
)
from mapd.errors import ConfigError, DataError, MissingSplit

SPLITS = ("train", "val", "test")
DECODE_SAMPLE = 64  # images decoded as a check when the data stay file-backed
HOW_TO_GET = (
    "Put your images in ROOT/<class>/<image> (or ROOT/train|val|test/<class>/<image>), "
    "or pass manifest=<CSV with columns path,label[,group][,split]>."
)


@dataclass
class _Listing:
    """What a layout yields before storage is decided."""

    paths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    attrs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def count_images(
    split: str,
    *,
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    **_: Any,
) -> int:
    """Images in a split from the listing alone (no decoding): for checks at start-up."""
    return len(_listing(split, root, manifest, _parse_classes(classes)).paths)


def _listing(
    split: str,
    root: str | Path | None,
    manifest: str | Path | None,
    class_list: tuple[str, ...] | None,
) -> _Listing:
    if manifest is not None:
        base = None if root is None else Path(root).expanduser()
        return _from_manifest(split, Path(manifest).expanduser(), base, class_list)
    base = require_dir(
        root,
        dataset="imagefolder",
        expected="ROOT/<class>/<image> or ROOT/<split>/<class>/<image>",
        how_to_get=HOW_TO_GET,
    )
    return _from_tree(split, base.resolve(), class_list)


@register(
    "imagefolder",
    splits=SPLITS,
    description="your own images: ROOT/[split/]<class>/<image> folders or a CSV manifest",
    source="the user's own files; nothing to download",
    count=count_images,
)
def load_imagefolder(
    split: str,
    *,
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    in_memory: bool | Literal["auto"] = "auto",
    image_size: int | list[int] | tuple[int, int] | None = None,
    max_memory_mb: float = 2048,
    classes: list[str] | tuple[str, ...] | None = None,
) -> ImageDataset:
    """Load one split of a folder tree or CSV manifest of images.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: the tree's root folder; with ``manifest`` it is optional and a relative
            manifest path is taken relative to it.
        manifest: CSV file with columns ``path``, ``label`` and optionally ``group``, ``split``.
        in_memory: ``True``, ``False`` or ``"auto"`` (see the module docstring).
        image_size: resize to this size (int for square, or ``[h, w]``) when in memory.
        max_memory_mb: memory budget of ``"auto"`` for the decoded (N, H, W, C) array.
        classes: the class names in label order; class folders / manifest labels must be
            among them.

    Returns:
        labels (N,) int64; ``index`` (N,) int64 = 0..N-1 in row order; either ``images``
        (N, H, W, C) uint8 with C in {1, 3} or ``paths`` (N,) absolute str. Manifests add
        ``attrs["manifest_row"]`` (N,) int64 (0-based data row) and ``attrs["group"]`` (N,)
        (int64 if all integers, else str) when the column exists.
    """
    size = _parse_image_size(image_size)
    if in_memory not in (True, False, "auto"):
        raise ConfigError(
            f"imagefolder: in_memory must be true, false or 'auto', got {in_memory!r}"
        )
    if not max_memory_mb > 0:
        raise ConfigError(f"imagefolder: max_memory_mb must be > 0, got {max_memory_mb}")
    listing = _listing(split, root, manifest, _parse_classes(classes))

    what = f"imagefolder/{split}"
    images, storage_info = _materialise(
        listing.paths, in_memory=in_memory, size=size, max_memory_mb=max_memory_mb, what=what
    )
    n = len(listing.paths)
    return ImageDataset(
        name="imagefolder",
        split=split,
        labels=listing.labels,
        classes=listing.classes,
        index=np.arange(n, dtype=np.int64),
        images=images,
        paths=None if images is not None else np.array(listing.paths, dtype=object),
        attrs=listing.attrs,
        info={**listing.info, **storage_info},
    )


# --- options ----------------------------------------------------------------------------------


def _parse_image_size(image_size: Any) -> tuple[int, int] | None:
    """``None``, an int, or ``[h, w]`` -> ``(h, w)``."""
    if image_size is None:
        return None
    if isinstance(image_size, bool):
        raise ConfigError(f"imagefolder: image_size must be an int or [h, w], got {image_size!r}")
    if isinstance(image_size, int | np.integer):
        hw = (int(image_size), int(image_size))
    elif isinstance(image_size, list | tuple) and len(image_size) == 2:
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in image_size):
            raise ConfigError(f"imagefolder: image_size must be integers, got {image_size!r}")
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ConfigError(f"imagefolder: image_size must be an int or [h, w], got {image_size!r}")
    if min(hw) < 1:
        raise ConfigError(f"imagefolder: image_size must be positive, got {image_size!r}")
    return hw


def _parse_classes(classes: Any) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"imagefolder: classes must be a list of names, got {classes!r}")
    out = tuple(classes)
    if not out:
        raise ConfigError("imagefolder: classes is empty")
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise ConfigError(f"imagefolder: classes lists {', '.join(map(repr, dup))} more than once")
    return out


# --- layout 1: folder tree --------------------------------------------------------------------


def _subdirs(path: Path) -> list[str]:
    """Names of the non-hidden sub-folders of ``path``, sorted."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _from_tree(split: str, root: Path, classes: tuple[str, ...] | None) -> _Listing:
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present:
        if split not in present:
            raise MissingSplit(
                f"imagefolder: {root} has split folder(s) {', '.join(present)} but no "
                f"{split!r} folder ({root / split})"
            )
        base = root / split
        found = sorted({c for s in present for c in _subdirs(root / s)})
        layout = "ROOT/<split>/<class>/<image>"
    else:
        if split != "train":
            raise MissingSplit(
                f"imagefolder: {root} has no split folders (train/, val/, test/), so all of its "
                f"images form the 'train' split and there is no {split!r} split. Make "
                f"{root}/{split}/<class>/ folders, or use a manifest with a 'split' column."
            )
        base = root
        found = _subdirs(root)
        layout = "ROOT/<class>/<image>"
    if not found:
        raise DataError(
            f"imagefolder: {base} has no class folders. Expected {layout}. {HOW_TO_GET}"
        )
    if classes is None:
        classes = tuple(found)
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(
                f"imagefolder: class folder(s) {', '.join(map(repr, unknown))} under {root} are "
                f"not in the given classes ({', '.join(classes)})"
            )
    label_of = {c: i for i, c in enumerate(classes)}

    entries: list[tuple[str, int]] = []
    ignored = 0
    for cls in _subdirs(base):
        for dirpath, dirnames, filenames in os.walk(base / cls):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fname in filenames:
                if fname.lower().endswith(IMAGE_EXTENSIONS) and not fname.startswith("."):
                    entries.append((os.path.join(dirpath, fname), label_of[cls]))
                else:
                    ignored += 1
    if not entries:
        raise DataError(
            f"imagefolder: no image files under {base} (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    entries.sort()
    labels = np.array([lab for _, lab in entries], dtype=np.int64)
    return _Listing(
        paths=[p for p, _ in entries],
        labels=labels,
        classes=classes,
        info={
            "root": str(root),
            "layout": layout,
            "folder": str(base),
            "ignored_non_image_files": ignored,
            "warnings": _empty_classes(labels, classes, f"{base}/<class>"),
        },
    )


def _empty_classes(labels: np.ndarray, classes: tuple[str, ...], where: str) -> list[str]:
    """One warning per class without an example in this split (it still counts as a class)."""
    counts = np.bincount(labels, minlength=len(classes))
    return [
        f"class {c!r} has no images in {where}: it is a class of the data set that no "
        "example has (remove it, or add its images)"
        for c, k in zip(classes, counts, strict=True)
        if k == 0
    ]


# --- layout 2: CSV manifest -------------------------------------------------------------------


def _from_manifest(
    split: str, manifest: Path, root: Path | None, classes: tuple[str, ...] | None
) -> _Listing:
    if not manifest.is_absolute() and root is not None:
        manifest = root / manifest
    manifest = manifest.resolve()
    if not manifest.is_file():
        raise DataError(f"imagefolder: manifest {manifest} does not exist. {HOW_TO_GET}")
    try:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as e:  # pandas raises several types for a malformed CSV
        raise DataError(f"imagefolder: cannot parse manifest {manifest}: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("path", "label"):
        if col not in df.columns:
            raise DataError(
                f"imagefolder: manifest {manifest} has no {col!r} column; it has "
                f"{', '.join(df.columns) or 'no columns'} (required: path,label; optional: "
                f"group,split)"
            )
    for col in df.columns:
        df[col] = df[col].str.strip()
    for col in ("path", "label"):
        empty = np.flatnonzero((df[col] == "").to_numpy())
        if len(empty):
            raise DataError(
                f"imagefolder: manifest {manifest} line {empty[0] + 2} has an empty {col!r}"
            )
    if df.empty:
        raise DataError(f"imagefolder: manifest {manifest} has no rows")

    # Labels are resolved over the whole manifest so every split shares one class list.
    labels, classes = _manifest_labels(df["label"].tolist(), classes, manifest)

    if "split" in df.columns:
        keep = (df["split"] == split).to_numpy()
        if not keep.any():
            have = ", ".join(sorted(set(df["split"]))) or "none"
            raise MissingSplit(
                f"imagefolder: manifest {manifest} has no rows with split {split!r} "
                f"(split values present: {have})"
            )
    elif split != "train":
        raise MissingSplit(
            f"imagefolder: manifest {manifest} has no 'split' column, so all of its rows form "
            f"the 'train' split and there is no {split!r} split"
        )
    else:
        keep = np.ones(len(df), dtype=bool)
    rows = np.flatnonzero(keep)

    folder = manifest.parent
    paths = [os.path.abspath(folder / p) for p in df["path"].to_numpy()[rows]]
    check_files_exist(paths, what=f"imagefolder manifest {manifest}")
    attrs: dict[str, np.ndarray] = {"manifest_row": rows.astype(np.int64)}
    if "group" in df.columns:
        attrs["group"] = _group_column(df["group"].to_numpy()[rows])
    return _Listing(
        paths=paths,
        labels=labels[rows],
        classes=classes,
        attrs=attrs,
        info={
            "root": str(folder),
            "layout": "manifest",
            "manifest": str(manifest),
            "manifest_rows": len(df),
            "warnings": _empty_classes(labels[rows], classes, f"the {split!r} rows of {manifest}"),
        },
    )


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _manifest_labels(
    values: list[str], classes: tuple[str, ...] | None, manifest: Path
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels (all rows) as int64 plus the class list; names win over integers when both fit.

    Without ``classes``, labels are either all class indices or all class names: a manifest of
    indices with one name among them (a typo such as ``two``) is an error naming its line.
    """
    is_int = [_is_int(v) for v in values]
    all_int = all(is_int)
    if classes is None and any(is_int) and not all_int:
        n_int = sum(is_int)
        odd = next(i for i, v in enumerate(is_int) if v != (n_int * 2 >= len(values)))
        kind = "a class name" if n_int * 2 >= len(values) else "an integer"
        raise DataError(
            f"imagefolder: manifest {manifest} line {odd + 2}: label {values[odd]!r} is {kind} "
            f"but {max(n_int, len(values) - n_int)} of the {len(values)} labels are "
            f"{'integers' if kind == 'a class name' else 'names'}: use class indices or class "
            "names throughout (or pass classes=)"
        )
    if classes is not None:
        lookup = {c: i for i, c in enumerate(classes)}
        if all(v in lookup for v in values):
            return np.array([lookup[v] for v in values], dtype=np.int64), classes
        if not all_int:
            row = next(i for i, v in enumerate(values) if v not in lookup and not _is_int(v))
            raise DataError(
                f"imagefolder: manifest {manifest} line {row + 2}: label {values[row]!r} is not "
                f"one of the given classes ({', '.join(classes)})"
            )
        ints = np.array([int(v) for v in values], dtype=np.int64)
        bad = np.flatnonzero((ints < 0) | (ints >= len(classes)))
        if len(bad):
            raise DataError(
                f"imagefolder: manifest {manifest} line {bad[0] + 2}: label {values[bad[0]]!r} "
                f"is outside [0, {len(classes)}) for the given classes"
            )
        return ints, classes
    if all_int:
        ints = np.array([int(v) for v in values], dtype=np.int64)
        bad = np.flatnonzero(ints < 0)
        if len(bad):
            raise DataError(
                f"imagefolder: manifest {manifest} line {bad[0] + 2}: label {values[bad[0]]!r} "
                f"is negative"
            )
        return ints, tuple(str(i) for i in range(int(ints.max()) + 1))
    names = tuple(sorted(set(values)))
    lookup = {c: i for i, c in enumerate(names)}
    return np.array([lookup[v] for v in values], dtype=np.int64), names


def _group_column(values: np.ndarray) -> np.ndarray:
    if all(_is_int(str(v)) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array([str(v) for v in values], dtype=str)


# --- storage ----------------------------------------------------------------------------------


def _peek(path: str) -> tuple[int, int, str]:
    """(height, width, PIL mode) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width, im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        decode_image(path)  # raises the shared DataError that names the file
        raise


def _sample(paths: list[str], k: int) -> list[str]:
    if len(paths) <= k:
        return paths
    rng = np.random.default_rng(0)
    return [paths[i] for i in sorted(rng.choice(len(paths), size=k, replace=False))]


def _materialise(
    paths: list[str],
    *,
    in_memory: bool | str,
    size: tuple[int, int] | None,
    max_memory_mb: float,
    what: str,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Decode into (N, H, W, C) uint8 or keep paths; returns (images or None, info)."""
    n = len(paths)
    budget = max_memory_mb * 2**20

    def as_files(reason: str, modes: list[str]) -> tuple[None, dict[str, Any]]:
        check_decodable(paths, what=what, sample=DECODE_SAMPLE)
        return None, {
            "storage": "files",
            "storage_reason": reason,
            # the streaming source converts to this mode; judged from the decoded sample
            "color_mode": "L" if modes and all(m == "L" for m in modes) else "RGB",
            "checked": f"all {n} files exist; decoded {min(n, DECODE_SAMPLE)} (seeded sample)",
        }

    if in_memory is False:
        return as_files("in_memory=false", [_peek(p)[2] for p in _sample(paths, DECODE_SAMPLE)])

    if in_memory == "auto":
        # A cheap estimate from headers of a sample before reading every header.
        heads = [_peek(p) for p in _sample(paths, DECODE_SAMPLE)]
        modes = [m for _, _, m in heads]
        channels = 1 if all(m == "L" for m in modes) else 3
        pixels = size[0] * size[1] if size else np.mean([h * w for h, w, _ in heads])
        estimate = n * pixels * channels
        if estimate > budget:
            return as_files(
                f"estimated decoded size {estimate / 2**20:.0f} MB > max_memory_mb={max_memory_mb}",
                modes,
            )

    heads = [_peek(p) for p in paths]
    modes = [m for _, _, m in heads]
    gray = all(m == "L" for m in modes)
    channels = 1 if gray else 3
    shapes = sorted({(h, w) for h, w, _ in heads})
    if size is None and len(shapes) > 1:
        first = {}
        for p, (h, w, _) in zip(paths, heads, strict=True):
            first.setdefault((h, w), p)
        shown = "; ".join(f"{h}x{w} ({first[(h, w)]})" for h, w in shapes[:3])
        if in_memory is True:
            raise DataError(
                f"{what}: images have {len(shapes)} different sizes (h x w: {shown}); set "
                f"image_size (an int or [h, w]) to resize them when loading into memory"
            )
        return as_files(f"mixed image sizes ({shown}); set image_size to load into memory", modes)
    h, w = size if size else shapes[0]
    nbytes = n * h * w * channels
    if in_memory == "auto" and nbytes > budget:
        return as_files(
            f"decoded size {nbytes / 2**20:.0f} MB > max_memory_mb={max_memory_mb}", modes
        )

    if in_memory is True:
        reason = "in_memory=true"
    else:
        reason = f"decoded size {nbytes / 2**20:.1f} MB <= max_memory_mb={max_memory_mb}"
    images = np.empty((n, h, w, channels), dtype=np.uint8)
    mode = "L" if gray else "RGB"
    for i, p in enumerate(paths):
        try:
            arr = decode_image(p, mode=mode)
        except DataError as e:
            raise DataError(f"{what}: {e}") from e
        if arr.shape[:2] != (h, w):
            pil = Image.fromarray(arr[..., 0] if gray else arr)
            arr = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
            arr = arr[..., None] if gray else arr
        images[i] = arr
    return images, {
        "storage": "memory",
        "storage_reason": reason,
        "color_mode": mode,
        "image_size": [h, w],
        "resized": size is not None,
        "checked": f"decoded all {n} images",
    }
