"""Spurious-correlation stand-ins built from real digits (sklearn digits, MNIST)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mapd.data import base
from mapd.data.base import DatasetSpec, ImageDataset, load_dataset
from mapd.data.spurious import CUE_COLOURS, load_spurious_digits, load_spurious_mnist
from mapd.errors import ConfigError

SHARED_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"


def _expected_minority(labels: np.ndarray, agreement: float) -> int:
    return sum(int(np.floor((1 - agreement) * np.sum(labels == c) + 0.5)) for c in (0, 1))


@pytest.mark.parametrize(("split", "agreement"), [("train", 0.95), ("val", 0.5), ("test", 0.5)])
def test_group_counts_follow_agreement(split: str, agreement: float) -> None:
    ds = load_dataset("spurious_digits", split)
    n = len(ds)
    minority = ds.attrs["minority"]
    assert minority.dtype == bool
    assert abs(int(minority.sum()) - (1 - agreement) * n) <= 1
    assert int(minority.sum()) == _expected_minority(ds.labels, agreement)
    np.testing.assert_array_equal(minority, ds.labels != ds.attrs["spurious"])
    np.testing.assert_array_equal(ds.attrs["group"], 2 * ds.labels + ds.attrs["spurious"])
    # within each class the disagreeing share is the same
    for c in (0, 1):
        in_c = ds.labels == c
        assert abs(minority[in_c].sum() - (1 - agreement) * in_c.sum()) <= 0.5
    np.testing.assert_array_equal(ds.labels, (ds.attrs["orig_digit"] >= 5).astype(np.int64))


def test_images_and_splits() -> None:
    train, val, test = (load_spurious_digits(s) for s in ("train", "val", "test"))
    digits_train = load_dataset("digits", "train")
    digits_test = load_dataset("digits", "test")
    assert train.images.dtype == np.uint8 and train.images.shape == (len(digits_train), 8, 8, 3)
    np.testing.assert_array_equal(train.index, digits_train.index)
    np.testing.assert_array_equal(train.attrs["orig_digit"], digits_train.labels)
    # val and test partition the digits test split, stratified by digit
    assert not set(val.index) & set(test.index)
    assert sorted([*val.index, *test.index]) == sorted(digits_test.index)
    for d in range(10):
        nv, nt = np.sum(val.attrs["orig_digit"] == d), np.sum(test.attrs["orig_digit"] == d)
        assert nv == np.sum(digits_test.labels == d) // 2 and abs(nv - nt) <= 1
    assert train.classes == ("digit_in_01234", "digit_in_56789")


def test_background_cue_is_visible_in_pixels() -> None:
    ds = load_spurious_digits("train")
    gray = load_dataset("digits", "train").images[..., 0]
    background = gray == 0  # pixels without stroke show the cue colour exactly
    for s in (0, 1):
        pix = ds.images[(ds.attrs["spurious"] == s)[:, None, None] & background]
        np.testing.assert_array_equal(np.unique(pix, axis=0), CUE_COLOURS[s][None, :])
    red = ds.images[ds.attrs["spurious"] == 0].reshape(-1, 3).mean(0)
    green = ds.images[ds.attrs["spurious"] == 1].reshape(-1, 3).mean(0)
    assert red[0] > green[0] + 50 and green[1] > red[1] + 50
    # the stroke survives: full-intensity source pixels stay white
    np.testing.assert_array_equal(ds.images[gray == 255], 255)


def test_border_cue() -> None:
    ds = load_spurious_digits("val", cue="border")
    gray = load_dataset("digits", "test").images[..., 0]
    assert ds.images.shape[1:] == (10, 10, 3)
    for i in range(5):
        np.testing.assert_array_equal(
            ds.images[i, 0, :], np.tile(CUE_COLOURS[ds.attrs["spurious"][i]], (10, 1))
        )
    pos = {int(ix): k for k, ix in enumerate(load_dataset("digits", "test").index)}
    inner = ds.images[:, 1:-1, 1:-1, :]
    src = gray[[pos[int(ix)] for ix in ds.index]]
    np.testing.assert_array_equal(inner, np.repeat(src[..., None], 3, axis=-1))
    assert load_spurious_digits("val", cue="border", border=3).images.shape[1:] == (14, 14, 3)


def test_reproducible_and_seeded() -> None:
    a = load_spurious_digits("val", seed=3)
    b = load_spurious_digits("val", seed=3)
    c = load_spurious_digits("val", seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.attrs["spurious"], b.attrs["spurious"])
    np.testing.assert_array_equal(a.index, b.index)
    assert not np.array_equal(a.index, c.index)
    t3, t4 = load_spurious_digits("train", seed=3), load_spurious_digits("train", seed=4)
    np.testing.assert_array_equal(t3.index, t4.index)  # train = digits train whatever the seed
    assert not np.array_equal(t3.attrs["spurious"], t4.attrs["spurious"])


def test_options() -> None:
    ds = load_spurious_digits("train", train_agreement=0.8, positive_digits=(1, 3, 5, 7, 9))
    np.testing.assert_array_equal(ds.labels, ds.attrs["orig_digit"] % 2)
    assert ds.classes == ("digit_in_02468", "digit_in_13579")
    assert int(ds.attrs["minority"].sum()) == _expected_minority(ds.labels, 0.8)
    assert load_spurious_digits("test", eval_agreement=1.0).attrs["minority"].sum() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"train_agreement": 1.5}, "train_agreement must be in \\[0, 1\\]"),
        ({"eval_agreement": -0.1}, "eval_agreement must be in \\[0, 1\\]"),
        ({"cue": "shape"}, "cue must be one of background, border"),
        ({"positive_digits": ()}, "positive_digits must be a non-empty proper subset"),
        ({"positive_digits": (3, 12)}, "positive_digits must be a non-empty proper subset"),
        ({"cue": "border", "border": 0}, "border must be >= 1"),
    ],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_spurious_digits("train", **options)


def test_mnist_path_uses_the_mnist_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """spurious_mnist goes through load_dataset("mnist", ..., root=...); a stand-in loader
    (digits upscaled to 28x28) checks the plumbing without the MNIST files."""
    try:
        import mapd.data.mnist  # noqa: F401  (register the real one first, then replace it)
    except ModuleNotFoundError:
        pass
    calls = []

    def fake_mnist(split: str, *, root=None) -> ImageDataset:
        calls.append((split, root))
        d = load_dataset("digits", split)
        big = np.kron(d.images[..., 0], np.ones((4, 4), dtype=np.uint8))[:, 2:30, 2:30]
        return ImageDataset("mnist", split, d.labels, d.classes, d.index, images=big[..., None])

    spec = DatasetSpec("mnist", fake_mnist, ("train", "test"), "fake", "test")
    monkeypatch.setitem(base._REGISTRY, "mnist", spec)
    ds = load_dataset("spurious_mnist", "test", root="/somewhere")
    assert calls == [("test", "/somewhere")]
    assert ds.name == "spurious_mnist" and ds.images.shape[1:] == (28, 28, 3)
    assert abs(int(ds.attrs["minority"].sum()) - 0.5 * len(ds)) <= 1
    assert load_spurious_mnist("val", root="/x", cue="border").images.shape[1:] == (32, 32, 3)


@pytest.mark.shared
@pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason="needs the MNIST idx files in ../shared/data/mnist"
)
def test_real_mnist_eval_splits() -> None:
    pytest.importorskip(
        "mapd.data.mnist", reason="the mnist loader (mapd.data.mnist) is not there yet"
    )
    val = load_dataset("spurious_mnist", "val", root=SHARED_MNIST)
    test = load_dataset("spurious_mnist", "test", root=SHARED_MNIST)
    assert len(val) + len(test) == 10_000
    assert val.images.shape[1:] == (28, 28, 3) and val.images.dtype == np.uint8
    assert abs(int(val.attrs["minority"].sum()) - 0.5 * len(val)) <= 1
    corner = val.images[:, 0, 0, :]  # MNIST corners are blank, so they show the cue colour
    np.testing.assert_array_equal(corner, CUE_COLOURS[val.attrs["spurious"]])
