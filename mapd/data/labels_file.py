"""Human label sets read from a file, one label per example in the data set's official order.

Formats, chosen by the file's extension:

- ``.npy``: a 1-D integer array (read without pickle).
- ``.csv``: a header row, then one row per example; ``column`` names the label column. A
  ``clean_label`` column, when present, is the file's clean label set.
- ``.pt`` / ``.pth``: the CIFAR-10N / CIFAR-100N release format (Wei et al., ICLR 2022), a dict
  saved with ``torch.save`` of label arrays (numpy arrays, torch tensors or lists) such as
  ``worse_label``, ``aggre_label``, ``random_label1..3`` and ``clean_label`` (CIFAR-10N) or
  ``noisy_label`` and ``clean_label`` (CIFAR-100N); ``key`` picks one. The file is loaded with
  ``torch.load(weights_only=True)``, admitting only the globals a plain numpy array needs, so
  a crafted file cannot run code while it is read.

Every problem is a one-line :class:`~mapd.errors.DataError` naming the file: wrong length,
labels outside ``[0, num_classes)``, non-integer values, and a ``clean_label`` that disagrees
with the data set's own labels (the sign of rows in another order).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mapd.errors import DataError

CLEAN_KEY = "clean_label"
TORCH_SUFFIXES = (".pt", ".pth")
# dtype characters whose dtype classes (numpy.dtypes.Int64DType, ...) a torch.load of a numpy
# array must be allowed to build: bool, integers, floats (floats load, then fail the checks)
_ARRAY_DTYPE_CHARS = "?bBhHiIlLqQefdg"


@dataclass(frozen=True, eq=False)  # eq=False: dataclass __eq__ on arrays is ambiguous
class LabelFile:
    """A label set read by :func:`read_labels`.

    Attributes:
        labels: (n,) int64, the selected label set.
        clean: (n,) int64, the file's ``clean_label`` set, or None when it has none.
        source: the file and the key or column read, e.g. ``CIFAR-10_human.pt [key worse_label]``.
    """

    labels: np.ndarray
    clean: np.ndarray | None
    source: str


def read_labels(
    path: str | os.PathLike,
    *,
    n: int,
    num_classes: int,
    key: str | None = None,
    column: str | None = None,
    dataset_labels: np.ndarray | None = None,
) -> LabelFile:
    """Read the label set of ``path`` (``.npy``, ``.csv``, ``.pt``/``.pth``; see the module
    docstring) for a data set of ``n`` examples and ``num_classes`` classes.

    ``key`` selects the array of a ``.pt`` dict (required when it holds several), ``column``
    the column of a CSV (required). When the file has a ``clean_label`` set and
    ``dataset_labels`` (n,) int is given, the two must agree row by row: the file's rows then
    follow the data set's order.

    Raises:
        DataError: the file is missing, unreadable, of an unknown format, or its labels fail a
            check (one line naming the file and the problem).
        ValueError: ``n``, ``num_classes`` or ``dataset_labels`` is invalid.
    """
    path = Path(path)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"read_labels: n must be a positive integer, got {n!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"read_labels: num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"read_labels: num_classes must be >= 1, got {num_classes}")
    if dataset_labels is not None:
        dataset_labels = np.asarray(dataset_labels)
        if dataset_labels.shape != (n,) or dataset_labels.dtype.kind not in "iu":
            raise ValueError(
                f"read_labels: dataset_labels must be ({n},) integers, got "
                f"{dataset_labels.dtype} {dataset_labels.shape}"
            )
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv", *TORCH_SUFFIXES):
        raise DataError(
            f"label file {path}: unknown format {suffix or '(no extension)'!r}; expected .npy, "
            ".csv, or .pt/.pth (the CIFAR-N release format)"
        )
    if key is not None and suffix not in TORCH_SUFFIXES:
        raise DataError(f"label file {path}: key={key!r} applies to .pt/.pth files only")
    if column is not None and suffix != ".csv":
        raise DataError(f"label file {path}: column={column!r} applies to .csv files only")
    if not path.is_file():
        raise DataError(f"label file {path} not found")

    if suffix == ".npy":
        raw, raw_clean, source = _read_npy(path), None, str(path)
    elif suffix == ".csv":
        raw, raw_clean, source = _read_csv(path, column)
    else:
        raw, raw_clean, source = _read_torch(path, key)

    labels = _checked(raw, source=source, what="labels", n=n, num_classes=num_classes)
    clean = None
    if raw_clean is not None:
        clean = _checked(raw_clean, source=source, what=CLEAN_KEY, n=n, num_classes=num_classes)
        if dataset_labels is not None and (differ := np.flatnonzero(clean != dataset_labels)).size:
            i = int(differ[0])
            raise DataError(
                f"label file {source}: {CLEAN_KEY} disagrees with the data set's labels in "
                f"{differ.size} of {n} rows (first: row {i}, file {clean[i]}, data set "
                f"{dataset_labels[i]}); are its rows in the data set's official order?"
            )
    return LabelFile(labels=labels, clean=clean, source=source)


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            # read_array reads .npy only (np.load would also open a zip as .npz)
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"label file {path}: not a readable .npy array ({_one_line(e)})") from e


def _read_csv(path: Path, column: str | None) -> tuple[Any, Any, str]:
    import pandas as pd

    try:
        # a blank line is a row without a label, not nothing: keep it
        table = pd.read_csv(path, skip_blank_lines=False)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"label file {path}: not a readable CSV ({_one_line(e)})") from e
    columns = [str(c) for c in table.columns]
    if column is None or column not in table.columns:
        problem = "give column=" if column is None else f"no column {column!r}"
        raise DataError(f"label file {path}: {problem}; its columns are {columns}")
    clean = table[CLEAN_KEY].to_numpy() if CLEAN_KEY in table.columns else None
    return table[column].to_numpy(), clean, f"{path} [column {column}]"


def _numpy_safe_globals() -> list[Any]:
    """The globals ``torch.load(weights_only=True)`` needs for plain numpy arrays: the array
    reconstruction (under its numpy 2 and numpy 1 module names: the CIFAR-N files predate numpy
    2), ``numpy.ndarray``, ``numpy.dtype`` and the dtype classes of bool and numeric dtypes."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    dtype_classes = {type(np.dtype(c)) for c in _ARRAY_DTYPE_CHARS}
    return [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


def _read_torch(path: Path, key: str | None) -> tuple[Any, Any, str]:
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read an untrusted file is the file's problem
        if refused := _refused_global(e):
            raise DataError(
                f"label file {path}: refused: its pickle needs {refused}, which plain label "
                "arrays do not (read with torch.load(weights_only=True))"
            ) from e
        raise DataError(
            f"label file {path}: unreadable as a torch file ({_one_line(e)[:300]})"
        ) from e
    if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
        raise DataError(
            f"label file {path}: expected a dict of label arrays (the CIFAR-N format), got "
            f"{type(content).__name__}"
        )
    keys = sorted(content)
    if not keys:
        raise DataError(f"label file {path}: holds no label sets (an empty dict)")
    if key is None:
        if len(keys) != 1:
            raise DataError(
                f"label file {path}: holds several label sets, choose one of {keys} with key="
            )
        key = keys[0]
    elif key not in content:
        raise DataError(f"label file {path}: no key {key!r}; its keys are {keys}")
    return (
        _plain(content[key]),
        _plain(content[CLEAN_KEY]) if CLEAN_KEY in content else None,
        f"{path} [key {key}]",
    )


def _plain(value: Any) -> Any:
    """A torch tensor as a numpy array; anything else unchanged (checked by :func:`_checked`)."""
    import torch

    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _checked(values: Any, *, source: str, what: str, n: int, num_classes: int) -> np.ndarray:
    """``values`` as (n,) int64 labels in ``[0, num_classes)``, else a DataError."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as e:  # ragged lists
        raise DataError(f"label file {source}: {what} is not an array ({_one_line(e)})") from e
    if arr.ndim != 1:
        raise DataError(f"label file {source}: {what} must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise DataError(
            f"label file {source}: {what} has {len(arr)} rows, expected n={n} (one per "
            "example, in the data set's official order)"
        )
    if arr.dtype.kind not in "iu":
        raise DataError(f"label file {source}: {what} has non-integer values ({_first_bad(arr)})")
    outside = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if outside.size:
        i = int(outside[0])
        raise DataError(
            f"label file {source}: {what} has {outside.size} labels outside [0, {num_classes}) "
            f"(first: row {i}, label {arr[i]})"
        )
    return arr.astype(np.int64)


def _first_bad(arr: np.ndarray) -> str:
    """Where a non-integer array first shows it, e.g. ``dtype float64, row 3: 2.5``."""
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size == 0:
            return f"dtype {arr.dtype}: whole numbers stored as floats"
        return f"dtype {arr.dtype}, row {int(bad[0])}: {arr[bad[0]]}"
    if arr.dtype.kind in "OUS":
        for i, v in enumerate(arr):
            if isinstance(v, bytes | str):
                # a CSV column with one word in it is all strings: point at the word
                text = v.decode(errors="replace") if isinstance(v, bytes) else v
                if not re.fullmatch(r"\s*[-+]?\d+\s*", text):
                    return f"dtype {arr.dtype}, row {i}: {text!r}"
            elif isinstance(v, bool) or not isinstance(v, int | np.integer):
                return f"dtype {arr.dtype}, row {i}: {v!r}"
    return f"dtype {arr.dtype}"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _refused_global(e: BaseException) -> str | None:
    """The global a weights-only torch.load refused (its message names it), else None."""
    text = str(e)
    if found := re.search(r"GLOBAL ([\w.]+)", text):
        return found.group(1)
    if found := re.search(r"Can only build [^\n]*?but got ([^\n]*)", text):
        return found.group(1).strip().rstrip(".")
    return None


__all__ = ["CLEAN_KEY", "LabelFile", "read_labels"]
