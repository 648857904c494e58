"""Reading pickled files without executing code from them.

Pickle can call any importable function while loading, so a crafted file runs code before any
check of its content. The official CIFAR batches and object arrays inside ``.npz`` files are
pickles of plain data: dicts, lists, strings, numbers and numpy arrays. :func:`load_pickle`
admits exactly the globals those need (numpy's array reconstruction, ``numpy.dtype`` and the
bytes codec of Python 2 pickles) and refuses every other one before it is imported.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mapd.errors import DataError
from mapd.io import read_npy_header

# (module, name) pairs that plain-data pickles of numpy arrays refer to (numpy 1 and 2 names)
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }
)


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: only plain data (dicts, lists, strings, "
                "numbers, numpy arrays) is read from pickled files"
            )
        return super().find_class(module, name)


def loads(data: bytes, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``data``, admitting only :data:`ALLOWED_GLOBALS`."""
    return _PlainDataUnpickler(io.BytesIO(data), encoding=encoding).load()


def load_pickle(path: str | os.PathLike, *, what: str, encoding: str = "latin1") -> Any:
    """Unpickle the file ``path`` as plain data; any other content is a :class:`DataError`
    naming ``what`` and the file (``encoding`` decodes Python 2 strings)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _PlainDataUnpickler(f, encoding=encoding).load()
    except Exception as e:  # refused globals, truncated or garbage data raise many types
        raise DataError(f"{what}: corrupt file {path}: not plain pickled data ({e})") from e


def load_npz(path: str | os.PathLike, *, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; object arrays (e.g. file names) are unpickled as plain
    data, never with ``allow_pickle=True``."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as f:
                    shape, fortran, dtype = read_npy_header(f)
                    rest = f.read()
                if dtype.hasobject:
                    arr = np.asarray(loads(rest, encoding="latin1"), dtype=object)
                    if arr.shape != tuple(shape):
                        raise DataError(f"{member}: shape {arr.shape}, header says {shape}")
                else:
                    arr = np.frombuffer(rest, dtype=dtype, count=int(np.prod(shape)))
                    arr = arr.reshape(shape, order="F" if fortran else "C").copy()
                out[member[: -len(".npy")]] = arr
    except DataError as e:
        raise DataError(f"{what}: {path}: {e}") from e
    except Exception as e:  # not a zip, truncated member, refused global, ...
        raise DataError(f"{what}: cannot read {path}: {e}") from e
    return out
