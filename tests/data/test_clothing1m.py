"""clothing1m: a tiny release in the official layout (images/ + annotation text files)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mapd.data.clothing1m as c1m
from mapd.data.base import load_dataset
from mapd.data.clothing1m import load_clothing1m
from mapd.errors import DataError

CATEGORIES = [
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
    "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
]  # fmt: skip


def key(name: str) -> str:
    return f"images/{name[-1]}/{name[-1]}{name[0]}/{name}.jpg"


# noisy labels (noisy_label_kv.txt); c1 and n2 also have clean labels
NOISY = {"n1": 0, "n2": 5, "n3": 7, "n4": 13, "n5": 2, "n6": 2, "c1": 4}
# clean labels (clean_label_kv.txt): c1's clean label differs from its noisy one, n2's agrees
CLEAN = {"c1": 9, "c2": 11, "n2": 5, "v1": 1, "v2": 3, "n3": 6, "t1": 12, "t2": 8}
LISTS = {
    "noisy_train_key_list.txt": ["n1", "n2", "n3", "n4", "n5", "n6"],
    "clean_train_key_list.txt": ["c1", "c2", "n2"],
    "clean_val_key_list.txt": ["v1", "n3", "v2"],  # n3 is also a noisy training key
    "clean_test_key_list.txt": ["t2", "t1"],
}


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 77, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _make_clothing(root: Path, annotations: Path | None = None) -> Path:
    ann = annotations or root
    ann.mkdir(parents=True, exist_ok=True)
    data = _jpeg()
    for name in {*NOISY, *CLEAN}:
        path = root / key(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (ann / "noisy_label_kv.txt").write_text("".join(f"{key(k)} {v}\n" for k, v in NOISY.items()))
    (ann / "clean_label_kv.txt").write_text("".join(f"{key(k)} {v}\n" for k, v in CLEAN.items()))
    for fname, names in LISTS.items():
        (ann / fname).write_text("".join(f"{key(n)}\n" for n in names))
    (ann / "category_names_eng.txt").write_text("\n".join(CATEGORIES) + "\n")
    return root


def _names(ds) -> list[str]:
    return [Path(p).stem for p in ds.paths]


def test_official_splits(tmp_path: Path) -> None:
    root = _make_clothing(tmp_path)
    noisy = load_clothing1m("noisy_train", root=root)
    assert noisy.classes == tuple(CATEGORIES)
    assert _names(noisy) == ["n1", "n2", "n3", "n4", "n5", "n6"]
    assert noisy.labels.tolist() == [0, 5, 7, 13, 2, 2]
    assert noisy.attrs["label_source"].tolist() == ["noisy"] * 6
    assert noisy.index.tolist() == list(range(6))
    assert noisy.paths[0] == str(root.resolve() / "images/1/1n/n1.jpg")
    assert noisy.info["keys_also_in_clean_val_or_test"] == 1  # n3, recorded not removed

    test = load_dataset("clothing1m", "clean_test", root=root)
    assert _names(test) == ["t2", "t1"] and test.labels.tolist() == [8, 12]
    val = load_clothing1m("clean_val", root=root)
    assert _names(val) == ["v1", "n3", "v2"]
    assert val.labels.tolist() == [1, 6, 3]  # clean label of n3, not its noisy 7
    train = load_clothing1m("clean_train", root=root)
    assert train.labels.tolist() == [9, 11, 5]
    assert set(train.attrs["label_source"]) == {"clean"}
    assert "all 3 image files exist" in train.info["checked"]


def test_dirty_train_definition(tmp_path: Path) -> None:
    ds = load_clothing1m("dirty_train", root=_make_clothing(tmp_path))
    # clean_train then noisy_train; n2 once; n3 dropped (in clean_val)
    assert _names(ds) == ["c1", "c2", "n2", "n1", "n4", "n5", "n6"]
    assert ds.labels.tolist() == [9, 11, 5, 0, 13, 2, 2]
    assert ds.attrs["label_source"].tolist() == ["clean"] * 3 + ["noisy"] * 4
    assert ds.attrs["both_labels"].tolist() == [True, False, True, False, False, False, False]
    assert ds.attrs["noisy_label_differs"].tolist() == [True] + [False] * 6
    assert ds.info["excluded_clean_val_or_test_keys"] == 1
    assert ds.info["duplicates_dropped"] == 1
    assert ds.info["n_clean_label"] == 3 and ds.info["n_noisy_label"] == 4
    held = {"v1", "v2", "n3", "t1", "t2"}
    assert not held & set(_names(ds))


def test_annotations_subfolder(tmp_path: Path) -> None:
    root = _make_clothing(tmp_path, annotations=tmp_path / "annotations")
    ds = load_clothing1m("clean_test", root=root)
    assert ds.labels.tolist() == [8, 12]
    assert ds.info["annotations"] == str(root.resolve() / "annotations")


def test_key_missing_from_label_file(tmp_path: Path) -> None:
    root = _make_clothing(tmp_path)
    with (root / "clean_test_key_list.txt").open("a") as f:
        f.write(key("x9") + "\n")
    with pytest.raises(
        DataError,
        match=r"1 key\(s\) listed in clean_test_key_list.txt are absent from "
        r"clean_label_kv.txt: images/9/9x/x9.jpg",
    ):
        load_clothing1m("clean_test", root=root)


def test_listed_image_missing(tmp_path: Path) -> None:
    root = _make_clothing(tmp_path)
    (root / key("n4")).unlink()
    with pytest.raises(DataError, match=r"do not exist: .*images/4/4n/n4\.jpg"):
        load_clothing1m("noisy_train", root=root)
    with pytest.raises(DataError, match=r"do not exist: .*n4\.jpg"):
        load_clothing1m("dirty_train", root=root)


def test_malformed_files(tmp_path: Path) -> None:
    root = _make_clothing(tmp_path)
    (root / "category_names_eng.txt").write_text("\n".join(CATEGORIES[:13]))
    with pytest.raises(DataError, match="13 class names; Clothing1M has 14"):
        load_clothing1m("clean_val", root=root)
    (root / "category_names_eng.txt").write_text("\n".join(CATEGORIES))
    (root / "noisy_label_kv.txt").write_text(f"{key('n1')} 0\n{key('n2')} 14\n")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line 2: expected '<image key> <label"):
        load_clothing1m("noisy_train", root=root)
    (root / "clean_val_key_list.txt").unlink()
    with pytest.raises(DataError, match=r"missing annotation file\(s\) clean_val_key_list.txt"):
        load_clothing1m("dirty_train", root=root)


def test_missing_root_says_how_to_get(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a directory.*request it from its authors"):
        load_clothing1m("clean_test", root=tmp_path / "absent")


def test_size_check_on_complete_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _make_clothing(tmp_path)
    ds = load_clothing1m("clean_test", root=root)
    assert ds.info["size_check"]["status"].startswith("subset")
    assert ds.info["size_check"]["noisy_train_key_list.txt"] == 6

    # Shrink the documented release to this one so the complete-download branch runs.
    monkeypatch.setattr(c1m, "FULL_THRESHOLD", 6)
    monkeypatch.setattr(c1m, "DOCUMENTED_SIZES", {k: len(v) for k, v in LISTS.items()})
    ds = load_clothing1m("clean_test", root=root)
    assert ds.info["size_check"]["status"].startswith("complete download")
    monkeypatch.setitem(c1m.DOCUMENTED_SIZES, "clean_val_key_list.txt", 4)
    with pytest.raises(DataError, match=r"clean_val_key_list.txt has 3 keys \(documented 4\)"):
        load_clothing1m("clean_test", root=root)


def test_the_pipeline_roles_are_dirty_train_clean_val_and_clean_test(tmp_path: Path) -> None:
    root = _make_clothing(tmp_path)
    for role, split in (("train", "dirty_train"), ("val", "clean_val"), ("test", "clean_test")):
        a, b = load_dataset("clothing1m", role, root=root), load_clothing1m(split, root=root)
        assert a.split == split
        assert a.paths.tolist() == b.paths.tolist() and a.labels.tolist() == b.labels.tolist()
