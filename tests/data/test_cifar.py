"""CIFAR loaders on tiny files written in the official pickle layout, plus the real CIFAR-10."""

from __future__ import annotations

import dataclasses
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support import Payload

import mapd.data.cifar as cifar
from mapd.data.base import available, load_dataset
from mapd.data.files import md5sum
from mapd.errors import ConfigError, DataError

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _pattern(n: int, offset: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 HWC images with a distinct value at every (image, row, col, channel)."""
    k, h, w, c = np.meshgrid(
        np.arange(n), np.arange(32), np.arange(32), np.arange(3), indexing="ij"
    )
    return ((k + offset) * 37 + h * 5 + w * 3 + c * 101).astype(np.uint8)


def _to_rows(images_hwc: np.ndarray) -> np.ndarray:
    """HWC images -> the official (N, 3072) CHW rows."""
    return images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072).copy()


def _dump(path: Path, record: dict, *, bytes_keys: bool) -> None:
    # The official files were written by Python 2: keys (and label names) are bytes there.
    if bytes_keys:
        record = {k.encode(): v for k, v in record.items()}
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=2)


def write_cifar10(
    root: Path, *, per_class: int = 1, bytes_keys: bool = True
) -> dict[str, np.ndarray]:
    """Write cifar-10-batches-py with ``per_class`` images per class in each batch."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    out: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    n = 10 * per_class
    for b, fname in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]):
        x = _pattern(n, offset=b * n)
        # labels in a batch-dependent order so concatenation order is checked too
        y = [(j * 3 + b) % 10 for j in range(n)]
        _dump(
            base / fname,
            {
                "batch_label": fname,
                "labels": y,
                "data": _to_rows(x),
                "filenames": [f"{j}.png" for j in range(n)],
            },
            bytes_keys=bytes_keys,
        )
        kind = "test" if fname == "test_batch" else "train"
        out[f"{kind}_x"].append(x)
        out[f"{kind}_y"].append(np.array(y))
    names = [s.encode() for s in CIFAR10_NAMES] if bytes_keys else CIFAR10_NAMES
    _dump(
        base / "batches.meta",
        {"label_names": names, "num_cases_per_batch": n, "num_vis": 3072},
        bytes_keys=bytes_keys,
    )
    return {k: np.concatenate(v) for k, v in out.items()}


def write_cifar100(root: Path, *, n_train: int = 200, n_test: int = 100) -> dict[str, np.ndarray]:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 7)):
        x = _pattern(n, offset=offset)
        fine = (np.arange(n) * 7 + offset) % 100
        coarse = fine // 5
        _dump(
            base / split,
            {
                "filenames": [f"{j}.png" for j in range(n)],
                "batch_label": split,
                "fine_labels": fine.tolist(),
                "coarse_labels": coarse.tolist(),
                "data": _to_rows(x),
            },
            bytes_keys=True,
        )
        out[f"{split}_x"], out[f"{split}_fine"], out[f"{split}_coarse"] = x, fine, coarse
    _dump(
        base / "meta",
        {
            "fine_label_names": [f"fine{i}".encode() for i in range(100)],
            "coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
        bytes_keys=True,
    )
    return out


def _rows(path: Path) -> int:
    with open(path, "rb") as f:
        record = pickle.load(f, encoding="latin1")
    return len(record[b"data"] if b"data" in record else record["data"])


def _accept_tiny(monkeypatch: pytest.MonkeyPatch, name: str, base: Path) -> None:
    """Make the loader treat the tiny files as official: their md5s and row counts."""
    src = getattr(cifar, name)
    md5 = {f: md5sum(base / f) for f in src.file_md5}
    rows = {f: _rows(base / f) for f in src.rows_per_file}
    monkeypatch.setattr(cifar, name, dataclasses.replace(src, file_md5=md5, rows_per_file=rows))


@pytest.fixture
def tiny10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    expected = write_cifar10(tmp_path, per_class=2)
    _accept_tiny(monkeypatch, "CIFAR10", tmp_path / "cifar-10-batches-py")
    return tmp_path, expected


def test_registered() -> None:
    assert {"cifar10", "cifar100"} <= set(available())


def test_cifar10_train_shapes_labels_order(tiny10) -> None:
    root, exp = tiny10
    ds = cifar.load_cifar10("train", root=root)
    assert ds.images.shape == (100, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, exp["train_x"])
    np.testing.assert_array_equal(ds.labels, exp["train_y"])
    np.testing.assert_array_equal(ds.index, np.arange(100))
    assert ds.classes == tuple(CIFAR10_NAMES)
    assert ds.info["checksum"] == "ok"
    assert ds.images.flags.c_contiguous


def test_cifar10_chw_rows_land_in_hwc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path, per_class=1)
    base = tmp_path / "cifar-10-batches-py"
    # overwrite test_batch with known single pixels: red (row 1, col 2), green (0, 0), blue (31, 30)
    data = np.zeros((10, 3072), np.uint8)
    data[0, 0 * 1024 + 1 * 32 + 2] = 200
    data[0, 1 * 1024 + 0 * 32 + 0] = 100
    data[0, 2 * 1024 + 31 * 32 + 30] = 50
    _dump(base / "test_batch", {"labels": list(range(10)), "data": data}, bytes_keys=True)
    _accept_tiny(monkeypatch, "CIFAR10", base)
    img = cifar.load_cifar10("test", root=tmp_path).images[0]
    assert img[1, 2, 0] == 200 and img[0, 0, 1] == 100 and img[31, 30, 2] == 50
    assert int(img.astype(int).sum()) == 350


def test_cifar10_test_split_and_registry(tiny10) -> None:
    root, exp = tiny10
    ds = load_dataset("cifar10", "test", root=root)
    np.testing.assert_array_equal(ds.images, exp["test_x"])
    np.testing.assert_array_equal(ds.labels, exp["test_y"])
    assert ds.split == "test" and len(ds) == 20


def test_cifar10_str_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = write_cifar10(tmp_path, per_class=1, bytes_keys=False)
    src = cifar.CIFAR10
    rows = dict.fromkeys(src.rows_per_file, 10)
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(src, rows_per_file=rows))
    ds = cifar.load_cifar10("train", root=tmp_path, reencoded_ok=True)
    np.testing.assert_array_equal(ds.labels, exp["train_y"])
    assert ds.classes == tuple(CIFAR10_NAMES)


def test_checksum_mismatch_refused_then_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar10(tmp_path, per_class=1)
    src = cifar.CIFAR10
    rows = dict.fromkeys(src.rows_per_file, 10)
    # official md5s (the tiny files cannot match them)
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(src, rows_per_file=rows))
    with pytest.raises(DataError, match=r"checksum mismatch for .*data_batch_1.*reencoded_ok=True"):
        cifar.load_cifar10("train", root=tmp_path)
    ds = cifar.load_cifar10("train", root=tmp_path, reencoded_ok=True)
    assert ds.info["checksum"] == "mismatch accepted (reencoded_ok)"
    assert ds.info["checksum_mismatch"] == [
        *(f"data_batch_{i}" for i in range(1, 6)),
        "batches.meta",
    ]


def test_one_modified_file_is_named(tiny10) -> None:
    root, _ = tiny10
    path = root / "cifar-10-batches-py" / "data_batch_3"
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 1  # one pixel bit: still a valid pickle
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"data_batch_3: expected md5"):
        cifar.load_cifar10("train", root=root)
    cifar.load_cifar10("test", root=root)  # the test split does not read that file


def test_missing_file(tiny10) -> None:
    root, _ = tiny10
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(
        DataError, match=r"missing file .*data_batch_4.*download=True.*cifar-10-python"
    ):
        cifar.load_cifar10("train", root=root)


def test_missing_root_and_no_root(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"missing file .*cifar-10-batches-py.*www\.cs\.toronto\.edu"
    ):
        cifar.load_cifar10("train", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no root directory given"):
        cifar.load_cifar10("train")


def test_corrupt_pickle(tiny10) -> None:
    root, _ = tiny10
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    with pytest.raises(DataError, match=r"corrupt file .*data_batch_2"):
        cifar.load_cifar10("train", root=root, reencoded_ok=True)


def test_wrong_row_count(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_class=1)  # 10 rows per file; the official count is 10000
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be uint8 \(10000, 3072\)"):
        cifar.load_cifar10("train", root=tmp_path, reencoded_ok=True)


def test_label_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path, per_class=1)
    base = tmp_path / "cifar-10-batches-py"
    _dump(
        base / "test_batch",
        {"labels": [*range(9), 10], "data": np.zeros((10, 3072), np.uint8)},
        bytes_keys=True,
    )
    _accept_tiny(monkeypatch, "CIFAR10", base)
    with pytest.raises(DataError, match=r"test_batch: 'labels' outside \[0, 10\)"):
        cifar.load_cifar10("test", root=tmp_path)


def test_cifar100_fine_and_coarse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = write_cifar100(tmp_path)
    _accept_tiny(monkeypatch, "CIFAR100", tmp_path / "cifar-100-python")
    fine = cifar.load_cifar100("train", root=tmp_path)
    assert fine.images.shape == (200, 32, 32, 3)
    np.testing.assert_array_equal(fine.images, exp["train_x"])
    np.testing.assert_array_equal(fine.labels, exp["train_fine"])
    assert fine.classes[:2] == ("fine0", "fine1") and fine.num_classes == 100
    assert fine.info["label_type"] == "fine" and fine.info["checksum"] == "ok"
    coarse = load_dataset("cifar100", "test", root=tmp_path, label_type="coarse")
    np.testing.assert_array_equal(coarse.labels, exp["test_coarse"])
    np.testing.assert_array_equal(coarse.images, exp["test_x"])
    assert coarse.num_classes == 20 and coarse.classes[19] == "coarse19"
    np.testing.assert_array_equal(coarse.index, np.arange(100))


def test_cifar100_bad_label_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_type"):
        cifar.load_cifar100("train", root=tmp_path, label_type="medium")


def test_download_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=True fetches the archive (here a file:// URL), verifies it and extracts it."""
    src_dir = tmp_path / "src"
    exp = write_cifar10(src_dir, per_class=1)
    _accept_tiny(monkeypatch, "CIFAR10", src_dir / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar, "BASE_URL", tmp_path.as_uri() + "/")
    monkeypatch.setattr(
        cifar, "CIFAR10", dataclasses.replace(cifar.CIFAR10, archive_md5=md5sum(archive))
    )

    root = tmp_path / "root"
    with pytest.raises(DataError, match="missing file"):
        cifar.load_cifar10("train", root=root)
    ds = cifar.load_cifar10("train", root=root, download=True)
    np.testing.assert_array_equal(ds.labels, exp["train_y"])
    assert (root / "cifar-10-python.tar.gz").is_file()


@pytest.mark.shared
def test_real_cifar10(shared_cifar10_root: Path, shared_cscores_dir: Path) -> None:
    with pytest.raises(DataError, match="checksum mismatch"):
        cifar.load_cifar10("test", root=shared_cifar10_root)
    train = cifar.load_cifar10("train", root=shared_cifar10_root, reencoded_ok=True)
    test = cifar.load_cifar10("test", root=shared_cifar10_root, reencoded_ok=True)
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert train.info["checksum"] == "mismatch accepted (reencoded_ok)"
    published = np.load(shared_cscores_dir / "cifar10-cscores-orig-order.npz")["labels"]
    np.testing.assert_array_equal(train.labels, published)
    np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 1000))
    assert train.classes == tuple(CIFAR10_NAMES)
    # real photos, not blank: every image has some contrast
    assert (train.images.reshape(50000, -1).std(axis=1) > 1).all()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_crafted_data_file_runs_no_code(
    tmp_path: Path, protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With reencoded_ok (checksums not enforced) a crafted batch is refused before any of its
    code runs; the official format's plain data still loads at every pickle protocol."""
    write_cifar10(tmp_path)
    _accept_tiny(monkeypatch, "CIFAR10", tmp_path / "cifar-10-batches-py")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "rb") as f:
        record = pickle.load(f, encoding="latin1")
    with open(batch, "wb") as f:
        pickle.dump(record, f, protocol=protocol)
    assert len(cifar.load_cifar10("train", root=tmp_path, reencoded_ok=True)) == 50
    marker = tmp_path / "pwned"
    record[b"labels"] = Payload(marker)
    with open(batch, "wb") as f:
        pickle.dump(record, f, protocol=protocol)
    with pytest.raises(DataError, match=r"data_batch_1: not plain pickled data .*posix.system"):
        cifar.load_cifar10("train", root=tmp_path, reencoded_ok=True)
    assert not marker.exists()
