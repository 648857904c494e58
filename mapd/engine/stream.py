"""Streaming data source for data sets that stay on disk (ImageNet, Clothing1M, Waterbirds, ...).

:class:`FileSource` offers the interface of :class:`mapd.engine.augment.TensorSource`
(``len()``, ``.device``, ``.channels_last``, ``batch(idx, augment=, generator=)``), so the
Trainer, trajectory recording, checkpoints and methods work unchanged. Each batch is decoded
from its files by a thread pool (PIL releases the GIL while decoding and resampling); rows may
also be in-memory uint8 images (the materialised probes of an audit set).

Views (``S`` = ``image_size``, ``R`` = ``resize`` >= S):

- eval: shorter side resized to R (bilinear), then the centre S x S crop. In-memory rows that
  are already S x S are taken as this view (probes are materialised with it).
- train ``pad_crop`` (CIFAR style): the eval view, reflection-padded by ``crop_padding``, a
  random S x S crop, a random horizontal flip. It draws its random numbers exactly as
  TensorSource does, so at native size (S = R = image side) it reproduces the in-memory path.
- train ``random_resized_crop`` (ImageNet style): a random box of ``crop_scale`` of the area
  and aspect ratio in [3/4, 4/3] (10 tries, then the centre crop), resized to S x S, a random
  horizontal flip.

Every random number comes from the ``generator`` passed to :meth:`FileSource.batch`, drawn
for the whole batch before decoding starts, so results do not depend on thread timing and a
run resumed from a checkpointed generator continues identically.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mapd.data.base import ImageDataset
from mapd.errors import ConfigError, DataError

TRAIN_TRANSFORMS = ("pad_crop", "random_resized_crop")
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_TRIES = 10
MAX_AUTO_WORKERS = 16


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSettings:
    """The streaming options of the config's ``train`` section, validated once.

    Attributes:
        size: output side S of every view.
        resize: shorter side R before the centre crop of the eval view (R >= S).
        train_transform: ``"pad_crop"`` or ``"random_resized_crop"``.
        crop_padding: reflection padding of ``pad_crop`` (< S).
        flip: random horizontal flips in training.
        crop_scale: (low, high) area fraction of ``random_resized_crop``.
        workers: decoding threads (0 = one per CPU, at most 16).
        stats_sample: rows whose eval views give the normalisation mean/std.
        normalize: standardise inputs with those statistics.
    """

    size: int
    resize: int
    train_transform: str
    crop_padding: int
    flip: bool
    crop_scale: tuple[float, float]
    workers: int
    stats_sample: int
    normalize: bool

    @classmethod
    def from_config(
        cls, train: dict[str, Any], *, what: str = "file-backed data", size: int | None = None
    ) -> StreamSettings:
        """Read ``train`` (the config section, possibly partial: the schema fills the rest);
        ``size`` overrides ``train["image_size"]``."""
        from mapd.config import section

        train = section("train", train)
        size = train["image_size"] if size is None else size
        if size is None:
            raise ConfigError(
                f"train/image_size must be set to stream {what} (e.g. 224 for ImageNet-style "
                f"data, 32 for an imagefolder copy of CIFAR-10)"
            )
        resize = train["resize"] or size
        kind = train["train_transform"]
        scale = tuple(float(v) for v in train["crop_scale"])
        pad = int(train["crop_padding"])
        workers = int(train["workers"])
        sample = int(train["stats_sample"])
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"train/image_size must be a positive integer, got {size!r}")
        if isinstance(resize, bool) or not isinstance(resize, int) or resize < size:
            raise ConfigError(
                f"train/resize must be an integer >= image_size ({size}), got {resize!r}"
            )
        if kind not in TRAIN_TRANSFORMS:
            raise ConfigError(
                f"train/train_transform must be one of {', '.join(TRAIN_TRANSFORMS)}, got {kind!r}"
            )
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"train/crop_scale must be [low, high] in (0, 1], got {list(scale)}")
        if kind == "pad_crop" and not 0 <= pad < size:
            raise ConfigError(
                f"train/crop_padding must be in [0, image_size={size}) for pad_crop, got {pad}"
            )
        if workers < 0 or sample < 1:
            raise ConfigError(
                f"train/workers must be >= 0 and train/stats_sample >= 1, got {workers}, {sample}"
            )
        return cls(
            size=size,
            resize=resize,
            train_transform=kind,
            crop_padding=pad,
            flip=bool(train["flip"]),
            crop_scale=(scale[0], scale[1]),
            workers=workers,
            stats_sample=sample,
            normalize=bool(train["normalize"]),
        )

    @property
    def threads(self) -> int:
        if self.workers:
            return self.workers
        try:
            cpus = len(os.sched_getaffinity(0))  # the CPUs this process may use
        except AttributeError:  # not on every platform
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, MAX_AUTO_WORKERS))


# --- rows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRows:
    """The inputs of a streamed row set: image files, and optionally in-memory images.

    Attributes:
        paths: (N,) object array of file paths; ignored ("" by convention) for in-memory rows.
        memory: (M, H, W, C) uint8 in-memory inputs (e.g. materialised probes), or None.
        memory_row: (N,) int64 row of ``memory`` for in-memory rows, -1 for file rows.
        channels: C of every view: 1 decodes files as grey ("L"), 3 as RGB.
    """

    paths: np.ndarray
    memory: np.ndarray | None = None
    memory_row: np.ndarray | None = None
    channels: int = 3

    def __post_init__(self) -> None:
        paths = np.asarray(self.paths, dtype=object)
        n = len(paths)
        row = np.full(n, -1, np.int64) if self.memory_row is None else np.asarray(self.memory_row)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "memory_row", row.astype(np.int64))
        if self.channels not in (1, 3):
            raise DataError(f"streamed rows need 1 or 3 channels, got {self.channels}")
        if paths.ndim != 1 or row.shape != (n,):
            raise DataError(f"paths {paths.shape} and memory_row {row.shape} must both be (N,)")
        used = row[row >= 0]
        if self.memory is None:
            if len(used):
                raise DataError(f"{len(used)} rows refer to in-memory images, but none are given")
            return
        m = self.memory
        if m.dtype != np.uint8 or m.ndim != 4 or m.shape[-1] != self.channels:
            raise DataError(
                f"in-memory rows must be uint8 (M, H, W, {self.channels}), got {m.dtype} {m.shape}"
            )
        if len(used) and used.max() >= len(m):
            raise DataError(
                f"memory_row {used.max()} is out of range for {len(m)} in-memory images"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @classmethod
    def from_dataset(cls, dataset: ImageDataset) -> FileRows:
        """All rows of a data set: its files (file-backed) or its images (in memory)."""
        if dataset.images is not None:
            return cls.from_images(dataset.images)
        return cls(paths=dataset.paths, channels=channels_of(dataset))

    @classmethod
    def from_images(cls, images: np.ndarray) -> FileRows:
        """Every row in memory: row i is ``images[i]`` (N, H, W, C) uint8."""
        n = len(images)
        return cls(
            paths=np.full(n, "", dtype=object),
            memory=images,
            memory_row=np.arange(n, dtype=np.int64),
            channels=int(images.shape[-1]),
        )


def channels_of(dataset: ImageDataset) -> int:
    """Channels of a data set's views: 1 for grey (``info["color_mode"] == "L"``), else 3."""
    if dataset.images is not None:
        return int(dataset.images.shape[-1])
    return 1 if dataset.info.get("color_mode") == "L" else 3


# --- per-image transforms -----------------------------------------------------------------------


def open_image(path: str, mode: str) -> Image.Image:
    """Decode ``path`` into a loaded PIL image of ``mode``; DataError naming the file."""
    try:
        with Image.open(path) as im:
            if im.mode == mode:
                im.load()  # the pixels stay usable after the file closes
                return im
            return im.convert(mode)
    except FileNotFoundError as e:
        raise DataError(f"image file missing: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from e


def _to_pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _to_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def eval_view(img: Image.Image, *, size: int, resize: int) -> np.ndarray:
    """Shorter side to ``resize`` (bilinear), centre ``size`` crop: uint8 (size, size, C)."""
    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    if short != resize:
        new_long = int(resize * long_ / short)
        img = img.resize(
            (resize, new_long) if w <= h else (new_long, resize), Image.Resampling.BILINEAR
        )
        w, h = img.size
    top, left = round((h - size) / 2), round((w - size) / 2)
    if (top, left, w, h) != (0, 0, size, size):
        img = img.crop((left, top, left + size, top + size))
    return _to_array(img)


def rrc_box(
    h: int, w: int, u: np.ndarray, *, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """The random-resized-crop box (left, top, right, bottom) of an h x w image.

    ``u``: (2 * RRC_TRIES + 2,) uniforms in [0, 1): per try an area and a log-aspect draw,
    then the box position. The first try that fits wins, else the centre crop of the whole
    image clamped to ``ratio`` (torchvision's rule).
    """
    area = h * w
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for t in range(RRC_TRIES):
        target = area * (scale[0] + (scale[1] - scale[0]) * float(u[2 * t]))
        aspect = math.exp(lo + (hi - lo) * float(u[2 * t + 1]))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = min(int(float(u[-2]) * (h - ch + 1)), h - ch)
            left = min(int(float(u[-1]) * (w - cw + 1)), w - cw)
            return left, top, left + cw, top + ch
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return left, top, left + cw, top + ch


@functools.cache
def _reflect_index(n: int, pad: int, offset: int) -> np.ndarray:
    """Source positions of the n-long window at ``offset`` of a reflection-padded axis."""
    i = np.arange(n) + offset - pad
    i = np.abs(i)  # reflect at the start (the edge pixel is not repeated)
    out = np.where(i > n - 1, 2 * (n - 1) - i, i)
    out.setflags(write=False)  # shared by every call through the cache
    return out


def _pad_crop(view: np.ndarray, pad: int, oy: int, ox: int, flip: bool) -> np.ndarray:
    """Window (oy, ox) of (H, W, C) reflection-padded by ``pad``, mirrored if ``flip``.

    One gather instead of padding: the same pixels as ``np.pad(mode="reflect")`` + slicing.
    """
    h, w = view.shape[:2]
    cols = _reflect_index(w, pad, ox)
    return view[_reflect_index(h, pad, oy)[:, None], cols[::-1] if flip else cols]


# --- row decoding -------------------------------------------------------------------------------


class _Decoder:
    """Turns row numbers plus per-row random parameters into views (thread-safe, stateless)."""

    def __init__(self, rows: FileRows, settings: StreamSettings) -> None:
        self.rows, self.s = rows, settings

    def _source(self, r: int) -> Image.Image | np.ndarray:
        m = int(self.rows.memory_row[r])
        if m >= 0:
            return self.rows.memory[m]
        return open_image(self.rows.paths[r], self.rows.mode)

    def _eval(self, src: Image.Image | np.ndarray) -> np.ndarray:
        s = self.s
        if isinstance(src, np.ndarray):
            if src.shape[:2] == (s.size, s.size):
                return src  # materialised at the output size: already the eval view
            src = _to_pil(src)
        return eval_view(src, size=s.size, resize=s.resize)

    def view(self, r: int, params: dict[str, np.ndarray] | None, k: int) -> np.ndarray:
        """The (S, S, C) uint8 view of row ``r``; ``params[...][k]`` are its random draws."""
        src = self._source(r)
        s = self.s
        if params is None:
            return self._eval(src)
        flip = "flip" in params and bool(params["flip"][k])
        if s.train_transform == "pad_crop":
            out = self._eval(src)
            if "oy" in params:
                oy, ox = int(params["oy"][k]), int(params["ox"][k])
                return _pad_crop(out, s.crop_padding, oy, ox, flip)
        else:
            img = _to_pil(src) if isinstance(src, np.ndarray) else src
            box = rrc_box(
                img.height, img.width, params["u"][k], scale=s.crop_scale, ratio=RRC_RATIO
            )
            img = img.resize((s.size, s.size), Image.Resampling.BILINEAR, box=box)
            out = _to_array(img)
        return out[:, ::-1] if flip else out

    def fill(
        self,
        out: np.ndarray,
        rows: np.ndarray,
        params: dict[str, np.ndarray] | None,
        lo: int,
        hi: int,
    ) -> None:
        for k in range(lo, hi):
            out[k] = self.view(int(rows[k]), params, k)


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


class _Pending:
    """A batch being decoded in the pool: its output buffer and its chunk futures."""

    def __init__(self, key: tuple[int, int] | None, out: np.ndarray, futures: list[Future]) -> None:
        self.key, self.out, self.futures = key, out, futures

    def wait(self) -> np.ndarray:
        for f in self.futures:
            f.result()  # re-raises a worker's DataError
        return self.out

    def cancel(self) -> None:
        for f in self.futures:
            f.cancel()


def decode_views(
    rows: FileRows,
    positions: Sequence[int] | np.ndarray,
    *,
    settings: StreamSettings,
    pool: ThreadPoolExecutor | None = None,
) -> np.ndarray:
    """Eval views of ``rows`` at ``positions``: uint8 (len(positions), S, S, C), in parallel."""
    positions = np.asarray(positions, dtype=np.int64)
    out = np.empty((len(positions), settings.size, settings.size, rows.channels), np.uint8)
    if not len(positions):
        return out
    dec = _Decoder(rows, settings)
    if settings.threads == 1:
        dec.fill(out, positions, None, 0, len(positions))
        return out
    own = pool is None
    pool = pool or ThreadPoolExecutor(settings.threads, thread_name_prefix="mapd-decode")
    try:
        futures = [
            pool.submit(dec.fill, out, positions, None, a, b)
            for a, b in _chunks(len(positions), settings.threads * 4)
        ]
        _Pending(None, out, futures).wait()
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
    return out


def sample_rows(n: int, sample: int, *, seed: int = 0) -> np.ndarray:
    """All of 0..n-1 when n <= sample, else a seeded sorted sample of ``sample`` rows."""
    if n <= sample:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


# --- the source ---------------------------------------------------------------------------------


class FileSource:
    """Normalised batches of streamed rows, decoded in parallel (TensorSource's interface).

    Args:
        rows: the inputs (files and/or in-memory images); row order = trajectory row order.
        labels: (N,) int labels.
        settings: views, augmentation and decoding threads.
        device: where batches are delivered.
        mean, std: per-channel statistics on the [0, 1] scale (None = no normalisation).
        channels_last: return batches in channels_last memory format.
        prefetch: while a batch of consecutive rows is used without augmentation (the
            recording and test passes), decode the next consecutive batch in the background.
    """

    def __init__(
        self,
        rows: FileRows,
        labels: np.ndarray,
        *,
        settings: StreamSettings,
        device: torch.device,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        channels_last: bool = False,
        prefetch: bool = True,
    ) -> None:
        labels = np.asarray(labels)
        if labels.shape != (len(rows),):
            raise DataError(f"{len(rows)} streamed rows but labels of shape {labels.shape}")
        self.rows, self.s = rows, settings
        self.n, self.h, self.w, self.c = len(rows), settings.size, settings.size, rows.channels
        self.device = device
        self.channels_last = channels_last
        self.prefetch = prefetch
        self.labels = torch.tensor(labels, dtype=torch.long, device=device)
        self.mean = None if mean is None else self._stat(mean)
        self.std = None if std is None else self._stat(std)
        self._decoder = _Decoder(rows, settings)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: _Pending | None = None

    def _stat(self, v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return self.n

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.s.threads, thread_name_prefix="mapd-decode")
        return self._pool

    def close(self) -> None:
        """Stop the decoding threads (a later batch starts them again)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def views(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Eval views (no normalisation) of rows ``positions``: uint8 (K, S, S, C)."""
        return decode_views(self.rows, positions, settings=self.s, pool=self.pool)

    def _draw(
        self, b: int, augment: bool, generator: torch.Generator | None
    ) -> dict[str, np.ndarray] | None:
        """Per-row random parameters of a training batch, drawn before any decoding."""
        if not augment:
            return None
        s = self.s
        dev = generator.device if generator is not None else torch.device("cpu")
        params: dict[str, torch.Tensor] = {}
        if s.train_transform == "pad_crop":
            # the same draws, in the same order, as TensorSource.batch
            if s.crop_padding:
                hi = 2 * s.crop_padding + 1
                params["oy"] = torch.randint(0, hi, (b,), device=dev, generator=generator)
                params["ox"] = torch.randint(0, hi, (b,), device=dev, generator=generator)
        else:
            params["u"] = torch.rand((b, 2 * RRC_TRIES + 2), device=dev, generator=generator)
        if s.flip:
            params["flip"] = torch.rand(b, device=dev, generator=generator) < 0.5
        return {k: v.cpu().numpy() for k, v in params.items()}

    def _submit(
        self, rows: np.ndarray, params: dict[str, np.ndarray] | None, key: tuple[int, int] | None
    ) -> _Pending:
        out = np.empty((len(rows), self.h, self.w, self.c), np.uint8)
        if self.s.threads == 1:  # no hand-over to a thread when there is nothing to overlap
            self._decoder.fill(out, rows, params, 0, len(rows))
            return _Pending(key, out, [])
        futures = [
            self.pool.submit(self._decoder.fill, out, rows, params, a, b)
            for a, b in _chunks(len(rows), self.s.threads)
        ]
        return _Pending(key, out, futures)

    def batch(
        self, idx: torch.Tensor, *, augment: bool, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, C, S, S) float32 and labels (B,) long for row positions ``idx``."""
        rows = idx.detach().cpu().numpy().astype(np.int64, copy=False)
        b = len(rows)
        params = self._draw(b, augment, generator)
        key = None
        if not augment and b and rows[-1] - rows[0] == b - 1 and (np.diff(rows) == 1).all():
            key = (int(rows[0]), int(rows[0]) + b)
        pending, self._pending = self._pending, None
        if pending is not None and key is not None and pending.key == key:
            buf = pending.wait()
        else:
            if pending is not None:
                pending.cancel()
            buf = self._submit(rows, params, key).wait()
        if self.prefetch and self.s.threads > 1 and key is not None and key[1] < self.n:
            nxt = np.arange(key[1], min(key[1] + b, self.n), dtype=np.int64)
            self._pending = self._submit(nxt, None, (int(nxt[0]), int(nxt[-1]) + 1))
        # the same conversion as TensorSource, so equal pixels give equal inputs
        x = torch.from_numpy(buf).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        x = x.contiguous(
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )
        return x, self.labels[idx.to(self.labels.device)]
