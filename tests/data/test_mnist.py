"""MNIST / Fashion-MNIST loaders on tiny idx files (raw and .gz), plus the real MNIST."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import mapd.data.mnist as mnist
from mapd.data.base import available, load_dataset
from mapd.data.files import md5sum
from mapd.errors import DataError


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The idx encoding: big-endian magic, big-endian uint32 dims, then the uint8 values."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(
    folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz: bool
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, blob in (
        (f"{prefix}-images-idx3-ubyte", idx_bytes(images, 2051)),
        (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 2049)),
    ):
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)


def tiny(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(
        np.uint8
    )


def test_registered() -> None:
    assert {"mnist", "fashion_mnist"} <= set(available())


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_torchvision_layout(tmp_path: Path, gz: bool) -> None:
    x, y = tiny(12, seed=1)
    xt, yt = tiny(5, seed=2)
    write_idx(tmp_path / "MNIST" / "raw", "train", x, y, gz=gz)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", xt, yt, gz=gz)
    ds = mnist.load_mnist("train", root=tmp_path)
    assert ds.images.shape == (12, 28, 28, 1) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[..., 0], x)
    np.testing.assert_array_equal(ds.labels, y.astype(np.int64))
    np.testing.assert_array_equal(ds.index, np.arange(12))
    assert ds.classes == tuple("0123456789")
    test = load_dataset("mnist", "test", root=tmp_path)
    np.testing.assert_array_equal(test.images[..., 0], xt)
    np.testing.assert_array_equal(test.labels, yt)
    assert test.info["checksum"].startswith("unverified")


def test_pixel_orientation(tmp_path: Path) -> None:
    """Rows then columns: value at byte 16 + r*28 + c is pixel (r, c)."""
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 3, 20] = 255
    write_idx(tmp_path, "t10k", x, np.array([7], np.uint8), gz=False)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    assert raw[16 + 3 * 28 + 20] == 255
    ds = mnist.load_mnist("test", root=tmp_path)
    assert ds.images[0, 3, 20, 0] == 255 and int(ds.images.sum()) == 255
    assert ds.labels.tolist() == [7]


def test_flat_root_layout(tmp_path: Path) -> None:
    x, y = tiny(4, seed=3)
    write_idx(tmp_path, "t10k", x, y, gz=True)
    ds = mnist.load_mnist("test", root=tmp_path)
    np.testing.assert_array_equal(ds.images[..., 0], x)


@pytest.mark.parametrize("cut", [2, 10, 100])
def test_truncated_idx(tmp_path: Path, cut: int) -> None:
    x, y = tiny(3, seed=4)
    write_idx(tmp_path, "t10k", x, y, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-cut] if cut == 100 else path.read_bytes()[:cut])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated"):
        mnist.load_mnist("test", root=tmp_path)


def test_trailing_bytes(tmp_path: Path) -> None:
    x, y = tiny(3, seed=4)
    write_idx(tmp_path, "t10k", x, y, gz=False)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer than its header says"):
        mnist.load_mnist("test", root=tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    x, y = tiny(30, seed=5)
    write_idx(tmp_path, "train", x, y, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"cannot read idx file .*train-images-idx3-ubyte\.gz"):
        mnist.load_mnist("train", root=tmp_path)


def test_swapped_files_wrong_magic(tmp_path: Path) -> None:
    x, y = tiny(3, seed=6)
    write_idx(tmp_path, "t10k", x, y, gz=False)
    images, labels = tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte"
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        mnist.load_mnist("test", root=tmp_path)


def test_count_mismatch_and_bad_label(tmp_path: Path) -> None:
    x, y = tiny(3, seed=7)
    write_idx(tmp_path, "t10k", x, y[:2], gz=False)
    with pytest.raises(DataError, match=r"3 images but .* has 2 labels"):
        mnist.load_mnist("test", root=tmp_path)
    write_idx(tmp_path, "t10k", x, np.array([1, 2, 10], np.uint8), gz=False)
    with pytest.raises(DataError, match=r"label 10, outside \[0, 10\)"):
        mnist.load_mnist("test", root=tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"cannot find train-images-idx3-ubyte\[\.gz\].*download=True"
    ):
        mnist.load_mnist("train", root=tmp_path)
    with pytest.raises(DataError, match="no root directory given"):
        mnist.load_mnist("train")
    x, y = tiny(2, seed=8)
    write_idx(tmp_path, "train", x, y, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"cannot find train-labels-idx1-ubyte"):
        mnist.load_mnist("train", root=tmp_path)


def test_checksum_ok_for_official_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = tiny(2, seed=9)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "t10k", x, y, gz=True)
    md5 = dict(mnist.MNIST.gz_md5)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        md5[name] = md5sum(raw / name)
    monkeypatch.setattr(mnist, "MNIST", dataclasses.replace(mnist.MNIST, gz_md5=md5))
    assert mnist.load_mnist("test", root=tmp_path).info["checksum"] == "ok"


def test_download_from_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first mirror is unreachable; the second (a file:// directory) serves the files."""
    x, y = tiny(6, seed=10)
    mirror = tmp_path / "mirror"
    write_idx(mirror, "t10k", x, y, gz=True)
    md5 = dict(mnist.MNIST.gz_md5)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        md5[name] = md5sum(mirror / name)
    mirrors = ((tmp_path / "gone").as_uri() + "/", mirror.as_uri() + "/")
    monkeypatch.setattr(
        mnist, "MNIST", dataclasses.replace(mnist.MNIST, gz_md5=md5, mirrors=mirrors)
    )
    root = tmp_path / "root"
    ds = mnist.load_mnist("test", root=root, download=True)
    np.testing.assert_array_equal(ds.images[..., 0], x)
    assert (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()
    assert ds.info["checksum"] == "ok"


def test_download_md5_mismatch_on_every_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = tiny(2, seed=11)
    mirror = tmp_path / "mirror"
    write_idx(mirror, "t10k", x, y, gz=True)
    monkeypatch.setattr(
        mnist, "MNIST", dataclasses.replace(mnist.MNIST, mirrors=(mirror.as_uri() + "/",))
    )
    with pytest.raises(
        DataError, match=r"every mirror failed .*expected md5 9fb629c4189551a2d022fa330f9573f3"
    ):
        mnist.load_mnist("test", root=tmp_path / "root", download=True)
    assert not (tmp_path / "root" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists()


def test_fashion_mnist_layout_and_classes(tmp_path: Path) -> None:
    x, y = tiny(5, seed=12)
    write_idx(tmp_path / "FashionMNIST" / "raw", "train", x, y, gz=True)
    ds = load_dataset("fashion_mnist", "train", root=tmp_path)
    np.testing.assert_array_equal(ds.images[..., 0], x)
    assert (
        ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    )
    # an MNIST/raw folder is not where Fashion-MNIST looks
    write_idx(tmp_path / "MNIST" / "raw", "t10k", x, y, gz=True)
    with pytest.raises(DataError, match="cannot find t10k-images"):
        mnist.load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "FASHION_MNIST_DEFAULT_ROOT", tmp_path / "absent")
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        mnist.load_fashion_mnist("train")
    x, y = tiny(3, seed=13)
    write_idx(tmp_path / "deb", "t10k", x, y, gz=True)  # Debian's flat layout
    monkeypatch.setattr(mnist, "FASHION_MNIST_DEFAULT_ROOT", tmp_path / "deb")
    np.testing.assert_array_equal(mnist.load_fashion_mnist("test").labels, y)


@pytest.mark.skipif(
    not mnist.FASHION_MNIST_DEFAULT_ROOT.is_dir(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist() -> None:
    train, test = mnist.load_fashion_mnist("train"), mnist.load_fashion_mnist("test")
    assert train.images.shape == (60000, 28, 28, 1) and len(test) == 10000
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))


@pytest.mark.shared
def test_real_mnist(shared_mnist_root: Path) -> None:
    train = mnist.load_mnist("train", root=shared_mnist_root)
    test = mnist.load_mnist("test", root=shared_mnist_root)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    # published class counts of the MNIST training and test sets
    assert np.bincount(train.labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert np.bincount(test.labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
