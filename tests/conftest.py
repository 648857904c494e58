"""Session fixtures: the repo root and the real data in ``../shared`` (skipped when absent)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir(repo_root: Path) -> Path:
    """``../shared`` next to the repo (read-only real data); skips the test when it is absent."""
    path = repo_root.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"../shared not found: {path} does not exist (real-data tests need it)")
    return path


def _shared_path(shared_dir: Path, relative: str) -> Path:
    path = shared_dir / relative
    if not path.exists():
        pytest.skip(f"../shared/{relative} not found: {path} does not exist")
    return path


@pytest.fixture(scope="session")
def shared_cifar10_root(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root containing ``cifar-10-batches-py/`` made once per session from ../shared's JPEGs.

    The pixels are JPEG re-encodings, so load it with ``reencoded_ok=True``.
    """
    tool = _shared_path(shared_dir, "tools/cifar10_from_jpeg.py")
    _shared_path(shared_dir, "data/cifar10-jpeg.tar")
    root = tmp_path_factory.mktemp("shared-cifar10")
    result = subprocess.run(
        [sys.executable, str(tool), str(root)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{tool} {root} failed with exit code {result.returncode}:\n{result.stderr}"
        )
    return root


@pytest.fixture(scope="session")
def shared_mnist_root(shared_dir: Path) -> Path:
    """../shared/data/mnist (holds MNIST/raw/*.gz, torchvision's layout)."""
    return _shared_path(shared_dir, "data/mnist")


@pytest.fixture(scope="session")
def shared_cscores_dir(shared_dir: Path) -> Path:
    """../shared/data/cscores (the published CIFAR-10 / CIFAR-100 C-score .npz files)."""
    return _shared_path(shared_dir, "data/cscores")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread: tiny models run fastest so, immune to a busy machine, and float sums
    are the same in every process that does the same."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
