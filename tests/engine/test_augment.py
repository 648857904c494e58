"""The device-resident batch source: exact normalisation, crops of the reflection-padded image,
flips, and reproducibility from the generator seed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mapd.engine.augment import TensorSource, channel_stats

CPU = torch.device("cpu")


def _images(n: int = 64, h: int = 6, w: int = 7, c: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint8 (n, h, w, c): every pixel differs, so a window identifies its offset."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _as_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [0, 1] (no normalisation) back to uint8 (B, H, W, C)."""
    return np.rint(x.permute(0, 2, 3, 1).numpy() * 255.0).astype(np.uint8)


def test_plain_batch_is_exactly_the_normalised_images() -> None:
    imgs = _images()
    labels = np.arange(64) % 5
    mean, std = channel_stats(imgs)
    # augmentation options are set but must not apply when augment=False
    src = TensorSource(imgs, labels, device=CPU, crop_padding=2, flip=True, mean=mean, std=std)
    assert len(src) == 64
    idx = torch.tensor([5, 0, 63, 5])
    x, y = src.batch(idx, augment=False)
    assert x.shape == (4, 3, 6, 7) and x.dtype == torch.float32
    ref = imgs[idx.numpy()].astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    ref = (ref - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(x.numpy(), ref)  # same float32 operations, bit for bit
    np.testing.assert_array_equal(y.numpy(), labels[idx.numpy()])
    # normalised with its own statistics the whole set has mean 0 and std 1 per channel
    xa, _ = src.batch(torch.arange(64), augment=False)
    np.testing.assert_allclose(xa.mean((0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(xa.std((0, 2, 3), unbiased=False).numpy(), 1, atol=1e-4)
    # without mean/std the values are the pixels / 255, exactly
    raw = TensorSource(imgs, labels, device=CPU)
    xr, _ = raw.batch(idx, augment=True)  # nothing to augment
    np.testing.assert_array_equal(_as_uint8_hwc(xr), imgs[idx.numpy()])


def test_channel_stats() -> None:
    imgs = np.zeros((4, 2, 2, 2), dtype=np.uint8)
    imgs[..., 0] = 255
    imgs[:2, ..., 1] = 255
    mean, std = channel_stats(imgs)
    np.testing.assert_allclose(mean, [1.0, 0.5])
    np.testing.assert_allclose(std, [1.0, 0.5])  # a constant channel gets std 1, not 0
    assert mean.dtype == np.float32 and std.dtype == np.float32


def _find_offsets(out: np.ndarray, padded: np.ndarray, h: int, w: int) -> list[tuple[int, int]]:
    hits = []
    for oy in range(padded.shape[0] - h + 1):
        for ox in range(padded.shape[1] - w + 1):
            if np.array_equal(out, padded[oy : oy + h, ox : ox + w]):
                hits.append((oy, ox))
    return hits


def test_crop_is_a_window_of_the_reflection_padded_image() -> None:
    pad, h, w = 2, 6, 7
    imgs = _images(h=h, w=w)
    src = TensorSource(imgs, np.zeros(64), device=CPU, crop_padding=pad)
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(64)
    x, _ = src.batch(idx, augment=True, generator=g)
    out = _as_uint8_hwc(x)
    offsets = []
    for i in range(64):
        padded = np.pad(imgs[i], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        hits = _find_offsets(out[i], padded, h, w)
        assert len(hits) == 1, f"image {i} is not one window of its padded original"
        offsets.append(hits[0])
    # offsets are random over the whole (2p+1)^2 range
    assert len(set(offsets)) > 12
    assert {o[0] for o in offsets} == set(range(2 * pad + 1))
    assert {o[1] for o in offsets} == set(range(2 * pad + 1))


def test_flip_mirrors() -> None:
    imgs = _images()
    src = TensorSource(imgs, np.zeros(64), device=CPU, flip=True)
    x, _ = src.batch(torch.arange(64), augment=True, generator=torch.Generator().manual_seed(1))
    out = _as_uint8_hwc(x)
    flipped = np.array([np.array_equal(out[i], imgs[i, :, ::-1]) for i in range(64)])
    kept = np.array([np.array_equal(out[i], imgs[i]) for i in range(64)])
    assert (flipped ^ kept).all()  # each is exactly one of the two
    assert 16 < flipped.sum() < 48  # about half
    # crop and flip together: a mirrored window of the padded image
    pad = 1
    both = TensorSource(imgs, np.zeros(64), device=CPU, crop_padding=pad, flip=True)
    xb, _ = both.batch(torch.arange(64), augment=True, generator=torch.Generator().manual_seed(2))
    outb = _as_uint8_hwc(xb)
    n_mirrored = 0
    for i in range(64):
        padded = np.pad(imgs[i], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        plain = _find_offsets(outb[i], padded, 6, 7)
        mirrored = _find_offsets(outb[i][:, ::-1], padded, 6, 7)
        assert len(plain) + len(mirrored) == 1
        n_mirrored += len(mirrored)
    assert 16 < n_mirrored < 48


def test_same_generator_seed_same_batch() -> None:
    imgs = _images()
    src = TensorSource(imgs, np.arange(64), device=CPU, crop_padding=2, flip=True)
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(3))[:32]
    a, ya = src.batch(idx, augment=True, generator=torch.Generator().manual_seed(7))
    b, yb = src.batch(idx, augment=True, generator=torch.Generator().manual_seed(7))
    c, _ = src.batch(idx, augment=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    # one generator advances: two consecutive batches differ
    g = torch.Generator().manual_seed(7)
    first, _ = src.batch(idx, augment=True, generator=g)
    second, _ = src.batch(idx, augment=True, generator=g)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TensorSource(np.zeros((2, 4, 4, 1), dtype=np.float32), np.zeros(2), device=CPU)
    with pytest.raises(ValueError, match="uint8"):
        TensorSource(np.zeros((2, 4, 4), dtype=np.uint8), np.zeros(2), device=CPU)


def test_read_only_labels_are_copied_without_warning() -> None:
    # pandas hands out read-only arrays (ProbeSuite.labels); torch warns when it shares one.
    # torch warns only once per process, so this can only fail where it is the first sharer.
    labels = np.arange(8) % 3
    labels.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = TensorSource(_images(8), labels, device=CPU)
    assert src.labels.dtype == torch.long
    np.testing.assert_array_equal(src.labels.numpy(), labels)
    src.labels[0] = 2  # writable, and not the caller's array
    assert labels[0] == 0


def test_fixed_rows_are_never_augmented_and_do_not_shift_the_others() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    fixed = np.zeros(12, dtype=bool)
    fixed[[1, 4, 9]] = True
    dev = torch.device("cpu")
    plain = TensorSource(images, labels, device=dev, crop_padding=2, flip=True)
    probes = TensorSource(images, labels, device=dev, crop_padding=2, flip=True, fixed_rows=fixed)
    idx = torch.arange(12)
    a, _ = plain.batch(idx, augment=True, generator=torch.Generator().manual_seed(5))
    b, _ = probes.batch(idx, augment=True, generator=torch.Generator().manual_seed(5))
    clean, _ = plain.batch(idx, augment=False)
    torch.testing.assert_close(b[fixed], clean[fixed])  # centre crop, no flip
    torch.testing.assert_close(b[~fixed], a[~fixed])  # the same draws for every other row
    assert not torch.equal(a[fixed], clean[fixed])  # augmentation did change them in `plain`
