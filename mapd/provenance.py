"""Provenance of a report: software versions, the machine and the git commit of the checkout."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path


def _git_commit(start: Path) -> str:
    """HEAD commit of the repository containing ``start``, read from .git without running git."""
    for folder in [start, *start.parents]:
        dot = folder / ".git"
        if dot.is_file():  # a worktree: "gitdir: <path>"
            text = dot.read_text().strip()
            if not text.startswith("gitdir:"):
                return "unknown"
            gitdir = (folder / text.split(":", 1)[1].strip()).resolve()
        elif dot.is_dir():
            gitdir = dot
        else:
            continue
        head = (gitdir / "HEAD").read_text().strip() if (gitdir / "HEAD").is_file() else ""
        if not head.startswith("ref:"):
            return head or "unknown"
        ref = head.split(":", 1)[1].strip()
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
        return f"none yet ({ref})"
    return "unknown (not a git checkout)"


def environment_versions() -> dict[str, str]:
    """Python, platform, key package versions and the git commit of the mapd checkout."""
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
    }
    for pkg in (
        "mapd",
        "numpy",
        "pandas",
        "torch",
        "torchvision",
        "scikit-learn",
        "matplotlib",
        "seaborn",
        "pyarrow",
        "pillow",
        "snakemake",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["git_commit"] = _git_commit(Path(__file__).resolve().parent)
    return out
