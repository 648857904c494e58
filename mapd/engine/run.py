"""One call from images to trajectories: sources, model, trainer (used by the CLI and the API)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapd.config import fingerprint
from mapd.engine.augment import TensorSource, channel_stats
from mapd.engine.trainer import Method, Trainer, TrainResult, TrainSettings, pick_device
from mapd.models import build_model


def make_sources(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    train: dict[str, Any],
    device: torch.device,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> tuple[TensorSource, TensorSource | None]:
    """Device-resident training (augmented) and test (plain) sources, normalised alike."""
    mean, std = channel_stats(train_images) if train.get("normalize", True) else (None, None)
    cl = device.type == "cuda"
    tr = TensorSource(
        train_images, train_labels, device=device, crop_padding=train.get("crop_padding", 0),
        flip=train.get("flip", False), mean=mean, std=std, channels_last=cl,
    )
    te = None
    if test_images is not None:
        te = TensorSource(test_images, test_labels, device=device, mean=mean, std=std, channels_last=cl)
    return tr, te


def train_trajectories(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    train: dict[str, Any],
    seed: int,
    workdir: str | Path,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    device: str = "auto",
    method: Method | None = None,
    log: Callable[[str], None] | None = None,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train the configured model on uint8 (N, H, W, C) ``images`` and record trajectories.

    Returns (N, epochs) loss / correctness arrays whose rows follow ``images``. The run is
    checkpointed in ``workdir`` every epoch and resumed from there when called again with the
    same settings and data.
    """
    dev = pick_device(device)
    settings = TrainSettings.from_config(train)
    torch.manual_seed(seed)
    model = build_model(
        train["model"], num_classes=num_classes, in_channels=images.shape[-1],
        image_size=images.shape[1], **train.get("model_options", {}),
    )
    tr, te = make_sources(images, labels, train=train, device=dev, test_images=test_images, test_labels=test_labels)
    signature = fingerprint(
        {"train": train, "seed": seed, "n": len(images), "labels": fingerprint(np.asarray(labels).tolist()),
         "method": (method or Method()).name}
    )
    trainer = Trainer(model, tr, settings=settings, workdir=workdir, test=te, method=method, seed=seed,
                      signature=signature, log=log)
    return trainer.fit(stop_after_epoch=stop_after_epoch)
