"""CelebA (Liu et al. 2015) with a binary target attribute and a spurious attribute, as in JTT.

Accepted layouts under ``root`` (the first that matches wins):

- ``root/`` or ``root/celeba/`` (torchvision's download folder) holding ``img_align_celeba/``
  and the annotation files, either the official text files

  - ``list_attr_celeba.txt``: line 1 the image count, line 2 the 40 attribute names, then
    ``filename v1 .. v40`` with values -1/1, separated by one or more spaces;
  - ``list_eval_partition.txt``: ``filename p`` with p = 0 train, 1 val, 2 test;

  or the CSV variants JTT uses (``list_attr_celeba.csv`` with header ``image_id`` + the 40
  names, ``list_eval_partition.csv`` with header ``image_id,partition``). The text file is
  used when both kinds are present. The Kaggle copy nests the images one level deeper
  (``img_align_celeba/img_align_celeba/``); that is accepted too.

Labels are the target attribute as 0/1 (classes ``not_<target>``, ``<target>``); attrs
``spurious`` (0/1), ``group`` = 2 * label + spurious and ``minority``. The minority definition
follows the authors (REFERENCE sec. 4): for Blond_Hair / Male, blond hair correlates with
being female, so the minority groups are those where label == spurious (blond males, the
smallest group, and non-blond females): ``minority="label_equals_spurious"`` (default).
``"label_differs_spurious"`` gives the complement, for attribute pairs correlated the other
way. Rows keep the partition file's order; ``index`` is the position within the split.

``download=True`` calls ``torchvision.datasets.CelebA(root, split="all", download=True)``,
which fetches the official files from Google Drive into ``root/celeba/`` (needs ``gdown`` and
often fails on Drive quotas; not tested here). Without it a missing data set is a DataError
saying what to put where.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mapd.data.base import ImageDataset, register
from mapd.data.files import check_decodable, check_files_exist, require_dir
from mapd.errors import ConfigError, DataError

SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images + Anno + Eval)"
HOW_TO_GET = (
    "Download img_align_celeba.zip, list_attr_celeba.txt and list_eval_partition.txt from "
    f"{SOURCE} (or the Kaggle CSV copy JTT uses) and put them in ROOT so that "
    "ROOT/img_align_celeba/*.jpg exists, or pass download=True to fetch them with torchvision."
)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
MINORITY_RULES = ("label_equals_spurious", "label_differs_spurious")
NUM_ATTRS = 40
FULL_TOTAL = 202_599
FULL_SPLIT_SIZES = {"train": 162_770, "val": 19_867, "test": 19_962}


def _py(value: object) -> object:
    """A numpy scalar as the plain Python value, so messages read ``3``, not ``np.int64(3)``."""
    return value.item() if isinstance(value, np.generic) else value


def _annotation(folder: Path, stem: str) -> Path | None:
    for suffix in (".txt", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _find_folder(root: Path) -> Path | None:
    """The folder with ``img_align_celeba/`` and both annotation files, or None."""
    for cand in (root, root / "celeba"):
        if (
            (cand / "img_align_celeba").is_dir()
            and _annotation(cand, "list_attr_celeba") is not None
            and _annotation(cand, "list_eval_partition") is not None
        ):
            return cand
    return None


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import CelebA
    except ImportError as e:  # torchvision is a dependency, but keep the message clear
        raise DataError(f"celeba: download=True needs torchvision: {e}") from e
    root.mkdir(parents=True, exist_ok=True)
    try:
        CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as e:  # network, gdown or Drive-quota failures: all mean "get it by hand"
        raise DataError(
            f"celeba: torchvision download into {root / 'celeba'} failed: {e}. {HOW_TO_GET}"
        ) from e


def _read_partition(path: Path) -> pd.DataFrame:
    """Columns ``image_id`` (str) and ``partition`` (int64 in 0/1/2), in file order."""
    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path, dtype={"image_id": str})
        else:
            df = pd.read_csv(
                path,
                sep=r"\s+",
                header=None,
                names=["image_id", "partition"],
                dtype={"image_id": str},
            )
    except Exception as e:  # pandas raises several types for a malformed file
        raise DataError(f"celeba: cannot parse {path}: {e}") from e
    for col in ("image_id", "partition"):
        if col not in df.columns:
            raise DataError(
                f"celeba: {path} lacks column {col!r}; has {', '.join(map(str, df.columns))}"
            )
    part = pd.to_numeric(df["partition"], errors="coerce")
    bad = ~part.isin(tuple(SPLIT_CODES.values())) | df["image_id"].isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"celeba: {path}: data row {row + 1} ({df['image_id'].iloc[row]!r}) has partition "
            f"{_py(df['partition'].iloc[row])!r}; expected 0, 1 or 2"
        )
    dup = df["image_id"].duplicated()
    if dup.any():
        raise DataError(f"celeba: {path}: image {df['image_id'][dup].iloc[0]!r} is listed twice")
    return pd.DataFrame(
        {"image_id": df["image_id"].astype(str), "partition": part.astype(np.int64)}
    )


def _read_attributes(path: Path) -> pd.DataFrame:
    """Attribute table indexed by image id, one int8 column per attribute (values -1/1)."""
    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path, dtype={"image_id": str})
            if "image_id" not in df.columns:
                raise DataError(
                    f"celeba: {path} lacks column 'image_id'; has {', '.join(df.columns[:5])}, ..."
                )
            df = df.set_index("image_id")
        else:
            with open(path) as f:
                count_line = f.readline().strip()
                names = f.readline().split()
            try:
                count = int(count_line)
            except ValueError as e:
                raise DataError(
                    f"celeba: {path}: first line must be the image count, got {count_line!r}"
                ) from e
            if len(names) != NUM_ATTRS:
                raise DataError(
                    f"celeba: {path}: line 2 must name {NUM_ATTRS} attributes; "
                    f"it names {len(names)}"
                )
            df = pd.read_csv(
                path,
                sep=r"\s+",
                skiprows=2,
                header=None,
                index_col=0,
                names=["image_id", *names],
                dtype={"image_id": str},
            )
            if len(df) != count:
                raise DataError(
                    f"celeba: {path}: count line says {count} images but {len(df)} rows follow"
                )
    except DataError:
        raise
    except Exception as e:  # ragged rows etc.
        raise DataError(f"celeba: cannot parse {path}: {e}") from e
    if df.shape[1] != NUM_ATTRS:
        raise DataError(f"celeba: {path} has {df.shape[1]} attribute columns; expected {NUM_ATTRS}")
    values = df.apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin((-1, 1))
    if bad.to_numpy().any():
        r, c = (int(i[0]) for i in np.nonzero(bad.to_numpy()))
        raise DataError(
            f"celeba: {path}: image {df.index[r]!r}, attribute {df.columns[c]!r} has value "
            f"{_py(df.iloc[r, c])!r}; expected -1 or 1"
        )
    if df.index.duplicated().any():
        raise DataError(
            f"celeba: {path}: image {df.index[df.index.duplicated()][0]!r} is listed twice"
        )
    return values.astype(np.int8)


def _check_full_sizes(part: pd.DataFrame, path: Path) -> str:
    if len(part) != FULL_TOTAL:
        return f"partial ({len(part)} of {FULL_TOTAL} images): split sizes not checked"
    got = {s: int((part["partition"] == code).sum()) for s, code in SPLIT_CODES.items()}
    if got != FULL_SPLIT_SIZES:
        raise DataError(
            f"celeba: {path} lists all {FULL_TOTAL} images but split sizes {got}; "
            f"the official partition has {FULL_SPLIT_SIZES}"
        )
    return "full release: split sizes match"


def _check_attribute(name: str, role: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise ConfigError(
            f"celeba: unknown {role} attribute {name!r}; valid names: {', '.join(valid)}"
        )


@register(
    "celeba",
    splits=("train", "val", "test"),
    sizes={"train": 162770, "val": 19867, "test": 19962},
    description="CelebA faces: target attribute (Blond_Hair), spurious attribute (Male)",
    source=SOURCE,
)
def load_celeba(
    split: str,
    *,
    root: str | Path | None = None,
    target: str = "Blond_Hair",
    spurious: str = "Male",
    minority: str = "label_equals_spurious",
    download: bool = False,
    decode_sample: int | None = 64,
) -> ImageDataset:
    """Load one split of CelebA as a file-backed :class:`ImageDataset`.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (partition 0, 1, 2).
        root: directory with the files (see the module docstring for the layouts).
        target: attribute used as the label (1 where the attribute is 1).
        spurious: attribute used as the spurious attribute.
        minority: ``"label_equals_spurious"`` (the authors' choice for Blond_Hair / Male) or
            ``"label_differs_spurious"``.
        download: fetch the data with torchvision when it is not found under ``root``.
        decode_sample: how many of the split's images to decode as a check; ``None`` all,
            ``0`` none.

    Returns:
        labels (N,) int64, ``paths`` (N,) absolute str, ``index`` (N,) int64 position in the
        partition file's order within the split, attrs ``spurious`` int64, ``group`` int64
        (= 2 * label + spurious), ``minority`` bool.
    """
    if target == spurious:
        raise ConfigError(f"celeba: target and spurious attribute are both {target!r}")
    if minority not in MINORITY_RULES:
        raise ConfigError(
            f"celeba: minority must be one of {', '.join(MINORITY_RULES)}, got {minority!r}"
        )
    if root is not None and download:
        _root = Path(root).expanduser()
        if _find_folder(_root) is None:
            _download(_root)
    base = require_dir(
        root,
        dataset="celeba",
        expected="img_align_celeba/ with list_attr_celeba and list_eval_partition (.txt or .csv)",
        how_to_get=HOW_TO_GET,
    )
    folder = _find_folder(base)
    if folder is None:
        raise DataError(
            f"celeba: neither {base} nor {base / 'celeba'} holds img_align_celeba/ plus "
            f"list_attr_celeba and list_eval_partition (.txt or .csv). {HOW_TO_GET}"
        )
    folder = folder.resolve()
    attr_path = _annotation(folder, "list_attr_celeba")
    part_path = _annotation(folder, "list_eval_partition")
    assert attr_path is not None and part_path is not None  # _find_folder checked both

    part = _read_partition(part_path)
    size_status = _check_full_sizes(part, part_path)
    attrs = _read_attributes(attr_path)
    valid = [str(c) for c in attrs.columns]
    _check_attribute(target, "target", valid)
    _check_attribute(spurious, "spurious", valid)

    ids = part.loc[part["partition"] == SPLIT_CODES[split], "image_id"].to_numpy(dtype=object)
    unknown = ~pd.Index(ids).isin(attrs.index)
    if unknown.any():
        raise DataError(
            f"celeba: {part_path} lists {int(unknown.sum())} image(s) with no row in {attr_path}, "
            f"e.g. {ids[unknown][0]!r}"
        )
    rows = attrs.loc[ids]
    labels = (rows[target].to_numpy() == 1).astype(np.int64)
    spur = (rows[spurious].to_numpy() == 1).astype(np.int64)
    is_minority = labels == spur if minority == "label_equals_spurious" else labels != spur

    img_dir = folder / "img_align_celeba"
    if (img_dir / "img_align_celeba").is_dir():  # Kaggle's nested copy
        img_dir = img_dir / "img_align_celeba"
    paths = np.array([str(img_dir / i) for i in ids], dtype=object)
    what = f"celeba/{split} ({part_path})"
    check_files_exist(paths, what=what)
    if decode_sample != 0:
        check_decodable(paths, what=what, sample=decode_sample)
    return ImageDataset(
        name="celeba",
        split=split,
        labels=labels,
        classes=(f"not_{target}", target),
        index=np.arange(len(ids), dtype=np.int64),
        paths=paths,
        attrs={"spurious": spur, "group": 2 * labels + spur, "minority": is_minority},
        info={
            "root": str(folder),
            "source": SOURCE,
            "attributes_file": str(attr_path),
            "partition_file": str(part_path),
            "size_check": size_status,
            "target": target,
            "spurious": spurious,
            "groups": f"group = 2 * {target} + {spurious} (0/1 each)",
            "minority": minority,
        },
    )
