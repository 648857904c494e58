"""Waterbirds (Sagawa et al. 2020): CUB birds pasted onto Places backgrounds, with group labels.

On disk (the group_DRO / WILDS release)::

    waterbird_complete95_forest2water2/
        metadata.csv          img_id, img_filename, y, split, place[, place_filename]
        001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg
        ...

``y`` is 1 for a waterbird, ``place`` is 1 for a water background, ``split`` is 0 train,
1 val, 2 test. Groups follow JTT / group DRO::

    group = 2 * y + place
      0  landbird on land     (majority)
      1  landbird on water    (minority)
      2  waterbird on land    (minority)
      3  waterbird on water   (majority)

``minority`` is ``y != place`` (groups 1 and 2). Rows of a split are ordered by ``img_id``;
``index`` is the position in that order (0..N-1) and the attribute ``img_id`` keeps the
global identifier. Images are not decoded here: the data set is file-backed (``paths``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mapd.data.base import ImageDataset, register
from mapd.data.files import check_decodable, check_files_exist, require_dir
from mapd.errors import DataError

FOLDER = "waterbird_complete95_forest2water2"
SOURCE_URL = "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz"
HOW_TO_GET = (
    f"Download the group_DRO tarball {SOURCE_URL} (the WILDS 'waterbirds_v1.0' archive has the "
    f"same metadata.csv) and extract it so that ROOT/{FOLDER}/metadata.csv exists; pass ROOT "
    f"(or the {FOLDER} folder itself) as root."
)
CLASSES = ("landbird", "waterbird")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
REQUIRED_COLUMNS = ("img_id", "img_filename", "y", "split", "place")
# Sizes of the official release, checked only when all of it is present.
FULL_TOTAL = 11_788
FULL_SPLIT_SIZES = {"train": 4_795, "val": 1_199, "test": 5_794}


def _py(value: object) -> object:
    """A numpy scalar as the plain Python value, so messages read ``3``, not ``np.int64(3)``."""
    return value.item() if isinstance(value, np.generic) else value


def _find_folder(root: Path) -> Path:
    """The folder holding ``metadata.csv``: ``root`` itself or ``root/FOLDER``."""
    for cand in (root, root / FOLDER):
        if (cand / "metadata.csv").is_file():
            return cand
    raise DataError(
        f"waterbirds: no metadata.csv in {root} or {root / FOLDER}. Expected "
        f"{FOLDER}/metadata.csv plus its image folders. {HOW_TO_GET}"
    )


def _read_metadata(path: Path) -> pd.DataFrame:
    """Read and validate ``metadata.csv``; the integer columns come back as int64."""
    try:
        df = pd.read_csv(path)
    except Exception as e:  # pandas raises several types for a malformed CSV
        raise DataError(f"waterbirds: cannot parse {path}: {e}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"waterbirds: {path} lacks column(s) {', '.join(missing)}; "
            f"has {', '.join(map(str, df.columns))}"
        )
    allowed = {"img_id": None, "y": (0, 1), "place": (0, 1), "split": (0, 1, 2)}
    for col, values in allowed.items():
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num != np.floor(num))
        if values is not None:
            bad |= ~num.isin(values)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            want = "an integer" if values is None else f"one of {set(values)}"
            raise DataError(
                f"waterbirds: {path}: column {col!r} must be {want}; "
                f"data row {row + 1} has {_py(df[col].iloc[row])!r}"
            )
        df[col] = num.astype(np.int64)
    dup = df["img_id"].duplicated()
    if dup.any():
        raise DataError(
            f"waterbirds: {path}: img_id {int(df['img_id'][dup].iloc[0])} appears more than once"
        )
    if df["img_filename"].isna().any():
        row = int(np.flatnonzero(df["img_filename"].isna().to_numpy())[0])
        raise DataError(f"waterbirds: {path}: data row {row + 1} has an empty img_filename")
    return df


def _check_full_sizes(df: pd.DataFrame, path: Path) -> str:
    """Compare split sizes with the official release when the file lists all of it."""
    if len(df) != FULL_TOTAL:
        return f"partial ({len(df)} of {FULL_TOTAL} rows): split sizes not checked"
    got = {s: int((df["split"] == code).sum()) for s, code in SPLIT_CODES.items()}
    if got != FULL_SPLIT_SIZES:
        raise DataError(
            f"waterbirds: {path} has all {FULL_TOTAL} rows but split sizes {got}; "
            f"the official release has {FULL_SPLIT_SIZES}"
        )
    return "full release: split sizes match"


@register(
    "waterbirds",
    splits=("train", "val", "test"),
    sizes={"train": 4795, "val": 1199, "test": 5794},
    description="Waterbirds: CUB birds on Places backgrounds; label waterbird, group = 2*y + place",
    source=SOURCE_URL,
)
def load_waterbirds(
    split: str, *, root: str | Path | None = None, decode_sample: int | None = 64
) -> ImageDataset:
    """Load one split of Waterbirds as a file-backed :class:`ImageDataset`.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: the directory holding ``waterbird_complete95_forest2water2/`` (or that folder).
        decode_sample: how many of the split's images to decode as a check (seeded sample);
            ``None`` decodes all, ``0`` skips the check.

    Returns:
        labels (N,) int64 (1 = waterbird), ``paths`` (N,) absolute str, ``index`` (N,) int64
        position in img_id order, attrs ``place`` int64, ``group`` int64 (= 2*y + place),
        ``minority`` bool (= y != place), ``img_id`` int64.
    """
    base = require_dir(
        root,
        dataset="waterbirds",
        expected=f"a directory with {FOLDER}/metadata.csv",
        how_to_get=HOW_TO_GET,
    )
    folder = _find_folder(base).resolve()
    meta_path = folder / "metadata.csv"
    df = _read_metadata(meta_path)
    full_status = _check_full_sizes(df, meta_path)

    rows = df[df["split"] == SPLIT_CODES[split]].sort_values("img_id", kind="stable")
    y = rows["y"].to_numpy(np.int64)
    place = rows["place"].to_numpy(np.int64)
    paths = np.array([str(folder / f) for f in rows["img_filename"].astype(str)], dtype=object)
    what = f"waterbirds/{split} ({meta_path})"
    check_files_exist(paths, what=what)
    if decode_sample != 0:
        check_decodable(paths, what=what, sample=decode_sample)
    return ImageDataset(
        name="waterbirds",
        split=split,
        labels=y,
        classes=CLASSES,
        index=np.arange(len(rows), dtype=np.int64),
        paths=paths,
        attrs={
            "place": place,
            "group": 2 * y + place,
            "minority": y != place,
            "img_id": rows["img_id"].to_numpy(np.int64),
        },
        info={
            "root": str(folder),
            "source": SOURCE_URL,
            "metadata": str(meta_path),
            "size_check": full_status,
            "groups": "0 landbird/land, 1 landbird/water, 2 waterbird/land, 3 waterbird/water",
            "minority": "y != place (groups 1 and 2)",
        },
    )
