"""Waterbirds loader on a tiny copy written in the official metadata.csv + JPEG layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mapd.data.base import load_dataset
from mapd.data.waterbirds import FOLDER, SOURCE_URL, load_waterbirds
from mapd.errors import DataError

# img_id, y, split, place; rows deliberately not in img_id order
ROWS = [
    (5, 0, 0, 0),
    (1, 1, 0, 1),
    (3, 1, 0, 0),
    (2, 0, 0, 1),
    (4, 0, 0, 0),
    (6, 1, 1, 1),
    (7, 0, 1, 1),
    (8, 1, 2, 0),
    (9, 0, 2, 0),
]


def _filename(img_id: int, y: int) -> str:
    species = "001.Black_footed_Albatross" if y else "026.Bronzed_Cowbird"
    return f"{species}/{species.split('.')[1]}_{img_id:04d}_{700000 + img_id}.jpg"


def _write(root: Path, rows=ROWS, *, extra_columns: bool = True) -> Path:
    folder = root / FOLDER
    records = []
    for img_id, y, split, place in rows:
        name = _filename(img_id, y)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 5), (img_id * 20, 100, 50)).save(path, format="JPEG")
        rec = {"img_id": img_id, "img_filename": name, "y": y, "split": split, "place": place}
        if extra_columns:  # the WILDS copy also has place_filename
            rec["place_filename"] = f"/b/bamboo_forest/{img_id:08d}.jpg"
        records.append(rec)
    pd.DataFrame(records).to_csv(folder / "metadata.csv", index=False)
    return folder


def test_train_split_labels_groups_minority(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    ds = load_dataset("waterbirds", "train", root=tmp_path)
    assert ds.classes == ("landbird", "waterbird")
    # sorted by img_id: 1 (y1 water), 2 (y0 water), 3 (y1 land), 4 (y0 land), 5 (y0 land)
    np.testing.assert_array_equal(ds.attrs["img_id"], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(ds.index, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ds.labels, [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(ds.attrs["place"], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(ds.attrs["group"], [3, 1, 2, 0, 0])
    np.testing.assert_array_equal(ds.attrs["minority"], [False, True, True, False, False])
    assert ds.attrs["minority"].dtype == bool
    assert ds.images is None
    assert ds.paths[0] == str((folder / _filename(1, 1)).resolve())
    assert Path(ds.paths[0]).is_absolute()


def test_val_test_splits_and_root_is_folder(tmp_path: Path) -> None:
    folder = _write(tmp_path, extra_columns=False)
    val = load_waterbirds("val", root=folder)
    test = load_waterbirds("test", root=folder)
    np.testing.assert_array_equal(val.attrs["img_id"], [6, 7])
    np.testing.assert_array_equal(val.attrs["group"], [3, 1])
    np.testing.assert_array_equal(test.attrs["img_id"], [8, 9])
    np.testing.assert_array_equal(test.attrs["group"], [2, 0])
    np.testing.assert_array_equal(test.attrs["minority"], [True, False])
    assert "partial" in val.info["size_check"]


def test_missing_root_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a directory") as e:
        load_waterbirds("train", root=tmp_path / "nope")
    assert SOURCE_URL in str(e.value)
    with pytest.raises(DataError, match=r"no metadata.csv"):
        load_waterbirds("train", root=tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    df = pd.read_csv(folder / "metadata.csv").drop(columns=["place"])
    df.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) place"):
        load_waterbirds("train", root=tmp_path)


@pytest.mark.parametrize(
    ("column", "value"), [("y", 2), ("place", -1), ("split", 3), ("y", "bird")]
)
def test_bad_values(tmp_path: Path, column: str, value) -> None:
    folder = _write(tmp_path)
    df = pd.read_csv(folder / "metadata.csv")
    df[column] = df[column].astype(object)
    df.loc[3, column] = value
    df.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DataError, match=f"column '{column}' must be .*data row 4 has {value!r}$"):
        load_waterbirds("train", root=tmp_path)


def test_listed_image_missing(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    (folder / _filename(3, 1)).unlink()
    with pytest.raises(DataError, match=r"1 listed image file\(s\) do not exist.*0003"):
        load_waterbirds("train", root=tmp_path)
    # another split does not list it and still loads
    assert len(load_waterbirds("val", root=tmp_path)) == 2


def test_undecodable_image(tmp_path: Path) -> None:
    folder = _write(tmp_path)
    (folder / _filename(4, 0)).write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"cannot decode image .*0004"):
        load_waterbirds("train", root=tmp_path)
    assert len(load_waterbirds("train", root=tmp_path, decode_sample=0)) == 5


def test_full_size_split_mismatch_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER
    folder.mkdir()
    n = 11_788
    split = np.repeat([0, 1, 2], [4_795, 1_199, 5_794])
    split[0] = 1  # one training row moved to val
    pd.DataFrame(
        {
            "img_id": np.arange(1, n + 1),
            "img_filename": [f"x/{i}.jpg" for i in range(n)],
            "y": 0,
            "split": split,
            "place": 0,
        }
    ).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"split sizes .*'train': 4794.*official release"):
        load_waterbirds("test", root=tmp_path)
