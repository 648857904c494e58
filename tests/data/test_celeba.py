"""CelebA loader on tiny copies in the official text layout, the JTT CSV layout and
torchvision's download layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mapd.data.base import load_dataset
from mapd.data.celeba import FULL_TOTAL, load_celeba
from mapd.errors import ConfigError, DataError

NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
BLOND, MALE, SMILING = NAMES.index("Blond_Hair"), NAMES.index("Male"), NAMES.index("Smiling")
# (blond, male, smiling, partition) per image 000001.jpg, 000002.jpg, ...
SPEC = [
    (1, 0, 1, 0),  # blond female: group 2, majority
    (0, 1, 0, 0),  # non-blond male: group 1, majority
    (1, 1, 1, 0),  # blond male: group 3, minority
    (0, 0, 0, 0),  # non-blond female: group 0, minority
    (0, 1, 1, 1),
    (1, 1, 0, 1),
    (0, 0, 1, 2),
]


def _values() -> np.ndarray:
    v = -np.ones((len(SPEC), len(NAMES)), dtype=int)
    for i, (blond, male, smiling, _) in enumerate(SPEC):
        v[i, [BLOND, MALE, SMILING]] = 2 * np.array([blond, male, smiling]) - 1
    return v


def _ids() -> list[str]:
    return [f"{i + 1:06d}.jpg" for i in range(len(SPEC))]


def _images(folder: Path) -> None:
    (folder / "img_align_celeba").mkdir(parents=True)
    for i, name in enumerate(_ids()):
        Image.new("RGB", (7, 9), (10 * i, 80, 160)).save(folder / "img_align_celeba" / name, "JPEG")


def _write_txt(folder: Path, *, count: int | None = None) -> Path:
    """The official text files: count line, names line, rows padded like the original."""
    _images(folder)
    lines = [str(len(SPEC) if count is None else count), " ".join(NAMES) + " "]
    for name, row in zip(_ids(), _values(), strict=True):
        # the original right-aligns the values, giving double spaces before each 1
        lines.append(name + "".join(f"{v:>3d}" for v in row))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    part = [f"{name} {p}" for name, (*_, p) in zip(_ids(), SPEC, strict=True)]
    (folder / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    return folder


def _write_csv(folder: Path) -> Path:
    """JTT's CSV variants (as in the Kaggle copy)."""
    _images(folder)
    header = ",".join(["image_id", *NAMES])
    rows = [",".join([n, *map(str, r)]) for n, r in zip(_ids(), _values(), strict=True)]
    (folder / "list_attr_celeba.csv").write_text("\n".join([header, *rows]) + "\n")
    part = [f"{n},{p}" for n, (*_, p) in zip(_ids(), SPEC, strict=True)]
    (folder / "list_eval_partition.csv").write_text("\n".join(["image_id,partition", *part]) + "\n")
    return folder


def test_txt_layout_labels_groups_minority(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    ds = load_dataset("celeba", "train", root=tmp_path)
    assert ds.classes == ("not_Blond_Hair", "Blond_Hair")
    np.testing.assert_array_equal(ds.labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(ds.attrs["spurious"], [0, 1, 1, 0])
    np.testing.assert_array_equal(ds.attrs["group"], [2, 1, 3, 0])
    # authors' default: minority = label == spurious (blond males, non-blond females)
    np.testing.assert_array_equal(ds.attrs["minority"], [False, False, True, True])
    np.testing.assert_array_equal(ds.index, [0, 1, 2, 3])
    assert ds.paths[2] == str((tmp_path / "img_align_celeba" / "000003.jpg").resolve())
    assert "partial" in ds.info["size_check"]
    val = load_celeba("val", root=tmp_path)
    test = load_celeba("test", root=tmp_path)
    assert [Path(p).name for p in val.paths] == ["000005.jpg", "000006.jpg"]
    assert [Path(p).name for p in test.paths] == ["000007.jpg"]


def test_minority_option_and_other_attributes(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    ds = load_celeba("train", root=tmp_path, minority="label_differs_spurious")
    np.testing.assert_array_equal(ds.attrs["minority"], [True, True, False, False])
    sm = load_celeba("train", root=tmp_path, target="Smiling", spurious="Blond_Hair")
    assert sm.classes == ("not_Smiling", "Smiling")
    np.testing.assert_array_equal(sm.labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(sm.attrs["spurious"], [1, 0, 1, 0])
    with pytest.raises(ConfigError, match=r"minority must be one of"):
        load_celeba("train", root=tmp_path, minority="smallest")


def test_csv_layout_matches_txt_layout(tmp_path: Path) -> None:
    a = load_celeba("train", root=_write_txt(tmp_path / "txt"))
    b = load_celeba("train", root=_write_csv(tmp_path / "csv"))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.attrs["group"], b.attrs["group"])
    assert [Path(p).name for p in a.paths] == [Path(p).name for p in b.paths]
    assert b.info["attributes_file"].endswith("list_attr_celeba.csv")


def test_torchvision_layout(tmp_path: Path) -> None:
    _write_txt(tmp_path / "celeba")
    ds = load_celeba("val", root=tmp_path)
    np.testing.assert_array_equal(ds.labels, [0, 1])
    assert ds.info["root"] == str((tmp_path / "celeba").resolve())


def test_unknown_attribute_lists_valid_names(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown target attribute 'Blonde'.*Blond_Hair.*Young"):
        load_celeba("train", root=tmp_path, target="Blonde")
    with pytest.raises(ConfigError, match=r"unknown spurious attribute 'Female'"):
        load_celeba("train", root=tmp_path, spurious="Female")


def test_count_line_mismatch(tmp_path: Path) -> None:
    _write_txt(tmp_path, count=8)
    with pytest.raises(DataError, match=r"count line says 8 images but 7 rows follow"):
        load_celeba("train", root=tmp_path)


def test_bad_attribute_value(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    path = tmp_path / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:-2] + " 0"  # last attribute (Young) of 000002.jpg
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"image '000002.jpg', attribute 'Young' has value 0"):
        load_celeba("train", root=tmp_path)


def test_partition_names_missing_image(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    (tmp_path / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DataError, match=r"do not exist: .*000004.jpg"):
        load_celeba("train", root=tmp_path)


def test_partition_names_image_without_attributes(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    with open(tmp_path / "list_eval_partition.txt", "a") as f:
        f.write("000099.jpg 0\n")
    with pytest.raises(DataError, match=r"no row in .*list_attr_celeba.txt, e.g. '000099.jpg'"):
        load_celeba("train", root=tmp_path)


def test_bad_partition_value(tmp_path: Path) -> None:
    _write_csv(tmp_path)
    path = tmp_path / "list_eval_partition.csv"
    path.write_text(path.read_text().replace("000005.jpg,1", "000005.jpg,3"))
    with pytest.raises(DataError, match=r"'000005.jpg'.*partition 3; expected 0, 1 or 2"):
        load_celeba("train", root=tmp_path)


def test_undecodable_image(tmp_path: Path) -> None:
    _write_txt(tmp_path)
    (tmp_path / "img_align_celeba" / "000001.jpg").write_bytes(b"\xff\xd8broken")
    with pytest.raises(DataError, match=r"cannot decode image .*000001.jpg"):
        load_celeba("train", root=tmp_path)


def test_missing_root_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a directory.*download=True"):
        load_celeba("train", root=tmp_path / "absent")
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DataError, match=r"list_attr_celeba and list_eval_partition"):
        load_celeba("train", root=tmp_path)


def test_full_size_partition_mismatch(tmp_path: Path) -> None:
    (tmp_path / "img_align_celeba").mkdir()
    codes = np.repeat([0, 1, 2], [162_770, 19_867, 19_962])
    codes[-1] = 1
    assert len(codes) == FULL_TOTAL
    (tmp_path / "list_eval_partition.txt").write_text(
        "".join(f"{i + 1:06d}.jpg {c}\n" for i, c in enumerate(codes))
    )
    (tmp_path / "list_attr_celeba.txt").write_text("0\n")  # never reached
    with pytest.raises(DataError, match=r"split sizes .*'val': 19868.*official partition"):
        load_celeba("train", root=tmp_path)
