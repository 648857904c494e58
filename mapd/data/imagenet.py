"""ImageNet (ILSVRC-2012 classification), file-backed, plus matching of its published C-scores.

Where it comes from: https://image-net.org (an account and acceptance of the terms of access
are required, so mapd cannot download it). Download ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar``; extract the train archive's 1,000 per-class tars into
``ROOT/train/<wnid>/`` and the validation images into ``ROOT/val/``. The Kaggle "ImageNet Object
Localization Challenge" has the same images plus ``LOC_val_solution.csv`` and
``LOC_synset_mapping.txt``; its ``ILSVRC/Data/CLS-LOC/{train,val}`` folders are accepted too.
Expected layout::

    ROOT/train/<wnid>/<wnid>_<k>.JPEG         1,281,167 images in 1,000 class folders
    ROOT/val/<wnid>/ILSVRC2012_val_<k>.JPEG   50,000 images (the usual val reorganisation)
      or ROOT/val/ILSVRC2012_val_<k>.JPEG     flat, with ROOT/LOC_val_solution.csv
                                              (ImageId, PredictionString; first token = wnid)
    ROOT/LOC_synset_mapping.txt               optional, lines "<wnid> <name>, <name>, ..."

Classes are the training folders' wnids, sorted (the standard label order, 0..999). Class
names are the first name of each synset in ``LOC_synset_mapping.txt`` (with the wnid appended
to a name that more than one class shares, e.g. the two "crane" synsets), or the wnids when
the file is absent; ``info["wnids"]`` always holds the wnids. Row order: train by (wnid, file
name), val by file name, i.e. the official ``ILSVRC2012_val_<k>`` numbering in both val
layouts; ``index`` is the position in that order. Listing uses ``os.scandir`` only (no
per-file stat); a seeded sample of images is decoded as a check. When all 1,000 classes are
present the split's image count must equal the official one; with fewer classes the counts
are only recorded.

The published C-scores (https://pluskid.github.io/structural-regularity/cscores/,
``imagenet-cscores-with-filename.npz``: ``labels``, ``scores``, ``filenames``) cover the
training set and are matched on file base names by :func:`match_cscores_by_filename`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.data.base import ImageDataset, register
from mapd.data.files import IMAGE_EXTENSIONS, check_decodable, require_dir
from mapd.errors import DataError
from mapd.safeload import load_npz

SOURCE = "https://image-net.org (ILSVRC-2012; requires an account, not auto-downloadable)"
HOW_TO_GET = (
    "ImageNet needs a licence: log in at https://image-net.org, download ILSVRC2012_img_train.tar "
    "and ILSVRC2012_img_val.tar, extract the training class tars to ROOT/train/<wnid>/ and the "
    "validation images to ROOT/val/ (into ROOT/val/<wnid>/ folders, or flat next to "
    "ROOT/LOC_val_solution.csv from the Kaggle 'ImageNet Object Localization Challenge')."
)
EXPECTED = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (or flat ROOT/val/*.JPEG)"
FULL_CLASSES = 1000
FULL_SIZES = {"train": 1_281_167, "val": 50_000}
DECODE_SAMPLE = 32
WNID = re.compile(r"n\d{8}")
KAGGLE_SUBDIR = Path("ILSVRC") / "Data" / "CLS-LOC"
VAL_CSV = "LOC_val_solution.csv"
SYNSETS = "LOC_synset_mapping.txt"


@register(
    "imagenet",
    splits=("train", "val"),
    sizes={"train": 1281167, "val": 50000},
    description="ImageNet ILSVRC-2012 (1,000 classes, 1.28M train / 50k val images; file-backed)",
    source=SOURCE,
)
def load_imagenet(split: str, *, root: str | Path | None = None) -> ImageDataset:
    """Load the ``train`` or ``val`` split of ILSVRC-2012 as a file-backed data set.

    Args:
        split: ``"train"`` or ``"val"``.
        root: the folder holding ``train/`` and ``val/`` (or the Kaggle ``ILSVRC/`` tree).

    Returns:
        labels (N,) int64 in sorted-wnid order, ``paths`` (N,) absolute str, ``index`` (N,) int64
        = 0..N-1 in row order (see the module docstring); ``info`` has the wnids and the checks.
    """
    base = require_dir(root, dataset="imagenet", expected=EXPECTED, how_to_get=HOW_TO_GET)
    base = base.resolve()
    images_root = _images_root(base)
    wnids, class_source = _wnids(base, images_root, split)
    classes, names_source = _class_names(base, images_root, wnids)

    if split == "train":
        paths, labels, layout = _list_train(images_root / "train", wnids)
    else:
        paths, labels, layout = _list_val(images_root / "val", base, images_root, wnids)

    n = len(paths)
    if n == 0:
        raise DataError(f"imagenet/{split}: no images found ({layout}). {HOW_TO_GET}")
    if len(wnids) == FULL_CLASSES:
        if n != FULL_SIZES[split]:
            raise DataError(
                f"imagenet/{split}: all {FULL_CLASSES} classes are present but {layout} has {n:,} "
                f"images; ILSVRC-2012 has {FULL_SIZES[split]:,} (incomplete or extra files?)"
            )
        size_check = f"full data set: {n:,} images as documented"
    else:
        size_check = f"{len(wnids)} of {FULL_CLASSES} classes: count {n:,} recorded, not checked"
    check_decodable(paths, what=f"imagenet/{split}", sample=DECODE_SAMPLE)

    return ImageDataset(
        name="imagenet",
        split=split,
        labels=labels,
        classes=classes,
        index=np.arange(n, dtype=np.int64),
        paths=np.array(paths, dtype=object),
        info={
            "root": str(base),
            "images_root": str(images_root),
            "source": SOURCE,
            "layout": layout,
            "n_images": n,
            "n_classes": len(wnids),
            "classes_from": class_source,
            "class_names_from": names_source,
            "size_check": size_check,
            "checked": f"listed with os.scandir; decoded {min(n, DECODE_SAMPLE)} (seeded sample)",
            "wnids": list(wnids),
        },
    )


# --- listing ----------------------------------------------------------------------------------


def _images_root(base: Path) -> Path:
    """``base`` itself, or the Kaggle ``ILSVRC/Data/CLS-LOC`` folder inside it."""
    if (base / "train").is_dir() or (base / "val").is_dir():
        return base
    if (base / KAGGLE_SUBDIR).is_dir():
        return base / KAGGLE_SUBDIR
    raise DataError(
        f"imagenet: {base} has neither train/ nor val/. Expected {EXPECTED}. {HOW_TO_GET}"
    )


def _find_meta(name: str, base: Path, images_root: Path) -> Path | None:
    for folder in (base, images_root):
        if (folder / name).is_file():
            return folder / name
    return None


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _wnids(base: Path, images_root: Path, split: str) -> tuple[tuple[str, ...], str]:
    """Sorted class wnids: the training folders, or the synset file when train/ is absent."""
    train = images_root / "train"
    if train.is_dir():
        with os.scandir(train) as it:
            dirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        bad = [d for d in dirs if not WNID.fullmatch(d)]
        if bad:
            raise DataError(
                f"imagenet: {train} has folder(s) that are not WordNet ids (n + 8 digits): "
                f"{', '.join(map(repr, bad[:5]))}"
            )
        if not dirs:
            raise DataError(f"imagenet: {train} has no class folders. Expected {EXPECTED}")
        return tuple(dirs), f"{train} (class folders)"
    synsets = _find_meta(SYNSETS, base, images_root)
    if split == "train" or synsets is None:
        raise DataError(
            f"imagenet: {train} does not exist; it (or {SYNSETS}) defines the classes. "
            f"Expected {EXPECTED}. {HOW_TO_GET}"
        )
    return tuple(sorted(_read_synsets(synsets))), str(synsets)


def _read_synsets(path: Path) -> dict[str, str]:
    """``LOC_synset_mapping.txt``: wnid -> description (``"tench, Tinca tinca"``)."""
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, desc = line.strip().partition(" ")
        if not WNID.fullmatch(wnid) or not desc.strip():
            raise DataError(f"imagenet: {path} line {i} is not '<wnid> <name>, ...': {line!r}")
        out[wnid] = desc.strip()
    return out


def _class_names(
    base: Path, images_root: Path, wnids: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    synsets = _find_meta(SYNSETS, base, images_root)
    if synsets is None:
        return wnids, "wnids (no LOC_synset_mapping.txt)"
    table = _read_synsets(synsets)
    names = [table.get(w, w).split(",")[0].strip() for w in wnids]
    counts = Counter(names)
    # Unique names keep per-class summaries from merging classes that share a name ("crane").
    names = [f"{n} ({w})" if counts[n] > 1 else n for n, w in zip(names, wnids, strict=True)]
    return tuple(names), str(synsets)


def _list_train(train: Path, wnids: tuple[str, ...]) -> tuple[list[str], np.ndarray, str]:
    paths: list[str] = []
    counts = []
    for wnid in wnids:
        folder = os.path.join(train, wnid)
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if _is_image(e.name))
        paths.extend([os.path.join(folder, name) for name in names])
        counts.append(len(names))
    labels = np.repeat(np.arange(len(wnids), dtype=np.int64), counts)
    return paths, labels, f"{train}/<wnid>/*.JPEG"


def _list_val(
    val: Path, base: Path, images_root: Path, wnids: tuple[str, ...]
) -> tuple[list[str], np.ndarray, str]:
    if not val.is_dir():
        raise DataError(f"imagenet: {val} does not exist. Expected {EXPECTED}. {HOW_TO_GET}")
    label_of = {w: i for i, w in enumerate(wnids)}
    with os.scandir(val) as it:
        entries = [(e.name, e.is_dir()) for e in it if not e.name.startswith(".")]
    dirs = sorted(name for name, is_dir in entries if is_dir)
    files = sorted(name for name, is_dir in entries if not is_dir and _is_image(name))

    if dirs:
        if files:
            raise DataError(
                f"imagenet: {val} mixes class folders with loose images (e.g. {files[0]}); use "
                f"either val/<wnid>/*.JPEG or a flat val/ with {VAL_CSV}"
            )
        unknown = [d for d in dirs if d not in label_of]
        if unknown:
            raise DataError(
                f"imagenet: validation class folder(s) {', '.join(map(repr, unknown[:5]))} in "
                f"{val} are not training classes (not among the {len(wnids)} wnids of train/)"
            )
        rows: list[tuple[str, str, int]] = []
        for wnid in dirs:
            folder = os.path.join(val, wnid)
            with os.scandir(folder) as it:
                rows.extend((e.name, folder, label_of[wnid]) for e in it if _is_image(e.name))
        rows.sort()
        paths = [os.path.join(folder, name) for name, folder, _ in rows]
        return paths, np.array([lab for _, _, lab in rows], dtype=np.int64), f"{val}/<wnid>/*"

    csv = _find_meta(VAL_CSV, base, images_root)
    if csv is None:
        raise DataError(
            f"imagenet: {val} has no class folders, and a flat val/ needs {VAL_CSV} in {base} "
            f"for its labels. {HOW_TO_GET}"
        )
    wnid_of = _read_val_solution(csv)
    stems = {os.path.splitext(name)[0]: name for name in files}
    no_row = sorted(set(stems) - set(wnid_of))
    if no_row:
        raise DataError(
            f"imagenet: {len(no_row)} image(s) in {val} have no row in {csv}: "
            f"{', '.join(stems[s] for s in no_row[:5])}"
        )
    no_file = sorted(set(wnid_of) - set(stems))
    if no_file:
        raise DataError(
            f"imagenet: {len(no_file)} ImageId(s) of {csv} have no image in {val}: "
            f"{', '.join(no_file[:5])}"
        )
    unknown = sorted({w for w in wnid_of.values() if w not in label_of})
    if unknown:
        raise DataError(
            f"imagenet: {csv} labels images with wnid(s) {', '.join(unknown[:5])} that are not "
            f"training classes (not among the {len(wnids)} wnids of train/)"
        )
    paths = [os.path.join(val, name) for name in files]
    labels = np.array([label_of[wnid_of[os.path.splitext(n)[0]]] for n in files], dtype=np.int64)
    return paths, labels, f"{val}/*.JPEG + {csv.name}"


def _read_val_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv``: ImageId -> wnid (first token of PredictionString)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises several types for a malformed CSV
        raise DataError(f"imagenet: cannot parse {path}: {e}") from e
    for col in ("ImageId", "PredictionString"):
        if col not in df.columns:
            raise DataError(
                f"imagenet: {path} has no {col!r} column; it has {', '.join(df.columns)}"
            )
    out: dict[str, str] = {}
    for i, (image_id, pred) in enumerate(zip(df["ImageId"], df["PredictionString"], strict=True)):
        tokens = pred.split()
        if not tokens or not WNID.fullmatch(tokens[0]):
            raise DataError(
                f"imagenet: {path} line {i + 2}: PredictionString {pred!r} does not start with "
                f"a wnid"
            )
        image_id = image_id.strip()
        if image_id in out:
            raise DataError(f"imagenet: {path}: ImageId {image_id!r} appears more than once")
        out[image_id] = tokens[0]
    return out


# --- published C-scores -----------------------------------------------------------------------


def _load_cscore_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(
            f"imagenet C-scores: {path} does not exist; download "
            f"imagenet-cscores-with-filename.npz from "
            f"https://pluskid.github.io/structural-regularity/cscores/"
        )

    # file names may be an object array: read as plain data, never with allow_pickle=True
    z = load_npz(path, what="imagenet C-scores")
    missing = [k for k in ("labels", "scores", "filenames") if k not in z]
    if missing:
        raise DataError(
            f"imagenet C-scores: {path} lacks key(s) {', '.join(missing)}; has {', '.join(z)}"
        )
    return {k: z[k] for k in ("labels", "scores", "filenames")}


def _basename(name: Any) -> str:
    text = name.decode("utf-8") if isinstance(name, bytes | np.bytes_) else str(name)
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def match_cscores_by_filename(dataset: ImageDataset, npz_path: str | Path) -> np.ndarray:
    """C-score of every example of ``dataset``, matched on the image file's base name.

    ``npz_path`` is the published ``imagenet-cscores-with-filename.npz`` (keys ``labels`` (M,),
    ``scores`` (M,), ``filenames`` (M,) bytes or str such as ``n01440764_10026.JPEG``, possibly
    with a directory prefix). Labels in the file follow the sorted-wnid order of the full data
    set: with all of its classes present the labels must be equal; with a subset of classes each
    of the data set's classes must map to one file label, one-to-one and in increasing order.

    Returns:
        (N,) float64 scores in the row order of ``dataset``.

    Raises:
        DataError: the data set is not file-backed, the file is malformed or has duplicate
            names, examples are missing from the file, or matched labels disagree.
    """
    path = Path(npz_path).expanduser()
    what = f"C-scores {path} for {dataset.name}/{dataset.split}"
    if dataset.paths is None:
        raise DataError(f"{what}: matching by file name needs a file-backed data set (paths)")
    z = _load_cscore_npz(path)
    labels, scores, filenames = (
        np.asarray(z[k]).reshape(-1) for k in ("labels", "scores", "filenames")
    )
    if not len(labels) == len(scores) == len(filenames):
        raise DataError(
            f"{what}: labels, scores and filenames have {len(labels)}, {len(scores)}, "
            f"{len(filenames)} entries"
        )
    position: dict[str, int] = {}
    for i, name in enumerate(filenames):
        base = _basename(name)
        if base in position:
            raise DataError(f"{what}: file name {base!r} appears more than once in the file")
        position[base] = i

    names = [os.path.basename(str(p)) for p in dataset.paths]
    missing = [n for n in names if n not in position]
    if missing:
        raise DataError(
            f"{what}: {len(missing):,} of {len(names):,} examples have no C-score in the file "
            f"(matched on file name), e.g. {', '.join(missing[:5])}"
        )
    pos = np.fromiter((position[n] for n in names), dtype=np.int64, count=len(names))
    file_labels = labels[pos].astype(np.int64)
    _check_labels(dataset, names, file_labels, int(labels.max()) + 1 if len(labels) else 0, what)
    return scores[pos].astype(np.float64)


def _check_labels(
    dataset: ImageDataset, names: list[str], file_labels: np.ndarray, file_classes: int, what: str
) -> None:
    ours = dataset.labels
    if dataset.num_classes == file_classes:
        expected = ours
        rule = "equal labels (all classes present)"
    else:
        # A subset of the classes: map each of our classes to its most common file label.
        expected = np.full(dataset.num_classes, -1, dtype=np.int64)
        for c in np.unique(ours):
            expected[c] = np.bincount(file_labels[ours == c]).argmax()
        mapped = expected[np.unique(ours)]
        if len(np.unique(mapped)) != len(mapped) or np.any(np.diff(mapped) <= 0):
            raise DataError(
                f"{what}: the data set's classes map to file labels {mapped.tolist()[:10]}, which "
                f"is not one-to-one and increasing (both should follow sorted wnid order)"
            )
        expected = expected[ours]
        rule = "one file label per class (class subset)"
    bad = np.flatnonzero(expected != file_labels)
    if len(bad):
        shown = ", ".join(
            f"{names[i]} (data set {int(ours[i])}, file {int(file_labels[i])})" for i in bad[:5]
        )
        raise DataError(
            f"{what}: labels disagree for {len(bad):,} matched example(s), rule: {rule}; "
            f"e.g. {shown}"
        )
