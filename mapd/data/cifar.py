"""CIFAR-10 and CIFAR-100 from the official "python version" files.

Layouts read (``ROOT`` = the ``root`` option):

- ``ROOT/cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
  ``batches.meta`` (``label_names``).
- ``ROOT/cifar-100-python/``: ``train``, ``test``, ``meta`` (``fine_label_names``,
  ``coarse_label_names``).

Each data file is a pickled dict with ``data`` uint8 (N, 3072), each row one image in CHW order
(1024 red, 1024 green, 1024 blue values, rows top to bottom), and ``labels`` (CIFAR-10) or
``fine_labels`` / ``coarse_labels`` (CIFAR-100). Files written by Python 2 have bytes keys,
re-pickled ones str keys; both are read. Every file's md5 is compared with the official one:
a re-encoded copy (e.g. the JPEG-derived CIFAR-10 in ``../shared``) is refused unless
``reencoded_ok=True``, and the outcome is recorded in ``info["checksum"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mapd.data.base import ImageDataset, register
from mapd.data.download import download_archive
from mapd.data.files import md5sum
from mapd.errors import ConfigError, DataError
from mapd.safeload import load_pickle

BASE_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class CifarSource:
    """Where one CIFAR variant comes from and what its official files look like."""

    name: str
    folder: str
    archive: str
    archive_md5: str
    split_files: dict[str, tuple[str, ...]]
    meta_file: str
    file_md5: dict[str, str]
    rows_per_file: dict[str, int]  # data file -> number of images in the official file

    @property
    def url(self) -> str:
        return BASE_URL + self.archive


CIFAR10 = CifarSource(
    name="cifar10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    split_files={
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    },
    meta_file="batches.meta",
    file_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    rows_per_file={f"data_batch_{i}": 10000 for i in range(1, 6)} | {"test_batch": 10000},
)

CIFAR100 = CifarSource(
    name="cifar100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    split_files={"train": ("train",), "test": ("test",)},
    meta_file="meta",
    file_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    rows_per_file={"train": 50000, "test": 10000},
)

IMAGE_SHAPE = (32, 32, 3)


@register(
    "cifar10",
    splits=("train", "test"),
    sizes={"train": 50000, "test": 10000},
    description="CIFAR-10: 32x32 colour images, 10 classes, 50,000 train / 10,000 test",
    source=f"{CIFAR10.url} (md5 {CIFAR10.archive_md5}), extracted into root",
)
def load_cifar10(
    split: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    reencoded_ok: bool = False,
) -> ImageDataset:
    """Load one split of CIFAR-10 from ``root/cifar-10-batches-py``.

    Args:
        split: ``"train"`` (data_batch_1..5 in order) or ``"test"`` (test_batch).
        root: directory that contains ``cifar-10-batches-py/``.
        download: fetch and extract the official archive into ``root`` if files are missing.
        reencoded_ok: accept files whose md5 differs from the official one (e.g. re-encoded
            pixels); recorded as ``info["checksum"]``.

    Returns:
        ImageDataset with ``images`` uint8 (N, 32, 32, 3) HWC, ``labels`` int64 (N,) in [0, 10),
        ``index`` = position in the official order (0..N-1).
    """
    return _load(
        CIFAR10,
        split,
        root=root,
        download=download,
        reencoded_ok=reencoded_ok,
        label_key="labels",
        names_key="label_names",
        num_classes=10,
    )


@register(
    "cifar100",
    splits=("train", "test"),
    sizes={"train": 50000, "test": 10000},
    description="CIFAR-100: 32x32 colour images, 100 fine / 20 coarse classes, 50,000 / 10,000",
    source=f"{CIFAR100.url} (md5 {CIFAR100.archive_md5}), extracted into root",
)
def load_cifar100(
    split: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    reencoded_ok: bool = False,
    label_type: str = "fine",
) -> ImageDataset:
    """Load one split of CIFAR-100 from ``root/cifar-100-python``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: directory that contains ``cifar-100-python/``.
        download: fetch and extract the official archive into ``root`` if files are missing.
        reencoded_ok: accept files whose md5 differs from the official one.
        label_type: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).

    Returns:
        ImageDataset with ``images`` uint8 (N, 32, 32, 3) HWC, ``labels`` int64 (N,),
        ``index`` = position in the official order (0..N-1).
    """
    if label_type not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: label_type must be 'fine' or 'coarse', got {label_type!r}")
    ds = _load(
        CIFAR100,
        split,
        root=root,
        download=download,
        reencoded_ok=reencoded_ok,
        label_key=f"{label_type}_labels",
        names_key=f"{label_type}_label_names",
        num_classes=100 if label_type == "fine" else 20,
    )
    ds.info["label_type"] = label_type
    return ds


def _how_to_get(src: CifarSource, root: Path | None) -> str:
    where = f"into {root}" if root is not None else "into the root directory"
    return (
        f"Get the official python version: run with download=True on a host with internet, or "
        f"download {src.url} (md5 {src.archive_md5}) and extract it {where}"
    )


def _load(
    src: CifarSource,
    split: str,
    *,
    root: str | Path | None,
    download: bool,
    reencoded_ok: bool,
    label_key: str,
    names_key: str,
    num_classes: int,
) -> ImageDataset:
    if split not in src.split_files:
        raise ConfigError(f"{src.name}: no split {split!r}; it has {', '.join(src.split_files)}")
    if root is None:
        raise DataError(
            f"{src.name}: no root directory given; pass root=DIR where DIR contains "
            f"{src.folder}/. {_how_to_get(src, None)}"
        )
    root = Path(root).expanduser()
    base = root / src.folder
    needed = (*src.split_files[split], src.meta_file)

    missing = [f for f in needed if not (base / f).is_file()]
    if missing and download:
        download_archive(src.url, root=root, md5=src.archive_md5, filename=src.archive)
        missing = [f for f in needed if not (base / f).is_file()]
    if missing:
        raise DataError(f"{src.name}: missing file {base / missing[0]}. {_how_to_get(src, root)}")

    mismatched = []
    for f in needed:
        actual = md5sum(base / f)
        if actual != src.file_md5[f]:
            if not reencoded_ok:
                raise DataError(
                    f"{src.name}: checksum mismatch for {base / f}: expected md5 "
                    f"{src.file_md5[f]} (official file), got {actual}. If this is a deliberate "
                    f"re-encoding of the data (e.g. made by ../shared/tools/cifar10_from_jpeg.py), "
                    f"pass reencoded_ok=True; otherwise re-download the data"
                )
            mismatched.append(f)

    meta = _read_pickle(base / src.meta_file, src.name)
    if names_key not in meta:
        raise DataError(f"{src.name}: {base / src.meta_file} has no {names_key!r} entry")
    classes = tuple(_text(c) for c in meta[names_key])
    if len(classes) != num_classes:
        raise DataError(
            f"{src.name}: {base / src.meta_file} lists {len(classes)} {names_key}, "
            f"expected {num_classes}"
        )

    images, labels = [], []
    for f in src.split_files[split]:
        x, y = _read_batch(base / f, src, label_key=label_key, num_classes=num_classes)
        images.append(x)
        labels.append(y)
    labels_all = np.concatenate(labels)
    return ImageDataset(
        name=src.name,
        split=split,
        labels=labels_all,
        classes=classes,
        index=np.arange(len(labels_all), dtype=np.int64),
        images=np.concatenate(images),
        info={
            "source": f"official CIFAR python files ({src.url})",
            "root": str(base),
            "files": list(needed),
            "checksum": "mismatch accepted (reencoded_ok)" if mismatched else "ok",
            "checksum_mismatch": mismatched,
        },
    )


def _read_pickle(path: Path, dataset: str) -> dict[str, Any]:
    """Unpickle one official file as plain data (no code runs, whatever the file holds); keys
    come back as str (they are bytes in Python 2 pickles)."""
    obj = load_pickle(path, what=dataset, encoding="latin1")
    if not isinstance(obj, dict):
        raise DataError(
            f"{dataset}: corrupt file {path}: expected a pickled dict, got {type(obj).__name__}"
        )
    return {_text(k): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_batch(
    path: Path, src: CifarSource, *, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One data file -> images uint8 (N, 32, 32, 3) HWC and labels int64 (N,)."""
    d = _read_pickle(path, src.name)
    for key in ("data", label_key):
        if key not in d:
            raise DataError(f"{src.name}: {path} has no {key!r} entry (keys: {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key])
    n = src.rows_per_file[path.name]
    if data.dtype != np.uint8 or data.shape != (n, 3072):
        raise DataError(
            f"{src.name}: {path}: 'data' must be uint8 ({n}, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{src.name}: {path}: {label_key!r} must be {n} integers, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"{src.name}: {path}: {label_key!r} outside [0, {num_classes}): "
            f"min {labels.min()}, max {labels.max()}"
        )
    # rows are channel-major (3 x 32 x 32); the rest of mapd uses HWC
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)
