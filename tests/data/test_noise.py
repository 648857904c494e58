"""Label-noise generators: exact counts, the three kinds, seeding and validation."""

from __future__ import annotations

import numpy as np
import pytest

from mapd.data.base import ImageDataset
from mapd.data.noise import CIFAR10_PAIRS, apply_label_noise, default_pairs, inject_label_noise
from mapd.errors import ConfigError, DataError


def _labels(n: int = 1000, c: int = 10, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, c, size=n)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.8, 0.9, 1.0])
def test_symmetric_exact_count_and_never_keeps_label(rate: float) -> None:
    y = _labels(1001)
    noisy, is_noisy = inject_label_noise(y, rate=rate, num_classes=10, kind="symmetric", seed=0)
    assert noisy.dtype == np.int64 and is_noisy.dtype == bool and noisy.shape == (1001,)
    assert is_noisy.sum() == int(np.floor(rate * 1001 + 0.5))
    assert np.all(noisy[is_noisy] != y[is_noisy])
    np.testing.assert_array_equal(noisy[~is_noisy], y[~is_noisy])
    assert noisy.min() >= 0 and noisy.max() < 10


def test_symmetric_is_uniform_over_other_classes() -> None:
    y = np.zeros(40_000, dtype=np.int64)
    noisy, _ = inject_label_noise(y, rate=1.0, num_classes=5, seed=2)
    counts = np.bincount(noisy, minlength=5)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / 40_000, 0.25, atol=0.01)


def test_arazo_changes_about_rate_times_one_minus_one_over_c() -> None:
    y = _labels(200_000)
    noisy, is_noisy = inject_label_noise(y, rate=0.5, num_classes=10, kind="arazo", seed=0)
    np.testing.assert_array_equal(is_noisy, noisy != y)
    assert abs(is_noisy.mean() - 0.5 * (1 - 1 / 10)) < 0.005
    # exactly round(rate * N) examples are redrawn: with draw_classes=1 every redraw is class 0
    ones = np.ones(1001, dtype=np.int64)
    _, changed = inject_label_noise(ones, rate=0.3, num_classes=10, kind="arazo", draw_classes=1)
    assert changed.sum() == 300


def test_arazo_quirk_draws_only_from_range_10() -> None:
    y = _labels(20_000, c=100)
    noisy, is_noisy = inject_label_noise(
        y, rate=0.8, num_classes=100, kind="arazo", draw_classes=10
    )
    redrawn = noisy[is_noisy]
    assert redrawn.max() <= 9
    assert set(np.unique(redrawn)) == set(range(10))
    full, _ = inject_label_noise(y, rate=0.8, num_classes=100, kind="arazo")
    assert full.max() > 50  # without the quirk the draw covers all 100 classes


def test_asymmetric_cifar10_pairs() -> None:
    y = np.repeat(np.arange(10), 1000)
    noisy, is_noisy = inject_label_noise(y, rate=0.4, num_classes=10, kind="asymmetric", seed=0)
    assert default_pairs(10) == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3} == CIFAR10_PAIRS
    for src in range(10):
        got = noisy[y == src]
        if src in CIFAR10_PAIRS:
            assert np.sum(got != src) == 400  # rate is the share flipped within the class
            assert set(got[got != src]) == {CIFAR10_PAIRS[src]}
        else:
            assert np.all(got == src)
    assert is_noisy.sum() == 5 * 400


def test_asymmetric_default_for_other_class_counts_and_custom_pairs() -> None:
    y = np.repeat(np.arange(4), 10)
    noisy, _ = inject_label_noise(y, rate=1.0, num_classes=4, kind="asymmetric")
    np.testing.assert_array_equal(noisy, (y + 1) % 4)
    noisy, is_noisy = inject_label_noise(
        y, rate=0.5, num_classes=4, kind="asymmetric", pairs={0: 2}
    )
    assert is_noisy.sum() == 5 and set(noisy[is_noisy]) == {2} and set(y[is_noisy]) == {0}


@pytest.mark.parametrize("kind", ["symmetric", "arazo", "asymmetric"])
def test_seeded_reproducibility(kind: str) -> None:
    y = _labels(5000)
    a = inject_label_noise(y, rate=0.3, num_classes=10, kind=kind, seed=7)
    b = inject_label_noise(y, rate=0.3, num_classes=10, kind=kind, seed=7)
    c = inject_label_noise(y, rate=0.3, num_classes=10, kind=kind, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    ("labels", "options", "error", "message"),
    [
        ([0, 1], {"rate": 1.2}, ConfigError, "rate must be in \\[0, 1\\], got 1.2"),
        ([0, 1], {"rate": -0.1}, ConfigError, "rate must be in"),
        ([0, 1], {"rate": "lots"}, ConfigError, "rate must be a number"),
        ([0, 1], {"rate": 0.1, "kind": "pairwise"}, ConfigError, "kind must be one of"),
        (
            [0, 1],
            {"rate": 0.1, "num_classes": 1},
            ConfigError,
            "num_classes must be an integer >= 2",
        ),
        ([0, 10], {"rate": 0.1}, DataError, "labels must be in \\[0, 10\\), got min 0 max 10"),
        ([-1, 2], {"rate": 0.1}, DataError, "labels must be in"),
        ([0.5, 1.0], {"rate": 0.1}, DataError, "labels must be integers"),
        ([[0, 1]], {"rate": 0.1}, DataError, "labels must be 1-D"),
        ([0, 1], {"rate": 0.1, "draw_classes": 5}, ConfigError, "draw_classes only applies"),
        (
            [0, 1],
            {"rate": 0.1, "kind": "arazo", "draw_classes": 11},
            ConfigError,
            "draw_classes must",
        ),
        ([0, 1], {"rate": 0.1, "pairs": {0: 1}}, ConfigError, "pairs only apply"),
        ([0, 1], {"rate": 0.1, "kind": "asymmetric", "pairs": {0: 10}}, ConfigError, "outside"),
        ([0, 1], {"rate": 0.1, "kind": "asymmetric", "pairs": {3: 3}}, ConfigError, "onto itself"),
    ],
)
def test_validation(labels, options: dict, error: type, message: str) -> None:
    options = {"num_classes": 10, **options}
    with pytest.raises(error, match=message):
        inject_label_noise(np.asarray(labels), **options)


def test_apply_label_noise_copies_with_attrs() -> None:
    y = np.repeat(np.arange(3), 20)
    images = np.zeros((60, 2, 2, 1), dtype=np.uint8)
    ds = ImageDataset(
        "toy", "train", y, ("a", "b", "c"), np.arange(60), images=images, attrs={"g": y * 2}
    )
    out = apply_label_noise(ds, rate=0.5, seed=1)
    np.testing.assert_array_equal(ds.labels, y)  # original untouched
    np.testing.assert_array_equal(out.attrs["clean_label"], y)
    np.testing.assert_array_equal(out.attrs["noisy"], out.labels != y)
    assert out.attrs["noisy"].sum() == 30 and out.attrs["noisy"].dtype == bool
    np.testing.assert_array_equal(out.attrs["g"], y * 2)
    assert (
        out.info["label_noise"]["kind"] == "symmetric" and out.info["label_noise"]["n_noisy"] == 30
    )
    expected, _ = inject_label_noise(y, rate=0.5, num_classes=3, seed=1)
    np.testing.assert_array_equal(out.labels, expected)
    # a second pass keeps the original clean labels
    twice = apply_label_noise(out, rate=1.0, kind="asymmetric", seed=0)
    np.testing.assert_array_equal(twice.attrs["clean_label"], y)
    np.testing.assert_array_equal(twice.attrs["noisy"], twice.labels != y)
    assert "clean_label" not in ds.attrs
