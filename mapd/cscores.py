"""C-scores (consistency scores, Jiang et al. 2021) for the typical / atypical probes.

Three sources, recorded in the probe suite's metadata:
- ``file``: the published ``.npz`` (keys ``labels``, ``scores``, official training order);
  the labels must agree with the data set, or the file belongs to another data set/order.
- ``holdout``: Jiang et al.'s estimator: train models on random subsets of several sizes and
  score every example by its held-out correctness, averaged over the subset ratios.
- ``learning_speed``: a one-run proxy: the model's mean confidence in the label over all
  epochs (examples learned early and kept score high; Jiang et al. report it tracks C-scores).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mapd.data.base import ImageDataset
from mapd.errors import ConfigError, DataError
from mapd.io import atomic_path


def load_cscores_file(path: str | Path, dataset: ImageDataset) -> np.ndarray:
    """Published scores aligned with ``dataset`` rows: (N,) float64.

    The file is indexed by ``dataset.index`` (the official training order), or by its own
    ``index`` key when present (files written by :func:`save_cscores`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"C-score file not found: {path}")
    if dataset.paths is not None and _has_key(path, "filenames"):
        # the ImageNet file is keyed by image file name, not by position
        from mapd.data.imagenet import match_cscores_by_filename

        return match_cscores_by_filename(dataset, path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise DataError(f"C-score file {path} is not an .npz archive (labels, scores)")
        with loaded as f:
            if "scores" not in f or "labels" not in f:
                raise DataError(
                    f"C-score file {path} must have keys 'labels' and 'scores', "
                    f"has {sorted(f.files)}"
                )
            scores, labels = f["scores"].astype(np.float64), f["labels"].astype(np.int64)
            index = f["index"].astype(np.int64) if "index" in f else np.arange(len(scores))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"corrupt C-score file {path}: {e}") from e
    if not (len(scores) == len(labels) == len(index)):
        raise DataError(f"C-score file {path}: 'scores', 'labels' (and 'index') differ in length")
    pos = {int(i): k for k, i in enumerate(index)}
    missing = [int(i) for i in dataset.index if int(i) not in pos]
    if missing:
        raise DataError(
            f"C-score file {path} has {len(scores)} scores and lacks {len(missing)} examples of "
            f"{dataset.name}/{dataset.split} (e.g. index {missing[0]}): wrong data set or split?"
        )
    rows = np.array([pos[int(i)] for i in dataset.index], dtype=np.int64)
    mismatch = labels[rows] != dataset.labels
    if mismatch.any():
        first = int(np.flatnonzero(mismatch)[0])
        raise DataError(
            f"C-score file {path} disagrees with {dataset.name}/{dataset.split} on the label of "
            f"{int(mismatch.sum())} of {len(dataset)} examples (first: index "
            f"{dataset.index[first]}, file says {labels[rows][first]}, data says "
            f"{dataset.labels[first]}): not the same data set or order"
        )
    out = scores[rows]
    if not np.isfinite(out).all():
        raise DataError(f"C-score file {path} contains NaN or inf scores")
    return out


def _has_key(path: Path, key: str) -> bool:
    try:
        with np.load(path, allow_pickle=False) as f:
            return key in f.files
    except (ValueError, OSError, EOFError):
        return False


def save_cscores(
    path: str | Path, dataset: ImageDataset, scores: np.ndarray, *, method: str
) -> None:
    """Write scores in the published format (``labels``, ``scores``) + ``index``, ``method``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(dataset),):
        raise DataError(f"scores have shape {scores.shape}, expected ({len(dataset)},)")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f, labels=dataset.labels, scores=scores, index=dataset.index, method=np.array(method)
        )


def read_method(path: str | Path) -> str:
    with np.load(path, allow_pickle=False) as f:
        return str(f["method"]) if "method" in f else "file"


TrainFn = Callable[..., Any]


def learning_speed_scores(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    train: dict[str, Any],
    seed: int,
    workdir: str | Path | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """(N,) mean over epochs of p(label | x) = exp(-loss) from one training run."""
    from mapd.engine.run import train_trajectories

    with tempfile.TemporaryDirectory() as tmp:
        result = train_trajectories(
            images,
            labels,
            num_classes=num_classes,
            train={**train, "record": "eval"},
            seed=seed,
            workdir=workdir or tmp,
            device=device,
            log=log,
        )
    return np.exp(-result.loss.astype(np.float64)).mean(axis=1)


def holdout_scores(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    train: dict[str, Any],
    seed: int,
    ratios: list[float],
    runs_per_ratio: int,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """(N,) hold-out consistency estimate: mean over ratios of held-out correctness.

    For each subset ratio, ``runs_per_ratio`` models are trained on random subsets of that
    share of the data and every held-out example's correctness is recorded; an example's score
    for a ratio is its mean held-out correctness, and its C-score the mean over the ratios in
    which it was held out at least once (examples never held out get the overall mean).
    """
    from mapd.engine.run import train_trajectories
    from mapd.engine.trainer import pick_device

    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"holdout ratios must be in (0, 1), got {ratios}")
    n = len(labels)
    rng = np.random.default_rng(seed)
    per_ratio = np.full((len(ratios), n), np.nan)
    for ri, ratio in enumerate(ratios):
        hits, seen = np.zeros(n), np.zeros(n)
        for run in range(runs_per_ratio):
            member = np.zeros(n, dtype=bool)
            member[rng.choice(n, size=max(1, round(ratio * n)), replace=False)] = True
            held = np.flatnonzero(~member)
            if log:
                log(
                    f"C-score hold-out: ratio {ratio}, run {run + 1}/{runs_per_ratio}, "
                    f"{member.sum()} train / {len(held)} held out"
                )
            with tempfile.TemporaryDirectory() as tmp:
                res = train_trajectories(
                    images[member],
                    labels[member],
                    num_classes=num_classes,
                    train={**train, "record": "none"},
                    seed=seed * 1000 + ri * 100 + run,
                    workdir=tmp,
                    test_images=images[held],
                    test_labels=labels[held],
                    device=device,
                    log=log,
                )
                model = res.model
            correct = _predict_correct(
                model,
                images,
                labels,
                held,
                train=train,
                device=pick_device(device),
                ref_images=images[member],
            )
            hits[held] += correct
            seen[held] += 1
        per_ratio[ri] = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
    # mean over the ratios that held the example out (np.nanmean warns on all-NaN columns)
    held_out = ~np.isnan(per_ratio)
    scores = np.where(held_out, per_ratio, 0.0).sum(0) / np.maximum(held_out.sum(0), 1)
    scores[~held_out.any(0)] = np.nan
    never = np.isnan(scores)
    scores[never] = np.nanmean(scores) if (~never).any() else 0.5
    return scores


def _predict_correct(model, images, labels, rows, *, train, device, ref_images) -> np.ndarray:
    import torch

    from mapd.engine.run import make_sources

    # normalise with the statistics of the images the model was trained on
    _, src = make_sources(
        ref_images,
        labels[: len(ref_images)],
        train=train,
        device=device,
        test_images=images[rows],
        test_labels=labels[rows],
    )
    model.eval()
    out = []
    with torch.inference_mode():
        for idx in torch.arange(len(src), device=device).split(1024):
            x, y = src.batch(idx, augment=False)
            out.append((model(x).argmax(1) == y).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def compute_cscores(
    dataset: ImageDataset,
    *,
    settings: dict[str, Any],
    train: dict[str, Any],
    seed: int,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, str]:
    """Scores (N,) for ``dataset`` by the configured method, and a description of the source."""
    method = settings["method"]
    if method == "file":
        return load_cscores_file(settings["file"], dataset), f"file:{settings['file']}"
    if dataset.images is None:
        raise ConfigError(
            f"{dataset.name}: estimating C-scores needs an in-memory data set; use method 'file'"
        )
    est_train = {**train, "epochs": settings["epochs"]}
    if method == "learning_speed":
        return learning_speed_scores(
            dataset.images,
            dataset.labels,
            num_classes=dataset.num_classes,
            train=est_train,
            seed=seed,
            device=device,
            log=log,
        ), "learning_speed"
    if method == "holdout":
        return holdout_scores(
            dataset.images,
            dataset.labels,
            num_classes=dataset.num_classes,
            train=est_train,
            seed=seed,
            ratios=settings["ratios"],
            runs_per_ratio=settings["runs_per_ratio"],
            device=device,
            log=log,
        ), "holdout"
    raise ConfigError(f"unknown C-score method {method!r}")
