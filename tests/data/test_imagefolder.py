"""imagefolder: class-folder trees and CSV manifests of small real PNG/JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mapd.data.base import load_dataset
from mapd.data.imagefolder import load_imagefolder
from mapd.errors import ConfigError, DataError


def _png(path: Path, value: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> Path:
    """A uniform image of ``value`` (h, w = size) written as a real PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def split_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    _png(root / "train/cat/b.png", 20)
    _png(root / "train/cat/a.png", 10)
    _png(root / "train/dog/sub/c.png", 30)  # images may sit in sub-folders of a class
    (root / "train/dog/notes.txt").write_text("not an image")
    _png(root / "val/dog/d.png", 40)
    _png(root / "val/bird/e.png", 50)  # a class seen only in val still gets a stable label
    return root


def test_split_tree_in_memory(split_tree: Path) -> None:
    ds = load_imagefolder("train", root=split_tree, in_memory=True)
    assert ds.classes == ("bird", "cat", "dog")
    assert ds.labels.tolist() == [1, 1, 2]
    assert ds.index.tolist() == [0, 1, 2]
    assert ds.paths is None and ds.images is not None
    assert ds.images.shape == (3, 6, 5, 3) and ds.images.dtype == np.uint8
    # sorted file-path order: cat/a, cat/b, dog/sub/c
    assert ds.images[:, 0, 0, 0].tolist() == [10, 20, 30]
    assert ds.info["layout"] == "ROOT/<split>/<class>/<image>"
    assert ds.info["ignored_non_image_files"] == 1
    assert ds.info["checked"] == "decoded all 3 images"

    val = load_imagefolder("val", root=split_tree, in_memory=True)
    assert val.classes == ds.classes
    assert val.labels.tolist() == [0, 2]
    assert val.images[:, 0, 0, 0].tolist() == [50, 40]


def test_split_tree_paths_and_registry(split_tree: Path) -> None:
    ds = load_dataset("imagefolder", "train", root=split_tree, in_memory=False)
    assert ds.images is None
    assert [Path(p).relative_to(split_tree).as_posix() for p in ds.paths] == [
        "train/cat/a.png",
        "train/cat/b.png",
        "train/dog/sub/c.png",
    ]
    assert all(Path(p).is_absolute() for p in ds.paths)
    assert ds.info["storage"] == "files" and ds.info["color_mode"] == "RGB"
    with pytest.raises(ConfigError, match="no 'test' folder"):
        load_imagefolder("test", root=split_tree)


def test_tree_without_split_folders_is_train_only(tmp_path: Path) -> None:
    _png(tmp_path / "b_class/x.png", 1)
    _png(tmp_path / "a_class/y.PNG", 2)
    ds = load_imagefolder("train", root=tmp_path, in_memory=True)
    assert ds.classes == ("a_class", "b_class")
    assert ds.labels.tolist() == [0, 1]
    with pytest.raises(ConfigError, match=r"no split folders .* no 'val' split"):
        load_imagefolder("val", root=tmp_path)


def test_given_classes_order_and_unknown_folder(split_tree: Path) -> None:
    ds = load_imagefolder("train", root=split_tree, classes=["dog", "cat", "bird"])
    assert ds.classes == ("dog", "cat", "bird")
    assert ds.labels.tolist() == [1, 1, 0]
    with pytest.raises(DataError, match=r"class folder\(s\) 'bird' .* not in the given classes"):
        load_imagefolder("train", root=split_tree, classes=["cat", "dog"])


@pytest.mark.parametrize("in_memory", [True, False, "auto"])
def test_undecodable_image_names_the_file(tmp_path: Path, in_memory: bool | str) -> None:
    _png(tmp_path / "cat/good.png", 5)
    (tmp_path / "cat/broken.png").write_bytes(b"this is not a PNG file")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_imagefolder("train", root=tmp_path, in_memory=in_memory)


def test_missing_root_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a directory.*ROOT/<class>/<image>"):
        load_imagefolder("train", root=tmp_path / "nope")


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    _png(tmp_path / "a/small.png", 100, size=(4, 4))
    _png(tmp_path / "b/large.png", 200, size=(10, 7))
    with pytest.raises(DataError, match="set image_size"):
        load_imagefolder("train", root=tmp_path, in_memory=True)

    ds = load_imagefolder("train", root=tmp_path, in_memory=True, image_size=[8, 6])
    assert ds.images.shape == (2, 8, 6, 3)
    # bilinear resizing of a uniform image keeps its value
    assert ds.images[0].min() == ds.images[0].max() == 100
    assert ds.images[1].min() == ds.images[1].max() == 200
    assert ds.info["resized"] is True

    square = load_imagefolder("train", root=tmp_path, in_memory=True, image_size=5)
    assert square.images.shape == (2, 5, 5, 3)

    auto = load_imagefolder("train", root=tmp_path, in_memory="auto")
    assert auto.images is None
    assert "mixed image sizes" in auto.info["storage_reason"]


def test_auto_respects_memory_budget(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / f"c/{i}.png", i, size=(32, 32))
    small = load_imagefolder("train", root=tmp_path, in_memory="auto")
    assert small.images is not None and small.images.shape == (3, 32, 32, 3)
    # 3 * 32 * 32 * 3 bytes = 9 KB > 0.001 MB
    big = load_imagefolder("train", root=tmp_path, in_memory="auto", max_memory_mb=0.001)
    assert big.images is None and big.paths is not None
    assert "max_memory_mb" in big.info["storage_reason"]


def test_grayscale_kept_only_when_all_gray(tmp_path: Path) -> None:
    _png(tmp_path / "a/0.png", 70, mode="L")
    _png(tmp_path / "b/1.png", 90, mode="L")
    gray = load_imagefolder("train", root=tmp_path, in_memory=True)
    assert gray.images.shape == (2, 6, 5, 1)
    assert gray.images[:, 0, 0, 0].tolist() == [70, 90]
    assert gray.info["color_mode"] == "L"

    _png(tmp_path / "b/2.png", 30)  # one RGB image -> everything becomes RGB
    rgb = load_imagefolder("train", root=tmp_path, in_memory=True)
    assert rgb.images.shape == (3, 6, 5, 3)
    assert rgb.images[0, 0, 0].tolist() == [70, 70, 70]


def test_jpeg_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "cls/photo.JPG"
    path.parent.mkdir()
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(path, format="JPEG")
    ds = load_imagefolder("train", root=tmp_path, in_memory=True)
    assert len(ds) == 1 and abs(int(ds.images[0, 4, 4, 0]) - 128) <= 2


# --- manifest ---------------------------------------------------------------------------------


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    _png(data / "imgs/0.png", 0)
    _png(data / "imgs/1.png", 1)
    _png(data / "imgs/2.png", 2)
    absolute = _png(tmp_path / "elsewhere/3.png", 3)
    _png(data / "imgs/4.png", 4)
    path = data / "manifest.csv"
    path.write_text(
        "path,label,group,split\n"
        "imgs/0.png,zebra,1,train\n"
        "imgs/1.png,ant,0,val\n"
        "imgs/2.png,ant,2,train\n"
        f"{absolute},moth,1,train\n"
        "imgs/4.png,zebra,0,test\n"
    )
    return path


def test_manifest_rows_labels_groups_splits(manifest: Path) -> None:
    ds = load_imagefolder("train", manifest=manifest, in_memory=False)
    # classes come from the whole manifest so every split shares them
    assert ds.classes == ("ant", "moth", "zebra")
    assert ds.labels.tolist() == [2, 0, 1]
    assert ds.attrs["group"].tolist() == [1, 2, 1]
    assert ds.attrs["group"].dtype == np.int64
    assert ds.attrs["manifest_row"].tolist() == [0, 2, 3]
    assert ds.index.tolist() == [0, 1, 2]
    assert [Path(p).name for p in ds.paths] == ["0.png", "2.png", "3.png"]
    assert ds.paths[0] == str(manifest.parent / "imgs/0.png")
    assert ds.info["layout"] == "manifest"

    test = load_imagefolder("test", manifest=manifest, in_memory=True)
    assert test.labels.tolist() == [2]
    assert test.images[0, 0, 0, 0] == 4

    # a relative manifest path resolves against root
    val = load_imagefolder("val", root=manifest.parent, manifest="manifest.csv")
    assert val.labels.tolist() == [0]


def test_manifest_integer_labels_and_given_classes(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    path = tmp_path / "m.csv"
    path.write_text("path,label\na.png,3\nb.png,0\n")
    ds = load_imagefolder("train", manifest=path)
    assert ds.classes == ("0", "1", "2", "3")
    assert ds.labels.tolist() == [3, 0]
    assert "group" not in ds.attrs

    named = load_imagefolder("train", manifest=path, classes=["w", "x", "y", "z"])
    assert named.labels.tolist() == [3, 0] and named.classes == ("w", "x", "y", "z")
    with pytest.raises(DataError, match=r"line 2: label '3' is outside \[0, 2\)"):
        load_imagefolder("train", manifest=path, classes=["w", "x"])

    path.write_text("path,label\na.png,cat\nb.png,emu\n")
    with pytest.raises(DataError, match=r"line 3: label 'emu' is not one of the given classes"):
        load_imagefolder("train", manifest=path, classes=["cat", "dog"])


def test_manifest_missing_column(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    path = tmp_path / "m.csv"
    path.write_text("path,class\na.png,cat\n")
    with pytest.raises(DataError, match=r"no 'label' column; it has path, class"):
        load_imagefolder("train", manifest=path)


def test_manifest_without_split_column_is_train_only(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    path = tmp_path / "m.csv"
    path.write_text("path,label\na.png,cat\n")
    assert len(load_imagefolder("train", manifest=path)) == 1
    with pytest.raises(ConfigError, match="no 'split' column"):
        load_imagefolder("test", manifest=path)


def test_manifest_unknown_split_and_missing_file(manifest: Path) -> None:
    text = manifest.read_text().replace(",val\n", ",holdout\n")
    manifest.write_text(text)
    with pytest.raises(ConfigError, match=r"no rows with split 'val' .*holdout"):
        load_imagefolder("val", manifest=manifest)
    (manifest.parent / "imgs/2.png").unlink()
    with pytest.raises(DataError, match=r"1 listed image file\(s\) do not exist: .*imgs/2\.png"):
        load_imagefolder("train", manifest=manifest)


def test_manifest_undecodable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but truncated")
    path = tmp_path / "m.csv"
    path.write_text("path,label\nbad.png,cat\n")
    with pytest.raises(DataError, match=r"cannot decode image .*bad\.png"):
        load_imagefolder("train", manifest=path, in_memory=False)


def test_bad_options(split_tree: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_imagefolder("train", root=split_tree, image_size=[4, 4, 4])
    with pytest.raises(ConfigError, match="in_memory"):
        load_imagefolder("train", root=split_tree, in_memory="yes")


def test_an_empty_class_folder_is_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _png(root / "cat/a.png", 10)
    _png(root / "dog/b.png", 20)
    (root / "empty").mkdir()
    ds = load_imagefolder("train", root=root, in_memory=True)
    assert ds.classes == ("cat", "dog", "empty")  # the folder still names a class
    [warning] = ds.info["warnings"]
    assert "'empty' has no images" in warning and str(root) in warning
    assert load_imagefolder("train", root=tmp_path / "tree", in_memory=True).summary()["info"][
        "warnings"
    ] == [warning]


def test_a_name_among_integer_labels_is_an_error_naming_its_line(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / f"{i}.png", 10 * i)
    (tmp_path / "m.csv").write_text("path,label\n0.png,0\n1.png,1\n2.png,two\n3.png,2\n")
    with pytest.raises(DataError, match=r"m\.csv line 4: label 'two' is a class name but 3 of"):
        load_imagefolder("train", manifest=tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("path,label\n0.png,cat\n1.png,dog\n2.png,7\n3.png,cat\n")
    with pytest.raises(DataError, match=r"n\.csv line 4: label '7' is an integer but 3 of"):
        load_imagefolder("train", manifest=tmp_path / "n.csv")


def test_integer_labels_with_a_gap_warn_about_the_empty_class(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / f"{i}.png", 10 * i)
    (tmp_path / "m.csv").write_text("path,label\n0.png,0\n1.png,1\n2.png,3\n")
    ds = load_imagefolder("train", manifest=tmp_path / "m.csv")
    assert ds.classes == ("0", "1", "2", "3")
    assert len(ds.info["warnings"]) == 1 and "'2' has no images" in ds.info["warnings"][0]


def test_count_lists_without_decoding(split_tree: Path, manifest: Path) -> None:
    from mapd.data import split_size

    assert split_size("imagefolder", "train", root=split_tree) == 3
    assert split_size("imagefolder", "val", root=split_tree) == 2
    assert split_size("imagefolder", "train", manifest=manifest) == len(
        load_imagefolder("train", manifest=manifest)
    )
    assert (
        split_size("cifar10", "train") == 50000 and split_size("clothing1m", "dirty_train") is None
    )
