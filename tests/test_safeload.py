"""Pickled files are read as plain data: no code from a file ever runs."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import Payload

from mapd.errors import DataError
from mapd.safeload import load_npz, load_pickle, loads


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_round_trips(protocol: int) -> None:
    obj = {
        "data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "labels": [1, 2, 3],
        "names": [b"a.png", "b.png"],
        "score": np.float64(0.5),
        "nested": {"x": (1.5, None, True)},
    }
    got = loads(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(got["data"], obj["data"])
    assert got["labels"] == [1, 2, 3] and got["names"] == [b"a.png", "b.png"]
    assert got["score"] == 0.5 and got["nested"] == {"x": (1.5, None, True)}


def test_a_payload_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"data": Payload(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"evil\.pkl: not plain pickled data .*system"):
        load_pickle(path, what="test")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=r"refused to load builtins\.eval"):
        loads(pickle.dumps(eval))


def test_npz_with_an_object_array_of_file_names(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    names = np.array([b"n01/a.JPEG", b"n02/b.JPEG"], dtype=object)
    np.savez(path, labels=np.array([0, 1]), scores=np.array([0.2, 0.9]), filenames=names)
    got = load_npz(path, what="test")
    assert got["filenames"].tolist() == names.tolist()
    np.testing.assert_array_equal(got["scores"], [0.2, 0.9])
    assert got["labels"].dtype == np.array([0, 1]).dtype


def test_npz_with_a_payload_in_an_object_array(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, labels=np.array([0]), filenames=np.array([Payload(marker)], dtype=object))
    with pytest.raises(DataError, match=r"evil\.npz"):
        load_npz(path, what="test")
    assert not marker.exists()
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_npz(path, what="test")


def test_npz_header_shape_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, a=np.array(["x", "y"], dtype=object))
    with zipfile.ZipFile(path) as zf:
        raw = zf.read("a.npy")
    bad = raw.replace(b"(2,)", b"(3,)")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", bad)
    with pytest.raises(DataError, match="header says"):
        load_npz(path, what="test")
