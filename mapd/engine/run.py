"""One call from images to trajectories: sources, model, trainer (used by the CLI and the API)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapd.config import fingerprint, section
from mapd.engine.augment import TensorSource, channel_stats
from mapd.engine.method import Method
from mapd.engine.stream import FileRows, FileSource, StreamSettings, decode_views, sample_rows
from mapd.engine.trainer import Trainer, TrainResult, TrainSettings, pick_device
from mapd.errors import ConfigError
from mapd.models import build_model


def make_sources(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    train: dict[str, Any],
    device: torch.device,
    test_images: np.ndarray | FileRows | None = None,
    test_labels: np.ndarray | None = None,
    fixed_rows: np.ndarray | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[TensorSource, TensorSource | FileSource | None]:
    """Device-resident training (augmented) and test (plain) sources, normalised alike.

    A file-backed test set (``FileRows``) streams at the training images' size. ``train`` may
    be partial: the schema fills the rest.
    """
    train = section("train", train)
    mean, std = channel_stats(train_images) if train["normalize"] else (None, None)
    if stats is not None:  # another set's normalisation (predicting on held-out images)
        mean, std = stats
    cl = train["channels_last"]
    tr = TensorSource(
        train_images,
        train_labels,
        device=device,
        crop_padding=train["crop_padding"],
        flip=train["flip"],
        mean=mean,
        std=std,
        channels_last=cl,
        fixed_rows=fixed_rows,
    )
    te = None
    if isinstance(test_images, FileRows):
        size = int(train_images.shape[1])
        # the test set is only evaluated: its view is the training images' size, no crop jitter
        settings = StreamSettings.from_config(
            {**train, "resize": max(train["resize"] or size, size), "crop_padding": 0},
            size=size,
        )
        te = FileSource(
            test_images,
            test_labels,
            settings=settings,
            device=device,
            mean=mean,
            std=std,
            channels_last=cl,
        )
    elif test_images is not None:
        te = TensorSource(
            test_images, test_labels, device=device, mean=mean, std=std, channels_last=cl
        )
    return tr, te


def make_stream_sources(
    rows: FileRows,
    labels: np.ndarray,
    *,
    train: dict[str, Any],
    device: torch.device,
    test_rows: FileRows | np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> tuple[FileSource, FileSource | None]:
    """Streaming training (augmented) and test (eval view) sources, normalised alike.

    The mean/std are those of the eval views of ``train["stats_sample"]`` rows (all rows when
    there are no more than that, so at native size they equal the in-memory path's).
    ``test_rows`` may be in memory (uint8 (N, H, W, C)); it then goes through the eval view.
    """
    train = section("train", train)
    settings = StreamSettings.from_config(train)
    mean = std = None
    if settings.normalize:
        mean, std = channel_stats(
            decode_views(rows, sample_rows(len(rows), settings.stats_sample), settings=settings)
        )
    cl = train["channels_last"]
    tr = FileSource(
        rows, labels, settings=settings, device=device, mean=mean, std=std, channels_last=cl
    )
    te = None
    if test_rows is not None:
        if not isinstance(test_rows, FileRows):
            test_rows = FileRows.from_images(test_rows)
        te = FileSource(
            test_rows,
            test_labels,
            settings=settings,
            device=device,
            mean=mean,
            std=std,
            channels_last=cl,
        )
    return tr, te


def train_trajectories(
    images: np.ndarray | FileRows,
    labels: np.ndarray,
    *,
    num_classes: int,
    train: dict[str, Any],
    seed: int,
    workdir: str | Path,
    test_images: np.ndarray | FileRows | None = None,
    test_labels: np.ndarray | None = None,
    device: str = "auto",
    method: Method | None = None,
    log: Callable[[str], None] | None = None,
    stop_after_epoch: int | None = None,
    fixed_rows: np.ndarray | None = None,
    eval_rows: np.ndarray | None = None,
) -> TrainResult:
    """Train the configured model and record trajectories.

    ``images`` is uint8 (N, H, W, C) in memory, or :class:`FileRows` (file-backed rows, streamed
    at ``train["image_size"]`` with ``train["train_transform"]``; probes may be in memory).
    Returns (N, epochs) loss / correctness arrays whose rows follow ``images``. The run is
    checkpointed in ``workdir`` every epoch and resumed from there when called again with the
    same settings and data. ``fixed_rows`` (N,) bool marks rows never augmented (in-memory data
    only); ``eval_rows`` (indices) are recorded by an eval pass when recording is online.
    """
    dev = pick_device(device)
    train = section("train", train)  # API callers may give a partial section
    settings = TrainSettings.from_config(train)
    method = method or Method()
    streaming = isinstance(images, FileRows)
    if streaming:
        size, channels = StreamSettings.from_config(train).size, images.channels
    else:
        size, channels = images.shape[1], images.shape[-1]
    torch.manual_seed(seed)
    model = build_model(
        train["model"],
        num_classes=num_classes,
        in_channels=channels,
        image_size=size,
        **train["model_options"],
    )
    if streaming and fixed_rows is not None and np.any(fixed_rows):
        raise ConfigError("rows with fixed (never augmented) inputs need an in-memory data set")
    from mapd.engine import distributed

    rank = distributed.current()  # a rank of a data-parallel job (torchrun), else None
    if rank is not None:
        model = distributed.prepare_model(model, sync_bn=train["sync_bn"], device=dev)
        log = log if rank.rank == 0 else (lambda msg: None)
    if streaming:
        tr, te = make_stream_sources(
            images, labels, train=train, device=dev, test_rows=test_images, test_labels=test_labels
        )
    else:
        tr, te = make_sources(
            images,
            labels,
            train=train,
            device=dev,
            test_images=test_images,
            test_labels=test_labels,
            fixed_rows=fixed_rows,
        )
    # decoding threads do not change results, so they may differ when a run is resumed; the
    # method's settings do change them
    key = {
        "train": {k: v for k, v in train.items() if k not in ("workers", "method")},
        "seed": seed,
        "n": len(images),
        "labels": fingerprint(np.asarray(labels).tolist()),
        "method": method.signature(),
    }
    if fixed_rows is not None:
        key["fixed_rows"] = fingerprint(np.flatnonzero(fixed_rows).tolist())
    if eval_rows is not None:
        key["eval_rows"] = fingerprint(np.asarray(eval_rows).tolist())
    if streaming:
        key["storage"] = "files"
    if dev.type == "cpu":
        # CPU results are bit for bit only at one thread count: a resume must use the same
        key["threads"] = torch.get_num_threads()
    signature = json.loads(json.dumps(key, default=str))  # plain JSON, as signature.json holds
    trainer = (Trainer if rank is None else partial(distributed.DistributedTrainer, rank=rank))(
        model,
        tr,
        settings=settings,
        workdir=workdir,
        test=te,
        method=method,
        seed=seed,
        signature=signature,
        log=log,
        eval_rows=eval_rows,
    )
    try:
        return trainer.fit(stop_after_epoch=stop_after_epoch)
    finally:
        for src in (tr, te):
            if isinstance(src, FileSource):
                src.close()


@torch.inference_mode()
def predict_proba(
    model_state: dict[str, Any],
    images: np.ndarray,
    *,
    num_classes: int,
    train: dict[str, Any],
    device: str = "auto",
    rows: np.ndarray | None = None,
    reference_images: np.ndarray | None = None,
) -> np.ndarray:
    """Softmax outputs (R, C) float64 of a trained model (its ``state_dict``) on in-memory
    ``images`` at the positions ``rows`` (all rows if None), in eval mode without augmentation.
    The images it was trained on (``reference_images``, default ``images``) give the
    normalisation, as in training."""
    dev = pick_device(device)
    train = section("train", train)
    model = build_model(
        train["model"],
        num_classes=num_classes,
        in_channels=images.shape[-1],
        image_size=images.shape[1],
        **train["model_options"],
    )
    model.load_state_dict(model_state)
    model = model.to(dev).eval()
    ref = images if reference_images is None else reference_images
    stats = channel_stats(ref) if train["normalize"] else None
    src, _ = make_sources(
        images, np.zeros(len(images), dtype=np.int64), train=train, device=dev, stats=stats
    )
    positions = torch.arange(len(images), device=dev) if rows is None else torch.as_tensor(rows)
    out = []
    for part in positions.split(train["eval_batch_size"]):
        x, _ = src.batch(part.to(dev), augment=False)
        out.append(torch.softmax(model(x).float(), dim=1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, num_classes))


@torch.inference_mode()
def predict_loss(
    model_state: dict[str, Any],
    trained_on: np.ndarray | FileRows,
    images: np.ndarray | FileRows,
    labels: np.ndarray,
    *,
    num_classes: int,
    train: dict[str, Any],
    device: str = "auto",
) -> np.ndarray:
    """Cross-entropy (N,) float32 of a trained model (its ``state_dict``) on ``images`` with
    ``labels``, in eval mode without augmentation, normalised like the images it was trained on
    (``trained_on``). Either may be in memory (uint8 (N, H, W, C)) or file-backed."""
    dev = pick_device(device)
    train = section("train", train)
    streaming = isinstance(trained_on, FileRows)
    if streaming:
        size, channels = StreamSettings.from_config(train).size, trained_on.channels
    else:
        size, channels = trained_on.shape[1], trained_on.shape[-1]
    model = build_model(
        train["model"],
        num_classes=num_classes,
        in_channels=channels,
        image_size=size,
        **train["model_options"],
    )
    model.load_state_dict(model_state)
    model = model.to(dev).eval()
    dummy = np.zeros(len(trained_on), dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if streaming:
        tr, te = make_stream_sources(
            trained_on, dummy, train=train, device=dev, test_rows=images, test_labels=labels
        )
    else:
        tr, te = make_sources(
            trained_on, dummy, train=train, device=dev, test_images=images, test_labels=labels
        )
    try:
        out = []
        for part in torch.arange(len(labels), device=dev).split(train["eval_batch_size"]):
            x, y = te.batch(part, augment=False)
            logits = model(x).float()
            out.append(torch.nn.functional.cross_entropy(logits, y, reduction="none").cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)
    finally:
        for src in (tr, te):
            if isinstance(src, FileSource):
                src.close()
