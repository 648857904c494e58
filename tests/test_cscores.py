"""C-scores: the published file format, our own files, and the two estimators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mapd.cscores import (
    compute_cscores,
    holdout_scores,
    learning_speed_scores,
    load_cscores_file,
    read_method,
    save_cscores,
)
from mapd.data import ImageDataset, load_dataset
from mapd.errors import ConfigError, DataError
from mapd.probes import wrong_labels

TINY_TRAIN = {
    "model": "small_cnn",
    "model_options": {"width": 8},
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
    "crop_padding": 0,
    "flip": False,
    "amp": False,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # tiny models: thread hand-offs cost more than they save, badly so on a busy machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dataset(n: int, *, index: np.ndarray | None = None, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    return ImageDataset(
        name="synth",
        split="train",
        labels=rng.integers(0, 10, size=n),
        classes=tuple(str(c) for c in range(10)),
        index=np.arange(n) if index is None else index,
        images=rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8),
    )


def _published(path: Path, labels: np.ndarray, scores: np.ndarray) -> Path:
    """The published layout: keys labels int64 (N,), scores float64 (N,), official order."""
    np.savez(path, labels=labels.astype(np.int64), scores=scores.astype(np.float64))
    return path


# --- files -------------------------------------------------------------------------------------


def test_published_file_aligns_by_index(tmp_path: Path) -> None:
    full = _dataset(200)
    scores = np.random.default_rng(1).random(200)
    path = _published(tmp_path / "cifar10-cscores-orig-order.npz", full.labels, scores)
    np.testing.assert_array_equal(load_cscores_file(path, full), scores)
    # a shuffled subset (stable index kept) gets the scores of its own examples
    rows = np.random.default_rng(2).permutation(200)[:60]
    sub = full.subset(rows)
    out = load_cscores_file(path, sub)
    assert out.shape == (60,) and out.dtype == np.float64
    np.testing.assert_array_equal(out, scores[rows])


def test_mismatched_labels(tmp_path: Path) -> None:
    ds = _dataset(100)
    labels = ds.labels.copy()
    labels[[7, 40]] = (labels[[7, 40]] + 1) % 10
    path = _published(tmp_path / "s.npz", labels, np.zeros(100))
    with pytest.raises(DataError, match=r"disagrees .* on the label of 2 of 100 examples") as e:
        load_cscores_file(path, ds)
    assert "first: index 7" in str(e.value) and str(path) in str(e.value)


def test_missing_keys_wrong_length_missing_file(tmp_path: Path) -> None:
    ds = _dataset(50)
    np.savez(tmp_path / "nokeys.npz", labels=ds.labels, score=np.zeros(50))
    with pytest.raises(DataError, match=r"must have keys 'labels' and 'scores'.*'score'"):
        load_cscores_file(tmp_path / "nokeys.npz", ds)
    short = _published(tmp_path / "short.npz", ds.labels[:40], np.zeros(40))
    with pytest.raises(DataError, match="has 40 scores and lacks 10 examples") as e:
        load_cscores_file(short, ds)
    assert "index 40" in str(e.value)
    np.savez(tmp_path / "ragged.npz", labels=ds.labels, scores=np.zeros(49))
    with pytest.raises(DataError, match="differ in length"):
        load_cscores_file(tmp_path / "ragged.npz", ds)
    with pytest.raises(DataError, match="C-score file not found"):
        load_cscores_file(tmp_path / "absent.npz", ds)
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip" * 5)
    with pytest.raises(DataError, match=r"garbage\.npz"):
        load_cscores_file(tmp_path / "garbage.npz", ds)
    nan = np.zeros(50)
    nan[3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        load_cscores_file(_published(tmp_path / "nan.npz", ds.labels, nan), ds)


def test_plain_npy_instead_of_npz(tmp_path: Path) -> None:
    ds = _dataset(20)
    np.save(tmp_path / "scores.npy", np.zeros(20))
    with pytest.raises(DataError, match=r"scores\.npy"):
        load_cscores_file(tmp_path / "scores.npy", ds)


def test_save_round_trip_with_method(tmp_path: Path) -> None:
    # stable indices that are not positions: the written 'index' key aligns them
    ds = _dataset(80, index=np.random.default_rng(3).permutation(1000)[:80])
    scores = np.linspace(0, 1, 80)
    path = tmp_path / "out" / "digits.npz"
    save_cscores(path, ds, scores, method="holdout")
    with np.load(path, allow_pickle=False) as f:
        assert set(f.files) == {"labels", "scores", "index", "method"}
        assert f["labels"].dtype == np.int64 and f["scores"].dtype == np.float64
    assert read_method(path) == "holdout"
    np.testing.assert_array_equal(load_cscores_file(path, ds), scores)
    rows = np.array([5, 0, 79, 33])
    np.testing.assert_array_equal(load_cscores_file(path, ds.subset(rows)), scores[rows])
    # published files carry no method
    assert read_method(_published(tmp_path / "p.npz", ds.labels, scores)) == "file"
    with pytest.raises(DataError, match=r"expected \(80,\)"):
        save_cscores(tmp_path / "bad.npz", ds, scores[:-1], method="x")
    assert not (tmp_path / "bad.npz").exists()


# --- estimators --------------------------------------------------------------------------------


def test_learning_speed_scores_shape_and_range() -> None:
    ds = _dataset(64)
    s = learning_speed_scores(
        ds.images, ds.labels, num_classes=10, train=TINY_TRAIN, seed=0, device="cpu"
    )
    assert s.shape == (64,) and s.dtype == np.float64
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert s.std() > 0  # not a constant


@pytest.fixture(scope="module")
def noisy_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(ds), size=400, replace=False)
    labels = ds.labels[rows].copy()
    noisy = np.zeros(400, dtype=bool)
    noisy[rng.choice(400, size=80, replace=False)] = True
    labels[noisy] = wrong_labels(labels[noisy], 10, rng)
    return ds.images[rows], labels, noisy


# some examples are never held out (their score is the mean): no "mean of empty slice" warning
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_holdout_scores_rank_wrong_labels_low(noisy_digits) -> None:
    images, labels, noisy = noisy_digits
    lines: list[str] = []
    s = holdout_scores(
        images,
        labels,
        num_classes=10,
        train={**TINY_TRAIN, "epochs": 6},
        seed=0,
        ratios=[0.5, 0.75],
        runs_per_ratio=2,
        device="cpu",
        log=lines.append,
    )
    assert s.shape == (400,) and np.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1).all()
    # a held-out example with a wrong label is predicted as its true class: scores near 0
    assert s[~noisy].mean() > 0.45
    assert s[noisy].mean() < 0.2
    assert s[noisy].mean() < s[~noisy].mean() - 0.3
    assert any("ratio 0.5, run 2/2, 200 train / 200 held out" in line for line in lines)
    with pytest.raises(ConfigError, match="ratios"):
        holdout_scores(
            images,
            labels,
            num_classes=10,
            train=TINY_TRAIN,
            seed=0,
            ratios=[1.0],
            runs_per_ratio=1,
            device="cpu",
        )


def test_compute_cscores_dispatch(tmp_path: Path) -> None:
    ds = _dataset(40)
    path = _published(tmp_path / "p.npz", ds.labels, np.arange(40) / 40)
    scores, source = compute_cscores(
        ds, settings={"method": "file", "file": str(path)}, train=TINY_TRAIN, seed=0
    )
    np.testing.assert_array_equal(scores, np.arange(40) / 40)
    assert source == f"file:{path}"
    with pytest.raises(ConfigError, match="unknown C-score method 'magic'"):
        compute_cscores(ds, settings={"method": "magic", "epochs": 1}, train=TINY_TRAIN, seed=0)


# --- the real published file against the real CIFAR-10 -----------------------------------------


@pytest.mark.shared
def test_published_cifar10_cscores_align_with_real_cifar10(
    shared_cifar10_root: Path, shared_cscores_dir: Path
) -> None:
    path = shared_cscores_dir / "cifar10-cscores-orig-order.npz"
    if not path.is_file():
        pytest.skip(f"../shared C-score file not found: {path}")
    train = load_dataset("cifar10", "train", root=shared_cifar10_root, reencoded_ok=True)
    scores = load_cscores_file(path, train)
    assert scores.shape == (50_000,)
    with np.load(path) as f:
        np.testing.assert_array_equal(scores, f["scores"])
    assert (scores >= 0).all() and (scores <= 1).all()
    # a subset is aligned by the stable index
    rows = np.array([49_999, 0, 12_345])
    sub = train.subset(rows)
    np.testing.assert_array_equal(load_cscores_file(path, sub), scores[rows])
    # the published CIFAR-10 file does not fit the CIFAR-10 test split's labels
    test = load_dataset("cifar10", "test", root=shared_cifar10_root, reencoded_ok=True)
    with pytest.raises(DataError, match="disagrees"):
        load_cscores_file(path, test)
