"""What every experiment family's steps share: progress lines, the configured data splits, the
data summary, and training one run into a run folder.

Steps read the validated config, write their outputs atomically and log to stderr. Settings come
only from the config; paths only from the arguments (which come from :mod:`mapd.paths`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mapd.config import dataset_settings, fingerprint
from mapd.data import ImageDataset, get_spec, load_dataset
from mapd.engine.method import Method
from mapd.engine.run import train_trajectories
from mapd.engine.stream import FileRows
from mapd.errors import MissingSplit
from mapd.io import save_json
from mapd.outputs import Run


def log(msg: str) -> None:
    print(f"[mapd {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_split(config: dict[str, Any], name: str, split: str) -> ImageDataset:
    """The configured data set's split; ``subset`` keeps a fixed random subset of the training
    rows, ``test_subset`` of the others (the same for every seed: seeds vary probes and
    training, not the data)."""
    s = dataset_settings(config, name)
    ds = load_dataset(s["loader"], split, **s["options"])
    if split == "train" and s["labels"]:
        ds = with_file_labels(ds, s["labels"])
    size = s["subset"] if split == "train" else s["test_subset"]
    if size and size < len(ds):
        rows = np.sort(np.random.default_rng(12345).choice(len(ds), size=size, replace=False))
        ds = ds.subset(rows)
        ds.info["subset"] = int(size)
    return ds


def with_file_labels(ds: ImageDataset, spec: dict[str, Any]) -> ImageDataset:
    """The training split with the labels of a file (``datasets/<name>/labels``); the data
    set's own labels are kept as the attribute ``orig_label``, the truth they are measured
    against (a file's ``clean_label`` must equal them)."""
    from mapd.data.labels_file import read_labels

    read = read_labels(
        spec["path"],
        n=len(ds),
        num_classes=ds.num_classes,
        key=spec.get("key"),
        column=spec.get("column"),
        dataset_labels=ds.labels,
    )
    out = ds.subset(np.arange(len(ds)))
    out.attrs["orig_label"] = ds.labels.copy()
    out.labels = read.labels.copy()
    out.info["labels"] = read.source
    out.info["labels_changed"] = int((read.labels != ds.labels).sum())
    return out


def optional_split(config: dict[str, Any], name: str, split: str) -> ImageDataset | None:
    """The split, or None when this copy of the data set has none (an image folder without val/)."""
    try:
        return load_split(config, name, split)
    except MissingSplit as e:
        log(f"{name}: no {split} split ({e})")
        return None


def eval_split(config: dict[str, Any], name: str) -> ImageDataset | None:
    """The split test accuracy is measured on: test, or val where a data set publishes no test
    labels (ImageNet); None when this copy has neither."""
    splits = get_spec(dataset_settings(config, name)["loader"]).splits
    for split in ("test", "val"):
        if split in splits and (ds := optional_split(config, name, split)) is not None:
            return ds
    return None


def data_summary(config: dict[str, Any], name: str, out: str | Path) -> dict[str, Any]:
    """Load every split of the data set, validate it, and write counts per class/group/split."""
    s = dataset_settings(config, name)
    spec = get_spec(s["loader"])
    summary: dict[str, Any] = {
        "dataset": name,
        "loader": s["loader"],
        "description": spec.description,
        "source": spec.source,
        "splits": {},
        "warnings": [],
    }
    for split in spec.splits:
        ds = (
            optional_split(config, name, split)
            if split != "train"
            else load_split(config, name, split)
        )
        if ds is None:
            continue
        if ds.split != split and ds.split in spec.splits:
            # a role name of another split (Clothing1M: train = dirty_train): summarised there
            summary["splits"][split] = {"same_as": ds.split}
            continue
        summary["splits"][split] = ds.summary()
        log(f"{name}/{split}: {len(ds)} examples, {ds.num_classes} classes")
        for warning in ds.info.get("warnings", []):
            summary["warnings"].append(f"{split}: {warning}")
            log(f"warning: {name}/{split}: {warning}")
    save_json(out, summary)
    return summary


def group_accuracy(correct: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Average and worst-group accuracy (the spurious-correlation metrics of JTT and MAP-D)."""
    correct, groups = np.asarray(correct, dtype=bool), np.asarray(groups)
    per = {str(g): float(correct[groups == g].mean()) for g in np.unique(groups)}
    counts = {str(g): int((groups == g).sum()) for g in np.unique(groups)}
    return {
        "average": float(correct.mean()),
        "worst_group": min(per.values()),
        "per_group": per,
        "counts": counts,
    }


def fit_run(
    images: np.ndarray | FileRows,
    labels: np.ndarray,
    *,
    config: dict[str, Any],
    name: str,
    seed: int,
    method: Method,
    out: str | Path,
    partial: str | Path,
    test: ImageDataset | None = None,
    num_classes: int,
    train: dict[str, Any] | None = None,
    fixed_rows: np.ndarray | None = None,
    eval_rows: np.ndarray | None = None,
    extra_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train data set ``name``'s configured model on ``images`` / ``labels`` with ``method`` and
    write the run folder ``out`` (:class:`mapd.outputs.Run`).

    In-progress state lives in ``partial`` and is resumed when the step runs again with the same
    settings; it is removed once ``out`` is complete. ``train`` replaces the data set's train
    section (an experiment family's own settings); ``fixed_rows`` / ``eval_rows`` go to
    :func:`mapd.engine.run.train_trajectories`.
    """
    s = dataset_settings(config, name)
    if train is not None:
        s = {**s, "train": train}
    test_images: np.ndarray | FileRows | None = None
    if test is not None:
        test_images = test.images if test.images is not None else FileRows.from_dataset(test)
    how = "streamed from files" if isinstance(images, FileRows) else "in memory"
    log(
        f"training {s['train']['model']} ({method.name}) on {name} seed {seed}: "
        f"{len(images)} rows ({how}), {s['train']['epochs']} epochs"
    )
    t0 = time.perf_counter()
    result = train_trajectories(
        images,
        labels,
        num_classes=num_classes,
        train=s["train"],
        seed=seed,
        workdir=partial,
        test_images=test_images,
        test_labels=None if test is None else test.labels,
        device=config["device"],
        method=method,
        log=log,
        fixed_rows=fixed_rows,
        eval_rows=eval_rows,
    )
    if test is not None and result.test_correct is not None and "group" in test.attrs:
        result.metrics["test_groups"] = group_accuracy(result.test_correct, test.attrs["group"])
        g = result.metrics["test_groups"]
        log(f"{name}: test accuracy {g['average']:.4f}, worst group {g['worst_group']:.4f}")
    metrics = {
        **result.metrics,
        "dataset": name,
        "seed": seed,
        "method": method.signature(),
        "wall_s": time.perf_counter() - t0,
        "settings_fingerprint": fingerprint(s["train"]),
        **(extra_metrics or {}),
    }
    from mapd.engine.distributed import is_writer

    if not is_writer():  # another rank of a data-parallel job: rank 0 writes the run
        return metrics
    Run.save(
        out,
        loss=result.loss,
        correct=result.correct,
        metrics=metrics,
        model_state=result.model.state_dict(),
        arrays=result.arrays,
        margin=result.margin,
        pred=result.pred,
    )
    shutil.rmtree(partial, ignore_errors=True)
    with contextlib.suppress(OSError):  # the now empty folders above it
        os.removedirs(Path(partial).parent)
    log(f"trained {name} seed {seed}: final test accuracy {metrics['final_test_acc']}")
    return metrics
