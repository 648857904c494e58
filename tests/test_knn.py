"""mapd.knn equals scikit-learn's KNeighborsClassifier exactly: realistic and adversarial data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import mapd.knn as knn
from mapd.bench.knn import make_trajectories
from mapd.errors import DataError
from mapd.knn import knn_neighbors, knn_proba, knn_proba_sklearn


def sk_proba(queries, refs, labels, k=20, num_classes=None):
    """scikit-learn's predict_proba, spread over columns 0..num_classes-1."""
    p = KNeighborsClassifier(n_neighbors=k).fit(refs, labels).predict_proba(queries)
    c = int(labels.max()) + 1 if num_classes is None else num_classes
    out = np.zeros((len(queries), c))
    out[:, np.unique(labels)] = p
    return out


def assert_same(queries, refs, labels, k=20, **kw):
    ours = knn_proba(queries, refs, labels, k=k, **kw)
    ref = sk_proba(queries, refs, labels, k=k, num_classes=kw.get("num_classes"))
    assert ours.dtype == np.float64
    assert ours.shape == ref.shape
    differing = np.flatnonzero((ours != ref).any(axis=1))
    assert len(differing) == 0, f"{len(differing)} rows differ, first {differing[:5]}"
    return ours


def test_realistic_trajectories_equal_sklearn():
    queries, refs, labels, truth = make_trajectories(3000, 60, 300, seed=1)
    timings: dict[str, float] = {}
    ours = knn._proba(
        queries, refs, labels, k=20, num_classes=None, batch_size=65536, device="cpu",
        timings=timings,
    )  # fmt: skip
    assert (ours == sk_proba(queries, refs, labels)).all()
    assert np.allclose(ours.sum(1), 1.0)
    assert (ours.argmax(1) == truth).mean() > 0.7  # the categories are recoverable
    # both the class shortcut and the ranking path were exercised
    assert 0 < timings["ranked_rows"] < len(queries)


def test_random_gaussian_equal_sklearn():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(150, 12)).astype(np.float32)
    labels = rng.integers(0, 4, size=150)
    queries = rng.normal(size=(500, 12)).astype(np.float32)
    assert_same(queries, refs, labels, k=7)


def test_float64_and_integer_inputs():
    rng = np.random.default_rng(1)
    refs = rng.normal(size=(120, 9))
    labels = rng.integers(0, 3, size=120)
    queries = rng.normal(size=(300, 9))
    assert_same(queries, refs, labels, k=10)  # float64
    assert_same(queries * 1e3 + 5e4, refs * 1e3 + 5e4, labels, k=10)  # far from the origin
    iq = rng.integers(0, 6, size=(300, 3))
    ir = rng.integers(0, 6, size=(80, 3))
    assert_same(iq, ir, labels[:80], k=9)  # integers: many exact ties


@pytest.mark.parametrize(("t", "path"), [(20, "_heap_select"), (5, "_sklearn_rows")])
def test_duplicated_reference_rows_break_ties_like_sklearn(monkeypatch, t, path):
    # T > 15: scikit-learn searches by brute force (heap replay); T <= 15: with a k-d tree
    rng = np.random.default_rng(2)
    base = rng.normal(size=(12, t)).astype(np.float32)
    refs = np.repeat(base, 6, axis=0)  # every row six times, with different labels
    labels = np.tile(np.arange(6), 12)
    perm = rng.permutation(len(refs))
    refs, labels = refs[perm], labels[perm]
    queries = base[rng.integers(0, 12, size=200)] + rng.normal(scale=0.3, size=(200, t))
    queries = queries.astype(np.float32)
    calls = []
    real = getattr(knn, path)
    monkeypatch.setattr(knn, path, lambda *a: calls.append(1) or real(*a))
    assert_same(queries, refs, labels, k=8)  # 8 = one full copy of a row plus 2 of 6 ties
    assert calls, f"exact ties across the k-th position must go through {path}"


@pytest.mark.filterwarnings("ignore:The number of unique classes")
def test_heap_select_matches_sklearn_on_ties():
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 3, size=(60, 2)).astype(np.float64)
    queries = rng.integers(0, 3, size=(40, 2)).astype(np.float64)
    labels = np.arange(60)  # one class per reference: the proba identifies the neighbour set
    p = KNeighborsClassifier(7).fit(refs, labels).predict_proba(queries)
    for q, row in zip(queries, p, strict=True):
        kept = knn._heap_select(((refs - q) ** 2).sum(1), 7)
        assert set(kept.tolist()) == set(np.flatnonzero(row).tolist())


def test_queries_equal_to_reference_rows():
    _, refs, labels, _ = make_trajectories(10, 40, 240, seed=4)
    picked = np.random.default_rng(4).integers(0, len(refs), size=300)
    assert_same(refs[picked], refs, labels)


def test_one_epoch_and_k_equal_to_m():
    rng = np.random.default_rng(5)
    refs = rng.random((90, 1)).astype(np.float32)
    labels = rng.integers(0, 3, size=90)
    queries = rng.random((400, 1)).astype(np.float32)
    assert_same(queries, refs, labels, k=15)  # T = 1
    small, small_labels = refs[:20], labels[:20]
    ours = assert_same(queries, small, small_labels, k=20)  # k = M: every reference counts
    assert (ours == np.bincount(small_labels, minlength=3) / 20).all()


def test_small_batches_and_extra_columns():
    queries, refs, labels, _ = make_trajectories(1200, 30, 300, seed=6)
    full = assert_same(queries, refs, labels)
    many = knn_proba(queries, refs, labels, batch_size=37)
    assert (many == full).all()
    wide = assert_same(queries, refs, labels, num_classes=8)
    assert wide.shape == (1200, 8) and (wide[:, 6:] == 0).all()


def test_float32_near_ties_fall_back_to_float64():
    # pairs of references of different classes whose distances to the queries differ by far
    # less than the float32 error bound: certification must fail and float64 decide
    rng = np.random.default_rng(7)
    base = rng.normal(size=(40, 6)) * 10
    refs = np.concatenate([base, base + 1e-5 * rng.normal(size=base.shape)])
    labels = np.concatenate([np.zeros(40, dtype=np.int64), np.ones(40, dtype=np.int64)])
    queries = base[rng.integers(0, 40, size=150)] + rng.normal(size=(150, 6))
    timings: dict[str, float] = {}
    ours = knn._proba(
        queries, refs, labels, k=5, num_classes=None, batch_size=65536, device="cpu",
        timings=timings,
    )  # fmt: skip
    assert (ours == sk_proba(queries, refs, labels, k=5)).all()
    assert timings["float64_rows"] > 0


def test_knn_neighbors_equal_sklearn_sets_and_order():
    queries, refs, _, _ = make_trajectories(800, 40, 300, seed=8)
    nn = knn_neighbors(queries, refs, k=12, batch_size=300)
    assert nn.shape == (800, 12) and nn.dtype == np.int64
    _, idx = NearestNeighbors(n_neighbors=12).fit(refs).kneighbors(queries)
    assert (nn == idx).all()  # continuous data: distinct distances, same order
    direct = ((queries[:, None, :].astype(np.float64) - refs[nn]) ** 2).sum(-1)
    assert (np.diff(direct, axis=1) >= 0).all()  # nearest first


def test_empty_queries_and_threads_restored():
    queries, refs, labels, _ = make_trajectories(5, 20, 60, seed=9)
    before = torch.get_num_threads()
    out = knn_proba(queries[:0], refs, labels)
    assert out.shape == (0, 6)
    assert torch.get_num_threads() == before


def test_knn_proba_sklearn_helper():
    queries, refs, labels, _ = make_trajectories(100, 20, 120, seed=10)
    assert (knn_proba_sklearn(queries, refs, labels) == knn_proba(queries, refs, labels)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_sklearn():
    queries, refs, labels, _ = make_trajectories(2000, 50, 300, seed=11)
    assert_same(queries, refs, labels, device="cuda")


@pytest.mark.parametrize(
    ("queries", "refs", "match"),
    [
        (np.full((4, 5), np.nan), np.zeros((30, 5)), "NaN or inf"),
        (np.zeros((4, 5)), np.r_[np.zeros((29, 5)), [[0, np.inf, 0, 0, 0]]], "NaN or inf"),
        (np.zeros((4, 5)), np.zeros((30, 6)), "shapes do not match"),
        (np.zeros(5), np.zeros((30, 5)), "shapes do not match"),
        (np.zeros((4, 5)), np.zeros((10, 5)), "only 10 reference"),
        (np.zeros((4, 5), dtype=object), np.zeros((30, 5)), "numeric"),
    ],
)
def test_bad_trajectories_raise(queries, refs, match):
    labels = np.zeros(len(refs), dtype=np.int64)
    with pytest.raises(DataError, match=match):
        knn_proba(queries, refs, labels, k=20)
    with pytest.raises(DataError, match=match):
        knn_neighbors(queries, refs, k=20)


def test_bad_labels_raise():
    refs = np.zeros((30, 5))
    with pytest.raises(DataError, match="shape"):
        knn_proba(np.zeros((4, 5)), refs, np.zeros(29, dtype=np.int64))
    with pytest.raises(DataError, match=r"must be in \[0, 3\)"):
        knn_proba(np.zeros((4, 5)), refs, np.full(30, 3), num_classes=3)
    with pytest.raises(DataError, match="integer"):
        knn_proba(np.zeros((4, 5)), refs, np.zeros(30))
