"""Human label sets read from .npy, .csv and CIFAR-N .pt files: read back, every check, and no
code run from a crafted file."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mapd.data.labels_file import LabelFile, read_labels
from mapd.errors import DataError

N, C = 12, 10
CLEAN = np.arange(N) % C
WORSE = (CLEAN + np.arange(N) % 3) % C  # every third row keeps its label


def write_cifar_n(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A label file in the CIFAR-N release format: ``torch.save`` of a dict of numpy arrays."""
    torch.save({k: np.asarray(v) for k, v in arrays.items()}, path)
    return path


def _cifar10n(path: Path) -> Path:
    return write_cifar_n(
        path,
        {
            "clean_label": CLEAN,
            "worse_label": WORSE,
            "aggre_label": CLEAN.astype(np.int32),
            "random_label1": np.roll(CLEAN, 1).astype(np.uint8),
        },
    )


def test_npy_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, WORSE.astype(np.int16))
    got = read_labels(path, n=N, num_classes=C)
    assert isinstance(got, LabelFile) and got.clean is None and got.source == str(path)
    assert got.labels.dtype == np.int64
    np.testing.assert_array_equal(got.labels, WORSE)


def test_csv_is_read_back_with_its_clean_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    rows = "".join(f"{i},{w},{c}\n" for i, (w, c) in enumerate(zip(WORSE, CLEAN, strict=True)))
    path.write_text("index,human,clean_label\n" + rows)
    got = read_labels(path, n=N, num_classes=C, column="human", dataset_labels=CLEAN)
    np.testing.assert_array_equal(got.labels, WORSE)
    np.testing.assert_array_equal(got.clean, CLEAN)
    assert str(path) in got.source and "human" in got.source


def test_cifar_n_format_is_read_back(tmp_path: Path) -> None:
    path = _cifar10n(tmp_path / "CIFAR-10_human.pt")
    got = read_labels(path, n=N, num_classes=C, key="worse_label", dataset_labels=CLEAN)
    np.testing.assert_array_equal(got.labels, WORSE)
    np.testing.assert_array_equal(got.clean, CLEAN)
    assert got.labels.dtype == got.clean.dtype == np.int64
    assert str(path) in got.source and "worse_label" in got.source
    for key, expected in (("aggre_label", CLEAN), ("random_label1", np.roll(CLEAN, 1))):
        np.testing.assert_array_equal(
            read_labels(path, n=N, num_classes=C, key=key).labels, expected
        )


def test_tensors_lists_and_pth_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "CIFAR-100_human.pth"
    torch.save(
        {"noisy_label": torch.tensor(WORSE), "clean_label": CLEAN.tolist()},
        path,
    )
    got = read_labels(path, n=N, num_classes=C, key="noisy_label", dataset_labels=CLEAN)
    np.testing.assert_array_equal(got.labels, WORSE)
    np.testing.assert_array_equal(got.clean, CLEAN)
    single = tmp_path / "one.pt"
    torch.save({"noisy_label": WORSE.tolist()}, single)  # one set: no key needed
    got = read_labels(single, n=N, num_classes=C)
    np.testing.assert_array_equal(got.labels, WORSE)
    assert got.clean is None
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 (non-zip) format
    torch.save({"noisy_label": WORSE}, legacy, _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(read_labels(legacy, n=N, num_classes=C).labels, WORSE)
    torch.save(WORSE, tmp_path / "bare.pt")
    with pytest.raises(DataError, match="expected a dict of label arrays"):
        read_labels(tmp_path / "bare.pt", n=N, num_classes=C)


def test_files_written_with_numpy_1_names_are_read(tmp_path: Path) -> None:
    # the CIFAR-N files predate numpy 2: their pickles name numpy.core.multiarray._reconstruct
    new = _cifar10n(tmp_path / "new.pt")
    old = tmp_path / "old.pt"
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)
    assert "numpy.core.multiarray._reconstruct" in (
        torch.serialization.get_unsafe_globals_in_checkpoint(old)
    )
    got = read_labels(old, n=N, num_classes=C, key="worse_label")
    np.testing.assert_array_equal(got.labels, WORSE)


def test_wrong_length(tmp_path: Path) -> None:
    path = _cifar10n(tmp_path / "c.pt")
    with pytest.raises(DataError, match=rf"c\.pt.*worse_label.*has {N} rows, expected n={N + 1}"):
        read_labels(path, n=N + 1, num_classes=C, key="worse_label")
    npy = tmp_path / "short.npy"
    np.save(npy, CLEAN[:-1])
    with pytest.raises(DataError, match=rf"short\.npy.* has {N - 1} rows, expected n={N}"):
        read_labels(npy, n=N, num_classes=C)


def test_out_of_range(tmp_path: Path) -> None:
    bad = CLEAN.copy()
    bad[4], bad[7] = C, -1
    path = write_cifar_n(tmp_path / "c.pt", {"noisy_label": bad})
    with pytest.raises(
        DataError, match=rf"2 labels outside \[0, {C}\) \(first: row 4, label {C}\)"
    ):
        read_labels(path, n=N, num_classes=C)
    # with one class more, label C is valid and -1 is still not
    with pytest.raises(
        DataError, match=rf"1 labels outside \[0, {C + 1}\) \(first: row 7, label -1\)"
    ):
        read_labels(path, n=N, num_classes=C + 1)
    np.save(tmp_path / "l.npy", CLEAN)
    with pytest.raises(DataError, match=r"outside \[0, 5\)"):
        read_labels(tmp_path / "l.npy", n=N, num_classes=5)


def test_clean_label_disagreeing_with_the_data_set(tmp_path: Path) -> None:
    path = _cifar10n(tmp_path / "c.pt")
    shuffled = CLEAN.copy()
    shuffled[[3, 9]] = shuffled[[9, 3]]  # rows 3 and 9 swapped (labels 3 and 9)
    with pytest.raises(
        DataError, match=r"clean_label disagrees .* in 2 of 12 rows \(first: row 3,"
    ):
        read_labels(path, n=N, num_classes=C, key="worse_label", dataset_labels=shuffled)


def test_missing_key_with_several_keys(tmp_path: Path) -> None:
    path = _cifar10n(tmp_path / "c.pt")
    keys = "['aggre_label', 'clean_label', 'random_label1', 'worse_label']"
    with pytest.raises(DataError, match=rf"several label sets, choose one of {_re(keys)}"):
        read_labels(path, n=N, num_classes=C)
    with pytest.raises(DataError, match=rf"no key 'worst_label'; its keys are {_re(keys)}"):
        read_labels(path, n=N, num_classes=C, key="worst_label")


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_csv_without_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("index,human\n" + "".join(f"{i},{v}\n" for i, v in enumerate(WORSE)))
    with pytest.raises(DataError, match=r"give column=; its columns are \['index', 'human'\]"):
        read_labels(path, n=N, num_classes=C)
    with pytest.raises(DataError, match=r"no column 'label'; its columns are \['index', 'human'\]"):
        read_labels(path, n=N, num_classes=C, column="label")


def test_unknown_extension_and_misplaced_options(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"labels\.json: unknown format '\.json'"):
        read_labels(path, n=2, num_classes=C)
    np.save(tmp_path / "l.npy", CLEAN)
    with pytest.raises(DataError, match=r"key='worse_label' applies to \.pt/\.pth files only"):
        read_labels(tmp_path / "l.npy", n=N, num_classes=C, key="worse_label")
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "missing.npy", n=N, num_classes=C)


def test_float_labels(tmp_path: Path) -> None:
    halves = CLEAN.astype(np.float64)
    halves[5] = 2.5
    path = write_cifar_n(tmp_path / "c.pt", {"noisy_label": halves})
    with pytest.raises(DataError, match=r"non-integer values \(dtype float64, row 5: 2\.5\)"):
        read_labels(path, n=N, num_classes=C)
    np.save(tmp_path / "f.npy", CLEAN.astype(np.float32))  # whole numbers, stored as floats
    with pytest.raises(DataError, match=r"non-integer values.*whole numbers stored as floats"):
        read_labels(tmp_path / "f.npy", n=N, num_classes=C)
    csv = tmp_path / "gap.csv"
    csv.write_text("human\n" + "".join(f"{'' if i == 2 else v}\n" for i, v in enumerate(WORSE)))
    with pytest.raises(DataError, match=r"non-integer values \(dtype float64, row 2: nan\)"):
        read_labels(csv, n=N, num_classes=C, column="human")
    csv.write_text("human\n" + "".join(f"{'cat' if i == 1 else v}\n" for i, v in enumerate(WORSE)))
    with pytest.raises(DataError, match=r"non-integer values \(dtype object, row 1: 'cat'\)"):
        read_labels(csv, n=N, num_classes=C, column="human")


class _RunsCode:
    """Unpickling this calls os.system: what a crafted label file could do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_a_file_whose_pickle_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": _RunsCode(f"touch '{marker}'"), "clean_label": CLEAN}, path)
    with pytest.raises(
        DataError, match=r"CIFAR-10_human\.pt: refused: its pickle needs posix\.system"
    ):
        read_labels(path, n=N, num_classes=C, key="worse_label")
    assert not marker.exists()
    # the file really runs code when loaded without weights_only (the check can fail)
    witness = tmp_path / "witness"
    torch.save({"worse_label": _RunsCode(f"touch '{witness}'")}, path)
    torch.load(path, weights_only=False)
    assert witness.exists()


def test_a_corrupt_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=r"c\.pt: unreadable as a torch file"):
        read_labels(path, n=N, num_classes=C)
    npy = tmp_path / "o.npy"
    np.save(npy, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"o\.npy: not a readable \.npy array"):
        read_labels(npy, n=2, num_classes=C)
