"""MNIST and Fashion-MNIST from the official idx files.

Files (``.gz`` or uncompressed): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, looked up first in torchvision's layout
``ROOT/MNIST/raw/`` (``ROOT/FashionMNIST/raw/``) and then directly in ``ROOT``.

idx format: a big-endian uint32 magic number (2051 for an image file, 2049 for a label file:
0x08 = unsigned bytes in the third byte, the number of dimensions in the fourth), one big-endian
uint32 per dimension, then the values. The parser checks the magic number and that the file
holds exactly as many bytes as the header announces, so a truncated file is an error.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapd.data.base import ImageDataset, register
from mapd.data.download import download_file
from mapd.data.files import md5sum
from mapd.errors import ConfigError, DataError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# Debian's dataset-fashion-mnist package puts the four .gz files here.
FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class IdxSource:
    """Where one idx-format data set comes from."""

    name: str
    subdir: str  # torchvision's folder name under root
    mirrors: tuple[str, ...]
    gz_md5: dict[str, str]  # official .gz file name -> md5
    classes: tuple[str, ...]


MNIST = IdxSource(
    name="mnist",
    subdir="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    gz_md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    classes=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = IdxSource(
    name="fashion_mnist",
    subdir="FashionMNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    gz_md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)


def read_idx(path: str | Path, *, magic: int) -> np.ndarray:
    """Parse one unsigned-byte idx file (``.gz`` or uncompressed) into a uint8 array.

    Args:
        path: the file.
        magic: the expected magic number (2051 images, 2049 labels).

    Returns:
        uint8 array of the shape in the header, e.g. (N, 28, 28) or (N,).

    Raises:
        DataError: unreadable / corrupt gzip, wrong magic number, or a size that does not match
            the header (truncated or trailing bytes).
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read idx file {path}: {e}") from e
    if len(raw) < 4:
        raise DataError(f"idx file {path} is truncated: {len(raw)} bytes, no header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(
            f"{path} is not the expected idx file: magic number {found}, expected {magic}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {path} is truncated: {len(raw)} bytes, header needs {header}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"idx file {path} is {problem}: header says shape {dims} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


@register(
    "mnist",
    splits=("train", "test"),
    sizes={"train": 60000, "test": 10000},
    description="MNIST handwritten digits: 28x28 grey, 10 classes, 60,000 train / 10,000 test",
    source=f"official idx files ({MNIST.mirrors[0]}), in root/MNIST/raw/ or root/",
)
def load_mnist(
    split: str, *, root: str | Path | None = None, download: bool = False
) -> ImageDataset:
    """Load one split of MNIST.

    Args:
        split: ``"train"`` or ``"test"``.
        root: directory with the idx files in ``MNIST/raw/`` or directly in it.
        download: fetch the official ``.gz`` files into ``root/MNIST/raw/`` if they are missing.

    Returns:
        ImageDataset with ``images`` uint8 (N, 28, 28, 1), ``labels`` int64 (N,) in [0, 10),
        ``index`` = position in the idx file (0..N-1).
    """
    if root is None:
        raise DataError(
            f"mnist: no root directory given; pass root=DIR with the idx files in DIR/MNIST/raw/ "
            f"or DIR/. {_how_to_get(MNIST, None)}"
        )
    return _load(MNIST, split, root=Path(root).expanduser(), download=download)


@register(
    "fashion_mnist",
    splits=("train", "test"),
    sizes={"train": 60000, "test": 10000},
    description="Fashion-MNIST: 28x28 grey product photos, 10 classes, 60,000 / 10,000",
    source=(
        "Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), or the "
        f"official idx files ({FASHION_MNIST.mirrors[0]}) in root/FashionMNIST/raw/ or root/"
    ),
)
def load_fashion_mnist(
    split: str, *, root: str | Path | None = None, download: bool = False
) -> ImageDataset:
    """Load one split of Fashion-MNIST.

    Args:
        split: ``"train"`` or ``"test"``.
        root: directory with the idx files in ``FashionMNIST/raw/`` or directly in it; default
            ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
        download: fetch the official ``.gz`` files into ``root/FashionMNIST/raw/`` if missing.

    Returns:
        ImageDataset with ``images`` uint8 (N, 28, 28, 1), ``labels`` int64 (N,) in [0, 10).
    """
    if root is None:
        if not FASHION_MNIST_DEFAULT_ROOT.is_dir():
            raise DataError(
                f"fashion_mnist: no root directory given and {FASHION_MNIST_DEFAULT_ROOT} does not "
                f"exist. Install the Debian package dataset-fashion-mnist (apt-get install "
                f"dataset-fashion-mnist), or pass root=DIR. {_how_to_get(FASHION_MNIST, None)}"
            )
        root = FASHION_MNIST_DEFAULT_ROOT
    return _load(FASHION_MNIST, split, root=Path(root).expanduser(), download=download)


def _how_to_get(src: IdxSource, root: Path | None) -> str:
    where = root / src.subdir / "raw" if root is not None else f"ROOT/{src.subdir}/raw"
    return (
        f"Get the official idx files: run with download=True on a host with internet, or download "
        f"{', '.join(src.gz_md5)} from {src.mirrors[0]} into {where}"
    )


def _find(src: IdxSource, root: Path, stem: str) -> Path | None:
    """The first of root/<subdir>/raw/<stem>[.gz], root/<stem>[.gz] that exists."""
    for folder in (root / src.subdir / "raw", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load(src: IdxSource, split: str, *, root: Path, download: bool) -> ImageDataset:
    if split not in SPLIT_PREFIX:
        raise ConfigError(f"{src.name}: no split {split!r}; it has {', '.join(SPLIT_PREFIX)}")
    prefix = SPLIT_PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = [_find(src, root, s) for s in stems]
    if None in found and download:
        for stem, path in zip(stems, found, strict=True):
            if path is None:
                _download(src, stem + ".gz", root / src.subdir / "raw")
        found = [_find(src, root, s) for s in stems]
    for stem, path in zip(stems, found, strict=True):
        if path is None:
            raise DataError(
                f"{src.name}: cannot find {stem}[.gz] in {root / src.subdir / 'raw'} or {root}. "
                f"{_how_to_get(src, root)}"
            )
    image_path, label_path = found
    assert image_path is not None and label_path is not None

    images = read_idx(image_path, magic=IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{src.name}: {image_path} holds images of shape {images.shape[1:]}, not (28, 28)"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{src.name}: {image_path} has {len(images)} images but {label_path} has "
            f"{len(labels)} labels"
        )
    if len(labels) and labels.max() >= len(src.classes):
        raise DataError(
            f"{src.name}: {label_path} has label {labels.max()}, outside [0, {len(src.classes)})"
        )
    return ImageDataset(
        name=src.name,
        split=split,
        labels=labels.astype(np.int64),
        classes=src.classes,
        index=np.arange(len(labels), dtype=np.int64),
        images=images[..., None],
        info={
            "source": f"idx files ({src.mirrors[0]})",
            "root": str(root),
            "files": [str(image_path), str(label_path)],
            "checksum": _checksum_status(src, (image_path, label_path)),
        },
    )


def _checksum_status(src: IdxSource, paths: tuple[Path, Path]) -> str:
    # Copies of the idx files are often recompressed (Debian's, ../shared's), so their .gz bytes
    # differ from the official downloads while the contents are identical: not an error.
    if all(p.name in src.gz_md5 and md5sum(p) == src.gz_md5[p.name] for p in paths):
        return "ok"
    return (
        "unverified (not byte-identical to the official .gz files); idx headers and sizes checked"
    )


def _download(src: IdxSource, filename: str, dest_dir: Path) -> None:
    errors = []
    for mirror in src.mirrors:
        try:
            download_file(mirror + filename, dest=dest_dir / filename, md5=src.gz_md5[filename])
            return
        except DataError as e:
            errors.append(str(e))
    raise DataError(f"{src.name}: every mirror failed for {filename}: " + " | ".join(errors))
