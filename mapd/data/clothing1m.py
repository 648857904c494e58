"""Clothing1M (Xiao et al., CVPR 2015): ~1M clothing images with noisy web labels, 14 classes.

Where it comes from: the authors distribute it on request (see https://github.com/Cysu/noisy_label:
e-mail the first author for the download link and accept the terms of use), so mapd cannot
download it. Extract the image archives and the annotation files so that::

    ROOT/images/<d>/<dd>/<name>.jpg         the images; keys in the text files are relative to ROOT
    ROOT/noisy_label_kv.txt                 "<key> <label>" lines, noisy labels (web text)
    ROOT/clean_label_kv.txt                 "<key> <label>" lines, human-verified labels
    ROOT/noisy_train_key_list.txt           one key per line (1,000,000 keys)
    ROOT/clean_train_key_list.txt           (47,570 keys)
    ROOT/clean_val_key_list.txt             (14,313 keys)
    ROOT/clean_test_key_list.txt            (10,526 keys)
    ROOT/category_names_eng.txt             14 class names, line i = label i

The text files may also sit in ``ROOT/annotations/`` (a layout several code bases use); keys
still resolve against ``ROOT``. Labels are integers 0..13.

Splits (rows in the key list's order; ``index`` = position 0..N-1 in that order):

- ``noisy_train``: the noisy key list with its noisy labels (the official list, unchanged).
- ``clean_train`` / ``clean_val`` / ``clean_test``: those key lists with their clean labels.
- ``dirty_train``: the training set of prioritized training (RHO-Loss, MAP-D Sec. 3.4) =
  clean_train keys, then noisy_train keys, duplicates dropped, **minus every key listed in
  clean_val or clean_test**. The label is the clean label where the key has one (clean_train
  keys), else the noisy label. RHO-Loss's code also concatenates clean_val into its "dirty"
  set (47,570 + 14,313 + 1,000,000 = 1,061,883, the "~1.06M images"); we leave clean_val out
  because MAP-D draws its probe examples from the clean validation list and clean_test is the
  test set, so neither may leak into training. ``attrs``: ``label_source`` ("clean"/"noisy"),
  ``both_labels`` (bool: the key has a noisy and a clean label) and ``noisy_label_differs``
  (bool: both labels exist and differ; False where only one exists).

The pipeline's roles: ``train`` = ``dirty_train`` (what an audit or prioritized training runs
on), ``val`` = ``clean_val``, ``test`` = ``clean_test``.

Every split has ``attrs["label_source"]``. Checks: every listed key must have a label in the
split's label file; listed image files must exist (all of them for splits of at most 100,000
images, a seeded sample of 1,000 otherwise) and a seeded sample is decoded. When all seven
annotation files are present and the noisy key list has at least 900,000 keys (a complete
download rather than a hand-made subset), the four key lists must have the documented sizes
above; otherwise their sizes are only recorded in ``info``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mapd.data.base import ImageDataset, register
from mapd.data.files import check_decodable, check_files_exist, require_dir
from mapd.errors import DataError

SOURCE = "https://github.com/Cysu/noisy_label (Clothing1M is obtained from its authors on request)"
HOW_TO_GET = (
    "Clothing1M cannot be downloaded automatically: request it from its authors (see "
    "https://github.com/Cysu/noisy_label), extract images/ and the annotation files "
    "(noisy_label_kv.txt, clean_label_kv.txt, *_key_list.txt, category_names_eng.txt) into ROOT."
)
EXPECTED = "ROOT/images/... plus the Clothing1M annotation .txt files"
# the official lists and dirty_train, then the roles every mapd step asks for (train / val /
# test): the noisy pool of prioritized training, the clean validation and test lists
ALIASES = {"train": "dirty_train", "val": "clean_val", "test": "clean_test"}
SPLITS = ("noisy_train", "clean_train", "clean_val", "clean_test", "dirty_train", *ALIASES)
NUM_CLASSES = 14
NOISY_KV = "noisy_label_kv.txt"
CLEAN_KV = "clean_label_kv.txt"
CATEGORIES = "category_names_eng.txt"
KEY_LISTS = {
    "noisy_train": "noisy_train_key_list.txt",
    "clean_train": "clean_train_key_list.txt",
    "clean_val": "clean_val_key_list.txt",
    "clean_test": "clean_test_key_list.txt",
}
# Subset sizes of the release (Xiao et al. 2015), checked only on a complete download.
DOCUMENTED_SIZES = {
    "noisy_train_key_list.txt": 1_000_000,
    "clean_train_key_list.txt": 47_570,
    "clean_val_key_list.txt": 14_313,
    "clean_test_key_list.txt": 10_526,
}
FULL_THRESHOLD = 900_000  # noisy keys from which a download counts as complete
EXIST_ALL_UP_TO = 100_000
EXIST_SAMPLE = 1_000
DECODE_SAMPLE = 32


class _Annotations:
    """The annotation text files of one root, each read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Any] = {}

    def path(self, name: str) -> Path | None:
        for folder in (self.root, self.root / "annotations"):
            if (folder / name).is_file():
                return folder / name
        return None

    def folder(self, name: str) -> Path:
        path = self.path(name)
        assert path is not None  # callers require() first
        return path.parent

    def require(self, names: list[str], split: str) -> None:
        missing = [n for n in names if self.path(n) is None]
        if missing:
            raise DataError(
                f"clothing1m/{split}: missing annotation file(s) {', '.join(missing)} in "
                f"{self.root} (or {self.root / 'annotations'}). {HOW_TO_GET}"
            )

    def keys(self, name: str) -> list[str]:
        if name not in self._cache:
            path = self.path(name)
            assert path is not None  # callers require() first
            with open(path, encoding="utf-8") as f:
                self._cache[name] = [s for line in f if (s := line.strip())]
        return self._cache[name]

    def labels(self, name: str) -> dict[str, int]:
        """``<key> <label>`` lines as key -> label; one clear error for a malformed line."""
        if name not in self._cache:
            path = self.path(name)
            assert path is not None
            out: dict[str, int] = {}
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, start=1):
                    parts = line.rsplit(maxsplit=1)
                    if not parts:
                        continue
                    if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= NUM_CLASSES:
                        raise DataError(
                            f"clothing1m: {path} line {i}: expected '<image key> <label 0..13>', "
                            f"got {line.strip()!r}"
                        )
                    key, label = parts[0].strip(), int(parts[1])
                    if out.setdefault(key, label) != label:
                        raise DataError(
                            f"clothing1m: {path}: key {key!r} has two labels, "
                            f"{out[key]} and {label}"
                        )
            self._cache[name] = out
        return self._cache[name]

    def classes(self) -> tuple[str, ...]:
        path = self.path(CATEGORIES)
        assert path is not None
        names = [s for line in path.read_text(encoding="utf-8").splitlines() if (s := line.strip())]
        if len(names) != NUM_CLASSES:
            raise DataError(
                f"clothing1m: {path} has {len(names)} class names; Clothing1M has {NUM_CLASSES}"
            )
        return tuple(names)


@register(
    "clothing1m",
    splits=SPLITS,
    description="Clothing1M: ~1M clothing images with noisy web labels + clean subsets, 14 classes",
    source=SOURCE,
)
def load_clothing1m(split: str, *, root: str | Path | None = None) -> ImageDataset:
    """Load one split of Clothing1M as a file-backed data set.

    Args:
        split: ``noisy_train``, ``clean_train``, ``clean_val``, ``clean_test`` or
            ``dirty_train`` (definitions in the module docstring); ``train``, ``val`` and
            ``test`` (the roles the pipeline steps ask for) are ``dirty_train``,
            ``clean_val`` and ``clean_test``.
        root: the folder holding ``images/`` and the annotation files.

    Returns:
        labels (N,) int64 in 0..13, ``paths`` (N,) absolute str, ``index`` (N,) int64 = 0..N-1,
        ``attrs["label_source"]`` (N,) str; ``dirty_train`` adds ``both_labels`` and
        ``noisy_label_differs`` (N,) bool.
    """
    split = ALIASES.get(split, split)
    base = require_dir(root, dataset="clothing1m", expected=EXPECTED, how_to_get=HOW_TO_GET)
    base = base.resolve()
    ann = _Annotations(base)
    if split == "dirty_train":
        ann.require([*KEY_LISTS.values(), NOISY_KV, CLEAN_KV, CATEGORIES], split)
    else:
        kv = NOISY_KV if split == "noisy_train" else CLEAN_KV
        ann.require([KEY_LISTS[split], kv, CATEGORIES], split)
    classes = ann.classes()
    size_check = _size_check(ann)  # before per-file checks: a short list explains missing rows

    if split == "dirty_train":
        keys, labels, attrs, split_info = _dirty(ann)
    else:
        keys, labels, attrs, split_info = _official(ann, split)
    if not keys:
        raise DataError(f"clothing1m/{split}: the split is empty ({split_info['definition']})")

    paths = [str(base / k) for k in keys]
    what = f"clothing1m/{split}"
    if len(paths) <= EXIST_ALL_UP_TO:
        check_files_exist(paths, what=what)
        exist_note = f"all {len(paths):,} image files exist"
    else:
        rng = np.random.default_rng(0)
        pick = rng.choice(len(paths), size=EXIST_SAMPLE, replace=False)
        check_files_exist([paths[i] for i in pick], what=what)
        exist_note = f"{EXIST_SAMPLE:,} of {len(paths):,} image files exist (seeded sample)"
    check_decodable(paths, what=what, sample=DECODE_SAMPLE)

    return ImageDataset(
        name="clothing1m",
        split=split,
        labels=labels,
        classes=classes,
        index=np.arange(len(keys), dtype=np.int64),
        paths=np.array(paths, dtype=object),
        attrs=attrs,
        info={
            "root": str(base),
            "annotations": str(ann.folder(CATEGORIES)),
            "source": SOURCE,
            **split_info,
            "size_check": size_check,
            "checked": (
                f"every key has a label; {exist_note}; decoded "
                f"{min(len(paths), DECODE_SAMPLE)} (seeded sample)"
            ),
        },
    )


def _missing_labels(keys: list[str], table: dict[str, int], list_file: str, kv_file: str) -> None:
    missing = [k for k in keys if k not in table]
    if missing:
        raise DataError(
            f"clothing1m: {len(missing):,} key(s) listed in {list_file} are absent from "
            f"{kv_file}: {', '.join(missing[:5])}"
        )


def _official(
    ann: _Annotations, split: str
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """An official key list with the labels of its kind (noisy list -> noisy labels)."""
    list_file = KEY_LISTS[split]
    source = "noisy" if split == "noisy_train" else "clean"
    kv_file = NOISY_KV if source == "noisy" else CLEAN_KV
    keys = ann.keys(list_file)
    table = ann.labels(kv_file)
    _missing_labels(keys, table, list_file, kv_file)
    labels = np.fromiter((table[k] for k in keys), dtype=np.int64, count=len(keys))
    info: dict[str, Any] = {
        "definition": f"{list_file} with labels from {kv_file}",
        "n_images": len(keys),
        "duplicate_keys": len(keys) - len(set(keys)),
    }
    if split == "noisy_train":
        # Record (not remove) overlap with the held-out clean lists: noisy_train is official.
        held = _held_out(ann)
        if held is not None:
            info["keys_also_in_clean_val_or_test"] = sum(k in held for k in set(keys))
    return keys, labels, {"label_source": np.full(len(keys), source)}, info


def _held_out(ann: _Annotations) -> set[str] | None:
    names = [KEY_LISTS["clean_val"], KEY_LISTS["clean_test"]]
    if any(ann.path(n) is None for n in names):
        return None
    return set(ann.keys(names[0])) | set(ann.keys(names[1]))


def _dirty(
    ann: _Annotations,
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """clean_train then noisy_train, deduplicated, minus clean_val/clean_test keys."""
    clean_list, noisy_list = KEY_LISTS["clean_train"], KEY_LISTS["noisy_train"]
    clean_keys, noisy_keys = ann.keys(clean_list), ann.keys(noisy_list)
    clean, noisy = ann.labels(CLEAN_KV), ann.labels(NOISY_KV)
    _missing_labels(clean_keys, clean, clean_list, CLEAN_KV)
    _missing_labels(noisy_keys, noisy, noisy_list, NOISY_KV)
    held = _held_out(ann)
    assert held is not None  # required by the caller

    keys: list[str] = []
    seen: set[str] = set()
    excluded: set[str] = set()
    dropped = 0
    for k in (*clean_keys, *noisy_keys):
        if k in held:
            excluded.add(k)
        elif k in seen:
            dropped += 1
        else:
            seen.add(k)
            keys.append(k)
    has_clean = np.fromiter((k in clean for k in keys), dtype=bool, count=len(keys))
    has_noisy = np.fromiter((k in noisy for k in keys), dtype=bool, count=len(keys))
    labels = np.fromiter(
        (clean[k] if k in clean else noisy[k] for k in keys), dtype=np.int64, count=len(keys)
    )
    noisy_labels = np.fromiter((noisy.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    both = has_clean & has_noisy
    differs = both & (noisy_labels != labels)
    attrs = {
        "label_source": np.where(has_clean, "clean", "noisy"),
        "both_labels": both,
        "noisy_label_differs": differs,
    }
    info = {
        "definition": (
            f"({clean_list} + {noisy_list}) deduplicated, minus keys of "
            f"{KEY_LISTS['clean_val']} and {KEY_LISTS['clean_test']}; clean label where one "
            f"exists, else noisy"
        ),
        "n_images": len(keys),
        "n_clean_label": int(has_clean.sum()),
        "n_noisy_label": int((~has_clean).sum()),
        "n_both_labels": int(both.sum()),
        "n_noisy_label_differs": int(differs.sum()),
        "excluded_clean_val_or_test_keys": len(excluded),
        "duplicates_dropped": dropped,
    }
    return keys, labels, attrs, info


def _size_check(ann: _Annotations) -> dict[str, Any]:
    """Key-list sizes; compared with the documented sizes on a complete download."""
    names = [*KEY_LISTS.values(), NOISY_KV, CLEAN_KV, CATEGORIES]
    present = [n for n in names if ann.path(n) is not None]
    sizes = {n: len(ann.keys(n)) for n in KEY_LISTS.values() if n in present}
    complete = len(present) == len(names) and sizes[KEY_LISTS["noisy_train"]] >= FULL_THRESHOLD
    if not complete:
        return {"status": "subset or partial annotations: sizes recorded, not checked", **sizes}
    wrong = {n: (sizes[n], want) for n, want in DOCUMENTED_SIZES.items() if sizes[n] != want}
    if wrong:
        shown = ", ".join(
            f"{n} has {got:,} keys (documented {want:,})" for n, (got, want) in wrong.items()
        )
        raise DataError(f"clothing1m: {ann.root} looks like a complete download but {shown}")
    return {"status": "complete download: key-list sizes match the documented sizes", **sizes}
