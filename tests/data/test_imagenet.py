"""imagenet: a tiny ILSVRC-2012 tree in the official layout, and C-score matching by file name."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mapd.data.base import ImageDataset, load_dataset
from mapd.data.imagenet import load_imagenet, match_cscores_by_filename
from mapd.errors import DataError

# Real wnids: tench, goldfish, and the two synsets ImageNet both calls "crane".
WNIDS = ("n01440764", "n01443537", "n02012849", "n03126707")
SYNSETS = {
    "n01440764": "tench, Tinca tinca",
    "n01443537": "goldfish, Carassius auratus",
    "n02012849": "crane",
    "n03126707": "crane",
}
# val image k (1-based) -> wnid; interleaved so file-name order differs from class order
VAL = {1: "n03126707", 2: "n01440764", 3: "n02012849", 4: "n01440764", 5: "n01443537"}


def _jpeg_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_imagenet(root: Path, *, val_layout: str = "folders", synsets: bool = True) -> Path:
    data = _jpeg_bytes(100)
    for w in WNIDS:
        for k in (10026, 2, 153):  # listed out of order on purpose
            _write(root / "train" / w / f"{w}_{k}.JPEG", data)
    (root / "train" / WNIDS[0] / "readme.txt").write_text("ignored")
    for k, w in VAL.items():
        name = f"ILSVRC2012_val_{k:08d}.JPEG"
        _write(root / "val" / w / name if val_layout == "folders" else root / "val" / name, data)
    if val_layout == "flat":
        rows = [f"ILSVRC2012_val_{k:08d},{w} 10 20 30 40 {w} 1 2 3 4" for k, w in VAL.items()]
        (root / "LOC_val_solution.csv").write_text(
            "ImageId,PredictionString\n" + "\n".join(rows) + "\n"
        )
    if synsets:
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {SYNSETS[w]}\n" for w in WNIDS))
    return root


def test_train_split(tmp_path: Path) -> None:
    root = _make_imagenet(tmp_path)
    ds = load_imagenet("train", root=root)
    assert ds.classes == ("tench", "goldfish", "crane (n02012849)", "crane (n03126707)")
    assert ds.info["wnids"] == list(WNIDS)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ds.index.tolist() == list(range(12))
    assert ds.images is None
    # (wnid, file name) order, names sorted as strings
    assert [Path(p).name for p in ds.paths[:3]] == [
        "n01440764_10026.JPEG",
        "n01440764_153.JPEG",
        "n01440764_2.JPEG",
    ]
    assert ds.paths[0] == str(root.resolve() / "train/n01440764/n01440764_10026.JPEG")
    assert ds.info["size_check"].startswith("4 of 1000 classes")
    assert load_dataset("imagenet", "train", root=root).labels.tolist() == ds.labels.tolist()


@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_val_split_both_layouts(tmp_path: Path, layout: str) -> None:
    root = _make_imagenet(tmp_path, val_layout=layout)
    ds = load_imagenet("val", root=root)
    # official ILSVRC2012_val_<k> order in both layouts
    assert [Path(p).name for p in ds.paths] == [f"ILSVRC2012_val_{k:08d}.JPEG" for k in VAL]
    assert ds.labels.tolist() == [WNIDS.index(w) for w in VAL.values()]
    assert ds.labels.tolist() == [3, 0, 2, 0, 1]
    assert ("LOC_val_solution.csv" in ds.info["layout"]) == (layout == "flat")


def test_without_synset_mapping_classes_are_wnids(tmp_path: Path) -> None:
    root = _make_imagenet(tmp_path, synsets=False)
    ds = load_imagenet("train", root=root)
    assert ds.classes == WNIDS


def test_kaggle_layout(tmp_path: Path) -> None:
    _make_imagenet(tmp_path / "ILSVRC/Data/CLS-LOC", val_layout="flat", synsets=False)
    for name in ("LOC_val_solution.csv",):
        (tmp_path / "ILSVRC/Data/CLS-LOC" / name).rename(tmp_path / name)
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{w} {SYNSETS[w]}\n" for w in WNIDS))
    ds = load_imagenet("val", root=tmp_path)
    assert ds.labels.tolist() == [3, 0, 2, 0, 1]
    assert ds.classes[0] == "tench"


def test_val_folder_with_unknown_wnid(tmp_path: Path) -> None:
    root = _make_imagenet(tmp_path)
    _write(root / "val/n09999999/ILSVRC2012_val_00000009.JPEG", _jpeg_bytes(1))
    with pytest.raises(DataError, match=r"validation class folder\(s\) 'n09999999' .*not training"):
        load_imagenet("val", root=root)


def test_flat_val_inconsistent_with_csv(tmp_path: Path) -> None:
    root = _make_imagenet(tmp_path, val_layout="flat")
    _write(root / "val/ILSVRC2012_val_00000077.JPEG", _jpeg_bytes(1))
    with pytest.raises(DataError, match=r"1 image\(s\) in .* no row in .*ILSVRC2012_val_00000077"):
        load_imagenet("val", root=root)
    (root / "val/ILSVRC2012_val_00000077.JPEG").unlink()
    (root / "val/ILSVRC2012_val_00000003.JPEG").unlink()
    with pytest.raises(DataError, match=r"1 ImageId\(s\) .* no image .*ILSVRC2012_val_00000003"):
        load_imagenet("val", root=root)


def test_flat_val_csv_missing_column(tmp_path: Path) -> None:
    root = _make_imagenet(tmp_path, val_layout="flat")
    (root / "LOC_val_solution.csv").write_text("ImageId,Label\nILSVRC2012_val_00000001,n01440764\n")
    with pytest.raises(DataError, match=r"no 'PredictionString' column"):
        load_imagenet("val", root=root)


def test_undecodable_train_image(tmp_path: Path) -> None:
    root = _make_imagenet(tmp_path)
    (root / "train/n01443537/n01443537_2.JPEG").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"cannot decode image .*n01443537_2\.JPEG"):
        load_imagenet("train", root=root)


def test_full_class_set_checks_documented_count(tmp_path: Path) -> None:
    data = _jpeg_bytes(5)
    for i in range(1000):
        w = f"n{i:08d}"
        _write(tmp_path / "train" / w / f"{w}_1.JPEG", data)
    with pytest.raises(
        DataError, match=r"all 1000 classes .* 1,000 images; ILSVRC-2012 has 1,281,167"
    ):
        load_imagenet("train", root=tmp_path)


def test_missing_root_says_licence(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a directory.*needs a licence"):
        load_imagenet("train", root=tmp_path / "absent")


# --- C-scores matched by file name ------------------------------------------------------------


def _cscore_file(
    path: Path, ds: ImageDataset, *, full_labels: list[int], as_bytes: bool, extra: bool = True
) -> None:
    """Write the published format: one row per training image, shuffled, plus an unrelated row."""
    names = [Path(p).name for p in ds.paths]
    rng = np.random.default_rng(1)
    order = rng.permutation(len(names))
    filenames = [f"train/{names[i].split('_')[0]}/{names[i]}" for i in order]
    labels = [full_labels[ds.labels[i]] for i in order]
    scores = [0.01 * i for i in order]  # score of row i of ds = 0.01 * i
    if extra:
        filenames.append("n09999999_1.JPEG")  # an image of another class, not in ds
        labels.append(999)
        scores.append(0.5)
    arr = np.array([f.encode() for f in filenames]) if as_bytes else np.array(filenames)
    np.savez(path, labels=np.array(labels, np.int64), scores=np.array(scores), filenames=arr)


@pytest.mark.parametrize("as_bytes", [True, False])
def test_match_cscores(tmp_path: Path, as_bytes: bool) -> None:
    ds = load_imagenet("train", root=_make_imagenet(tmp_path / "in"))
    npz = tmp_path / "imagenet-cscores-with-filename.npz"
    # the 4 classes sit at these positions of the full sorted-wnid list
    _cscore_file(npz, ds, full_labels=[0, 1, 127, 517], as_bytes=as_bytes)
    scores = match_cscores_by_filename(ds, npz)
    assert scores.dtype == np.float64 and scores.shape == (len(ds),)
    np.testing.assert_allclose(scores, 0.01 * np.arange(len(ds)))


def test_match_cscores_missing_example(tmp_path: Path) -> None:
    ds = load_imagenet("train", root=_make_imagenet(tmp_path / "in"))
    npz = tmp_path / "c.npz"
    _cscore_file(npz, ds, full_labels=[0, 1, 127, 517], as_bytes=True)
    with np.load(npz) as z:
        keep = np.array([not f.endswith(b"n01443537_153.JPEG") for f in z["filenames"]])
        np.savez(npz, **{k: z[k][keep] for k in z.files})
    with pytest.raises(DataError, match=r"1 of 12 examples have no C-score .*n01443537_153\.JPEG"):
        match_cscores_by_filename(ds, npz)


def test_match_cscores_label_disagreement(tmp_path: Path) -> None:
    ds = load_imagenet("train", root=_make_imagenet(tmp_path / "in"))
    npz = tmp_path / "c.npz"
    _cscore_file(npz, ds, full_labels=[0, 1, 127, 517], as_bytes=True)
    with np.load(npz) as z:
        arrays = {k: z[k].copy() for k in z.files}
    hit = np.flatnonzero([f.endswith(b"n02012849_2.JPEG") for f in arrays["filenames"]])[0]
    arrays["labels"][hit] = 1  # goldfish's label on a crane image
    np.savez(npz, **arrays)
    with pytest.raises(DataError, match=r"labels disagree for 1 matched .*n02012849_2\.JPEG"):
        match_cscores_by_filename(ds, npz)

    # classes in the wrong order (not increasing in the full list) are refused as well
    _cscore_file(npz, ds, full_labels=[1, 0, 127, 517], as_bytes=True)
    with pytest.raises(DataError, match="not one-to-one and increasing"):
        match_cscores_by_filename(ds, npz)


def test_match_cscores_same_classes_need_equal_labels(tmp_path: Path) -> None:
    ds = load_imagenet("train", root=_make_imagenet(tmp_path / "in"))
    npz = tmp_path / "c.npz"
    _cscore_file(npz, ds, full_labels=[0, 1, 2, 3], as_bytes=False, extra=False)
    np.testing.assert_allclose(match_cscores_by_filename(ds, npz), 0.01 * np.arange(len(ds)))
    # same class set in the file: a consistent relabelling is still a disagreement
    _cscore_file(npz, ds, full_labels=[0, 1, 3, 2], as_bytes=False, extra=False)
    with pytest.raises(DataError, match=r"labels disagree for 6 matched .*rule: equal labels"):
        match_cscores_by_filename(ds, npz)


def test_match_cscores_needs_paths(tmp_path: Path) -> None:
    ds = ImageDataset(
        name="x",
        split="train",
        labels=np.zeros(1),
        classes=("a",),
        index=np.zeros(1),
        images=np.zeros((1, 2, 2, 3), np.uint8),
    )
    with pytest.raises(DataError, match="file-backed"):
        match_cscores_by_filename(ds, tmp_path / "none.npz")
