"""`mapd fetch`: put a data set (or a published C-score file) under a root directory.

Used by the DVC import stages in ``resources/dvc.yaml`` on hosts with internet. Data sets whose
loader can download do so (official archives, md5-checked); the others raise an error that says
what to download by hand and where to put it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from mapd.data import get_spec, load_dataset
from mapd.data.download import download_file
from mapd.errors import ConfigError, DataError

CSCORE_BASE = "https://pluskid.github.io/structural-regularity/cscores/"
CSCORE_FILES = {
    "cifar10": ("cifar10-cscores-orig-order.npz", "fb902aa1f18832b245ce899c1808d1ca"),
    "cifar100": ("cifar100-cscores-orig-order.npz", "b1bfd251d4cd42a0a216d3be520af4cf"),
}


def fetch(target: str, root: str | Path) -> list[str]:
    """Fetch ``target`` (a data-set name, or ``cscores:<cifar10|cifar100>``) into ``root``."""
    root = Path(root)
    if target.startswith("cscores:"):
        name = target.split(":", 1)[1]
        if name not in CSCORE_FILES:
            raise ConfigError(
                f"no published C-score file known for {name!r}; known: {sorted(CSCORE_FILES)}"
            )
        fname, md5 = CSCORE_FILES[name]
        download_file(CSCORE_BASE + fname, dest=root / fname, md5=md5)
        return [str(root / fname)]
    spec = get_spec(target)
    if "download" not in inspect.signature(spec.loader).parameters:
        raise DataError(
            f"{target} cannot be downloaded automatically. Source: {spec.source}. "
            f"Put it under {root} and track it with `dvc add {root}`."
        )
    loaded = []
    for split in spec.splits:
        ds = load_dataset(target, split, root=str(root), download=True)
        loaded.append(f"{split}: {len(ds)}")
    return loaded
