"""Probe suites: every category's defining property, on real digits and on synthetic RGB data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapd.data import ImageDataset, load_dataset
from mapd.errors import ConfigError, DataError
from mapd.probes import (
    CATEGORIES,
    ProbeSuite,
    build_probe_suite,
    corrupt_gaussian,
    pencil_sketch,
    random_inputs,
    wrong_labels,
)

FROM_DATA = ("typical", "atypical", "random_labels", "corrupted", "ood", "random_sample")


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_scores(digits: ImageDataset) -> np.ndarray:
    """(N,) distinct C-scores (a random permutation of 0..1), so top/bottom sets are unique."""
    return np.random.default_rng(7).permutation(len(digits)) / (len(digits) - 1)


@pytest.fixture(scope="module")
def suite(digits: ImageDataset, digits_scores: np.ndarray) -> ProbeSuite:
    return build_probe_suite(
        digits,
        categories=list(CATEGORIES),
        train_size=20,
        heldout_size=30,
        seed=3,
        cscores=digits_scores,
        cscore_source="test",
        corrupted_std=0.1,
        ood_blur_kernel=3,
    )


def _synthetic(
    n: int = 400, *, hw: int = 8, value: int | None = None, seed: int = 0
) -> ImageDataset:
    """RGB (n, hw, hw, 3) images (random, or constant ``value``), 5 classes, shuffled index."""
    rng = np.random.default_rng(seed)
    if value is None:
        images = rng.integers(0, 256, size=(n, hw, hw, 3), dtype=np.uint8)
    else:
        images = np.full((n, hw, hw, 3), value, dtype=np.uint8)
    return ImageDataset(
        name="synth",
        split="train",
        labels=rng.integers(0, 5, size=n),
        classes=tuple("abcde"),
        index=rng.permutation(10 * n)[:n],  # stable indices that are not row positions
        images=images,
    )


def _source_positions(ds: ImageDataset, orig_index: np.ndarray) -> np.ndarray:
    lookup = {int(i): p for p, i in enumerate(ds.index)}
    return np.array([lookup[int(i)] for i in orig_index], dtype=np.int64)


# --- transformations ---------------------------------------------------------------------------


def test_wrong_labels_never_true_and_uniform_over_the_others() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6000)
    new = wrong_labels(labels, 10, rng)
    assert new.dtype.kind == "i" and new.min() >= 0 and new.max() <= 9
    assert not (new == labels).any()
    for c in (0, 4, 9):
        others = new[labels == c]
        counts = np.bincount(others, minlength=10)
        assert counts[c] == 0
        share = np.delete(counts, c) / len(others)
        # 9 other classes, 6000 draws: each share ~1/9 within a few standard errors (~0.004)
        np.testing.assert_allclose(share, 1 / 9, atol=0.02)


def test_random_labels_probes_on_digits(digits: ImageDataset, suite: ProbeSuite) -> None:
    t = suite.table
    rl = t[t.category == "random_labels"]
    assert len(rl) == 50
    assert (rl.label != rl.orig_label).all()
    pos = _source_positions(digits, rl.orig_index.to_numpy())
    np.testing.assert_array_equal(rl.orig_label.to_numpy(), digits.labels[pos])
    # the inputs are the untouched source images
    np.testing.assert_array_equal(suite.probe_images[rl.probe_row.to_numpy()], digits.images[pos])


def test_corrupt_gaussian_has_the_configured_std() -> None:
    rng = np.random.default_rng(1)
    images = np.full((200, 16, 16, 3), 128, dtype=np.uint8)  # 0.5: > 4 std from 0 and 1
    for std in (0.05, 0.1):
        out = corrupt_gaussian(images, std=std, rng=rng)
        assert out.dtype == np.uint8 and out.shape == images.shape
        d = (out.astype(np.float64) - images) / 255.0
        assert abs(d.mean()) < 0.002
        assert d.std() == pytest.approx(std, rel=0.03)
    # std 0.25 reaches the clip bounds from 0.5; the median absolute deviation only looks at
    # |z| < 0.67 and is unaffected by the clipping at |z| = 2
    out = corrupt_gaussian(images, std=0.25, rng=rng)
    d = (out.astype(np.float64) - images) / 255.0
    mad_std = 1.4826 * np.median(np.abs(d - np.median(d)))
    assert mad_std == pytest.approx(0.25, rel=0.03)
    assert out.min() == 0 and out.max() == 255  # clipped, not wrapped around
    # clipping keeps [0, 255]: saturated inputs stay saturated or move inwards
    ends = np.zeros((10, 4, 4, 1), dtype=np.uint8)
    ends[5:] = 255
    out = corrupt_gaussian(ends, std=0.3, rng=rng)
    assert (out[:5] >= 0).all() and (out[5:] <= 255).all()
    assert (out[:5] > 0).any() and (out[5:] < 255).any()


def test_corrupted_probes_noise_std_on_digits(digits: ImageDataset) -> None:
    # a big corrupted category on the real digits; measure on mid-grey source pixels only
    s = build_probe_suite(
        digits,
        categories=["corrupted", "random_labels"],
        train_size=300,
        heldout_size=300,
        seed=0,
        corrupted_std=0.1,
    )
    t = s.table[s.table.category == "corrupted"]
    src = digits.images[_source_positions(digits, t.orig_index.to_numpy())].astype(np.float64)
    noisy = s.probe_images[t.probe_row.to_numpy()].astype(np.float64)
    far = (src >= 0.4 * 255) & (src <= 0.6 * 255)  # >= 4 std from both clip bounds
    assert far.sum() > 2000
    d = (noisy - src)[far] / 255.0
    assert abs(d.mean()) < 0.01
    assert d.std() == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(t.label.to_numpy(), t.orig_label.to_numpy())


def test_random_inputs_uniform_and_clipped_normal() -> None:
    rng = np.random.default_rng(2)
    u = random_inputs(500, (8, 8, 3), kind="uniform", rng=rng)
    assert u.dtype == np.uint8 and u.shape == (500, 8, 8, 3)
    x = u / 255.0
    assert x.mean() == pytest.approx(0.5, abs=0.01)
    assert x.std() == pytest.approx(1 / np.sqrt(12), abs=0.005)  # 0.2887
    # every value is about equally likely: no mass piles up at the ends
    assert (u == 0).mean() < 0.01 and (u == 255).mean() < 0.01
    c = random_inputs(500, (8, 8, 3), kind="clipped_normal", rng=rng)
    assert c.dtype == np.uint8 and c.shape == (500, 8, 8, 3)
    # clip(N(0,1), 0, 1): half the values are 0, P(z > 1) = 0.159 are 1
    assert (c == 0).mean() == pytest.approx(0.5, abs=0.02)
    assert (c == 255).mean() == pytest.approx(0.1587, abs=0.02)
    assert (c / 255.0).mean() < 0.35
    with pytest.raises(ConfigError, match="random_inputs"):
        random_inputs(3, (8, 8, 1), kind="gaussian", rng=rng)


def test_random_inputs_category_in_suite(digits: ImageDataset, suite: ProbeSuite) -> None:
    t = suite.table[suite.table.category == "random_inputs"]
    assert (t.orig_index == -1).all() and (t.orig_label == -1).all()
    assert t.label.between(0, digits.num_classes - 1).all()
    assert t.label.nunique() > 3  # labels drawn at random
    x = suite.probe_images[t.probe_row.to_numpy()] / 255.0
    assert x.shape == (50, 8, 8, 1)
    assert x.mean() == pytest.approx(0.5, abs=0.03)
    assert x.std() == pytest.approx(0.2887, abs=0.02)
    clipped = build_probe_suite(
        digits,
        categories=["random_inputs", "random_labels"],
        train_size=20,
        heldout_size=30,
        seed=3,
        random_inputs_kind="clipped_normal",
    )
    tc = clipped.table[clipped.table.category == "random_inputs"]
    xc = clipped.probe_images[tc.probe_row.to_numpy()]
    assert (xc == 0).mean() == pytest.approx(0.5, abs=0.05)
    assert clipped.meta["random_inputs"] == "clipped_normal"


def _sketch_reference(gray: np.ndarray, k: int) -> np.ndarray:
    """Independent numpy version: reflect-101 Gaussian blur, then colour dodge (as OpenCV)."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    inv = 255.0 - gray
    p = k // 2
    padded = np.pad(inv, p, mode="reflect")  # numpy's "reflect" omits the edge = BORDER_REFLECT_101
    kernel = np.outer(g, g)
    h, w = gray.shape
    blur = np.array(
        [[(padded[i : i + k, j : j + k] * kernel).sum() for j in range(w)] for i in range(h)]
    )
    denom = 255.0 - np.round(blur)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, gray * 256.0 / np.maximum(denom, 1.0), 255.0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_pencil_sketch_formula_by_hand() -> None:
    # constant image: blur(255 - g) = 255 - g, so sketch = g * 256 / g = 256 -> 255
    for g in (1, 60, 200, 255):
        const = np.full((2, 5, 5, 1), g, dtype=np.uint8)
        np.testing.assert_array_equal(pencil_sketch(const, blur_kernel=3), 255)
    # a 3x3 grey image with one dark pixel, kernel 3 (sigma 0.8): weights 0.2390, 0.5220, 0.2390
    img = np.full((1, 3, 3, 1), 200, dtype=np.uint8)
    img[0, 1, 1, 0] = 100
    out = pencil_sketch(img, blur_kernel=3)[0, ..., 0]
    w = np.exp(-1 / (2 * 0.8**2))
    g1 = np.array([w, 1.0, w]) / (1 + 2 * w)
    # centre: inverted image is 55 everywhere except 155 in the middle
    blur_centre = 55 + 100 * g1[1] * g1[1]  # = 82.25 -> 82
    assert round(blur_centre) == 82
    assert out[1, 1] == round(100 * 256 / (255 - 82))  # 147.98 -> 148
    # corner (0, 0): reflect-101 padding puts the dark pixel at the diagonal neighbours too
    blur_corner = 55 + 100 * g1[2] * g1[2] * 4  # the centre pixel appears at 4 kernel taps
    assert out[0, 0] == min(255, round(200 * 256 / (255 - round(blur_corner))))
    np.testing.assert_array_equal(out, _sketch_reference(img[0, ..., 0].astype(np.float64), 3))


def test_pencil_sketch_matches_reference_rgb_and_keeps_shape() -> None:
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 256, size=(3, 9, 11, 3), dtype=np.uint8)
    out = pencil_sketch(imgs, blur_kernel=5)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    # the three channels are the same grey sketch
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    gray = np.round(imgs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    for i in range(3):
        ref = _sketch_reference(gray[i].astype(np.float64), 5)
        # float32 vs float64 blur may round a value at .5 differently: allow a few off-by-ones
        diff = np.abs(out[i, ..., 0].astype(int) - ref.astype(int))
        assert (diff <= 1).all() and (diff > 0).mean() < 0.05
    np.testing.assert_array_equal(pencil_sketch(imgs, blur_kernel=5), out)  # deterministic


def test_ood_probes_in_suite(digits: ImageDataset, suite: ProbeSuite) -> None:
    t = suite.table[suite.table.category == "ood"]
    np.testing.assert_array_equal(t.label.to_numpy(), t.orig_label.to_numpy())
    pos = _source_positions(digits, t.orig_index.to_numpy())
    np.testing.assert_array_equal(t.orig_label.to_numpy(), digits.labels[pos])
    expected = pencil_sketch(digits.images[pos], blur_kernel=3)
    np.testing.assert_array_equal(suite.probe_images[t.probe_row.to_numpy()], expected)
    assert suite.meta["ood"] == {"kind": "pencil_sketch", "blur_kernel": 3}
    # an RGB data set keeps its 3 channels
    rgb = _synthetic(60)
    s = build_probe_suite(
        rgb, categories=["ood", "random_labels"], train_size=5, heldout_size=5, seed=0
    )
    assert s.probe_images.shape == (20, 8, 8, 3)


# --- typical / atypical and the sources --------------------------------------------------------


def test_typical_highest_atypical_lowest(
    digits: ImageDataset, digits_scores: np.ndarray, suite: ProbeSuite
) -> None:
    t = suite.table
    order = np.argsort(digits_scores)
    typ = set(t.orig_index[t.category == "typical"])
    atyp = set(t.orig_index[t.category == "atypical"])
    assert typ == set(digits.index[order[-50:]].tolist())
    assert atyp == set(digits.index[order[:50]].tolist())
    assert not typ & atyp
    typ_t = t[t.category == "typical"]
    np.testing.assert_array_equal(typ_t.label.to_numpy(), typ_t.orig_label.to_numpy())
    pos = _source_positions(digits, typ_t.orig_index.to_numpy())
    np.testing.assert_array_equal(
        suite.probe_images[typ_t.probe_row.to_numpy()], digits.images[pos]
    )


def test_sources_are_disjoint_and_removed_from_data(
    digits: ImageDataset, suite: ProbeSuite
) -> None:
    t = suite.table
    probes = t[(t.category != "") & (t.orig_index >= 0)]
    assert set(probes.category) == set(FROM_DATA)
    assert len(probes) == 50 * len(FROM_DATA)
    assert not probes.orig_index.duplicated().any(), "a source example used twice"
    data = t[t.role == "data"]
    assert (data.category == "").all() and (data.probe_row == -1).all()
    assert not set(data.orig_index) & set(probes.orig_index)
    # every example of the data set is either a data row or exactly one probe source
    assert sorted(data.orig_index.tolist() + probes.orig_index.tolist()) == sorted(
        digits.index.tolist()
    )
    np.testing.assert_array_equal(data.label.to_numpy(), data.orig_label.to_numpy())
    pos = _source_positions(digits, data.orig_index.to_numpy())
    np.testing.assert_array_equal(data.label.to_numpy(), digits.labels[pos])
    # probes are appended after the data rows
    assert (t.probe_row.to_numpy()[: len(data)] == -1).all()
    assert (t.probe_row.to_numpy()[len(data) :] >= 0).all()
    assert suite.meta["n_data"] == len(data) == len(digits) - 50 * len(FROM_DATA)
    assert suite.meta["n_probes"] == 50 * len(CATEGORIES) == len(suite.probe_images)


def test_duplicate_category_rejected(digits: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="ood"):
        build_probe_suite(digits, categories=["ood", "ood"], train_size=5, heldout_size=5, seed=0)


def test_table_columns_roles_and_counts(suite: ProbeSuite) -> None:
    t = suite.table
    assert list(t.columns) == [
        "row",
        "orig_index",
        "category",
        "role",
        "label",
        "orig_label",
        "probe_row",
    ]
    for col in ("row", "orig_index", "label", "orig_label", "probe_row"):
        assert t[col].dtype == np.int64, col
    np.testing.assert_array_equal(t.row.to_numpy(), np.arange(len(t)))
    assert set(t.role) == {"data", "probe_train", "probe_heldout"}
    counts = t[t.category != ""].groupby(["category", "role"]).size()
    for cat in CATEGORIES:
        assert counts[(cat, "probe_train")] == 20
        assert counts[(cat, "probe_heldout")] == 30
        np.testing.assert_array_equal(suite.rows(role="probe_train", category=cat).size, 20)
    # probe rows index probe_images one to one
    pr = t.probe_row[t.probe_row >= 0].to_numpy()
    np.testing.assert_array_equal(np.sort(pr), np.arange(len(suite.probe_images)))
    np.testing.assert_array_equal(suite.labels, t.label.to_numpy())
    assert suite.categories == list(CATEGORIES)
    assert suite.meta["train_size"] == 20 and suite.meta["heldout_size"] == 30
    assert suite.meta["seed"] == 3 and suite.meta["cscore_source"] == "test"


def test_seed_reproducible_and_varies(digits: ImageDataset, digits_scores: np.ndarray) -> None:
    kw = dict(
        categories=list(CATEGORIES),
        train_size=10,
        heldout_size=10,
        cscores=digits_scores,
        ood_blur_kernel=3,
    )
    a = build_probe_suite(digits, seed=11, **kw)
    b = build_probe_suite(digits, seed=11, **kw)
    c = build_probe_suite(digits, seed=12, **kw)
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.probe_images, b.probe_images)
    assert a.meta == b.meta
    assert not a.table.equals(c.table)
    for cat in ("random_labels", "corrupted", "ood", "random_sample"):
        assert set(a.table.orig_index[a.table.category == cat]) != set(
            c.table.orig_index[c.table.category == cat]
        ), cat
    assert not np.array_equal(a.probe_images, c.probe_images)


def test_save_load_round_trip(tmp_path: Path, suite: ProbeSuite, digits: ImageDataset) -> None:
    out = tmp_path / "probes" / "digits" / "seed3"
    suite.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "examples.parquet",
        "meta.json",
        "probe_images.npy",
    ]
    loaded = ProbeSuite.load(out)
    pd.testing.assert_frame_equal(loaded.table, suite.table, check_dtype=False)
    for col in ("row", "orig_index", "label", "orig_label", "probe_row"):
        assert loaded.table[col].dtype == np.int64
    assert (loaded.table.category[loaded.table.role == "data"] == "").all()
    np.testing.assert_array_equal(loaded.probe_images, suite.probe_images)
    assert loaded.probe_images.dtype == np.uint8
    assert loaded.meta == suite.meta
    np.testing.assert_array_equal(loaded.images(digits), suite.images(digits))
    # a table without a required column is refused by name
    loaded.table.drop(columns=["probe_row"]).to_parquet(out / "examples.parquet")
    with pytest.raises(DataError, match="probe_row"):
        ProbeSuite.load(out)
    with pytest.raises(DataError, match="missing file"):
        ProbeSuite.load(tmp_path / "nowhere")


def test_images_composes_the_right_pixels() -> None:
    ds = _synthetic(120, seed=5)
    scores = np.random.default_rng(5).random(len(ds))
    s = build_probe_suite(
        ds,
        categories=list(CATEGORIES),
        train_size=3,
        heldout_size=4,
        seed=0,
        cscores=scores,
        ood_blur_kernel=3,
    )
    x = s.images(ds)
    assert x.dtype == np.uint8 and x.shape == (len(s), 8, 8, 3)
    t = s.table
    for r in range(len(t)):
        row = t.iloc[r]
        if row.probe_row >= 0:
            np.testing.assert_array_equal(x[r], s.probe_images[row.probe_row])
        if row.category in ("", "typical", "atypical", "random_labels", "random_sample"):
            src = ds.images[np.flatnonzero(ds.index == row.orig_index)[0]]
            np.testing.assert_array_equal(x[r], src)
    # order of the source rows does not matter: lookup is by the stable index
    shuffled = ds.subset(np.random.default_rng(1).permutation(len(ds)))
    np.testing.assert_array_equal(s.images(shuffled), x)
    # a source missing examples is refused
    with pytest.raises(DataError, match="absent"):
        s.images(ds.subset(np.arange(50)))


# --- errors ------------------------------------------------------------------------------------


def test_too_many_probes_for_the_data_set() -> None:
    ds = _synthetic(30)
    with pytest.raises(ConfigError, match="lower probes/train_size and heldout_size"):
        build_probe_suite(
            ds, categories=["random_labels", "ood"], train_size=8, heldout_size=8, seed=0
        )
    # random_inputs takes no sources: 2 x 14 = 28 < 30 sources fit
    s = build_probe_suite(
        ds,
        categories=["random_labels", "ood", "random_inputs"],
        train_size=7,
        heldout_size=7,
        seed=0,
    )
    assert s.meta["n_data"] == 2


def test_cscores_problems(digits: ImageDataset) -> None:
    kw = dict(categories=["typical", "atypical"], train_size=5, heldout_size=5, seed=0)
    with pytest.raises(DataError, match="C-scores have shape"):
        build_probe_suite(digits, cscores=np.zeros(len(digits) - 1), **kw)
    with pytest.raises(ConfigError, match="need C-scores"):
        build_probe_suite(digits, **kw)
    bad = np.zeros(len(digits))
    bad[3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        build_probe_suite(digits, cscores=bad, **kw)


def test_unknown_category(digits: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="mislabelled"):
        build_probe_suite(
            digits, categories=["ood", "mislabelled"], train_size=5, heldout_size=5, seed=0
        )
