"""The minority-group experiment's steps (paper Sec. 3.5, Fig. 9; JTT's protocol):

1. ``erm``: one ERM run on the training split with the validation split's rows added but held
   out (method ``holdout``: never in a training batch); an eval pass records every row's loss
   and correctness after every epoch. Its test accuracy per group is ERM's baseline.
2. ``scores``: JTT's error set at each T (misclassified after epoch T) and MAP-D's
   p(minority) (k-NN on the validation curves labelled by their groups), against the true
   minority flags of the training examples.
3. ``retrain``: JTT's second stage per detector: the detected set upweighted (``upweight``),
   worst-group and average test accuracy.
4. ``tables`` and ``figures`` (Fig. 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.config import dataset_settings
from mapd.data import ImageDataset
from mapd.engine.stream import FileRows
from mapd.errors import DataError
from mapd.experiments.groups.grid import (
    check_data,
    check_weights,
    datasets,
    detectors,
    jtt_epoch,
    jtt_epochs,
    seeds,
    train_settings,
)
from mapd.io import atomic_dir, load_json, load_table, save_json, save_table
from mapd.methods import build_method
from mapd.methods.upweight import upsample_order
from mapd.outputs import Run
from mapd.paths import Layout
from mapd.pipeline import fit_run, load_split, log
from mapd.scores import Inputs, compute_score, flag_issues
from mapd.scores.metrics import detection_metrics


@dataclass
class Rows:
    """The ERM run's rows: the training split, then the validation split."""

    data: ImageDataset  # train + val rows (images or paths), labels, attrs group / minority
    n_train: int

    @property
    def is_val(self) -> np.ndarray:
        return np.arange(len(self.data.labels)) >= self.n_train

    def images(self) -> np.ndarray | FileRows:
        d = self.data
        return d.images if d.images is not None else FileRows.from_dataset(d)


def _concat(a: ImageDataset, b: ImageDataset) -> ImageDataset:
    if (a.images is None) != (b.images is None):
        raise DataError(f"{a.name}: train and val are not both in memory or both files")
    cat = np.concatenate
    return ImageDataset(
        name=a.name,
        split="train+val",
        labels=cat([a.labels, b.labels]),
        classes=a.classes,
        index=cat([a.index, b.index]),
        images=None if a.images is None else cat([a.images, b.images]),
        paths=None if a.paths is None else cat([a.paths, b.paths]),
        attrs={k: cat([np.asarray(a.attrs[k]), np.asarray(b.attrs[k])]) for k in GROUP_KEYS},
        info=dict(a.info),
    )


GROUP_KEYS = ("group", "minority")


def stage_one_rows(config: dict[str, Any], dataset: str) -> Rows:
    check_data(config, dataset)
    check_weights(config, dataset)
    train = load_split(config, dataset, "train")
    val = load_split(config, dataset, "val")
    return Rows(_concat(train, val), len(train))


def erm(
    config: dict[str, Any], dataset: str, seed: int, out: str | Path, partial: str | Path
) -> dict[str, Any]:
    """ERM on the training rows; the validation rows recorded, never trained on."""
    rows = stage_one_rows(config, dataset)
    val_rows = np.flatnonzero(rows.is_val)
    method = build_method("holdout").with_rows(len(rows.data.labels), val_rows)
    log(f"{dataset} seed {seed}: ERM on {rows.n_train} rows, {len(val_rows)} val rows recorded")
    return fit_run(
        rows.images(),
        rows.data.labels,
        config=config,
        name=dataset,
        seed=seed,
        method=method,
        out=out,
        partial=partial,
        test=load_split(config, dataset, "test"),
        num_classes=rows.data.num_classes,
        train=train_settings(config, dataset, record="eval"),
        extra_metrics={"n_train": rows.n_train, "n_val": len(val_rows)},
    )


def _counts(groups: np.ndarray, minority: np.ndarray) -> dict[str, dict[str, Any]]:
    return {
        str(g): {"n": int((groups == g).sum()), "minority": bool(minority[groups == g].all())}
        for g in np.unique(groups)
    }


def detect(
    config: dict[str, Any],
    dataset: str,
    loss: np.ndarray,
    correct: np.ndarray,
    is_val: np.ndarray,
    minority: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every detector's score and decision for the training rows (``~is_val``) of one run:
    ``jtt_T<t>`` for each T, ``jtt`` (the second stage's T) and ``mapd_minority``."""
    s = dataset_settings(config, dataset)
    tr = ~is_val
    scores, flags = {}, {}
    base = Inputs(correct=np.asarray(correct, dtype=bool)[tr])
    for t in jtt_epochs(config, dataset):
        scores[f"jtt_T{t}"] = compute_score("jtt", base, epoch=t)
        flags[f"jtt_T{t}"] = flag_issues("jtt", base, epoch=t)
    t = jtt_epoch(config, dataset)
    scores["jtt"], flags["jtt"] = scores[f"jtt_T{t}"], flags[f"jtt_T{t}"]
    inputs = Inputs(
        loss=np.asarray(loss, np.float64)[tr],
        probe_loss=np.asarray(loss, np.float64)[is_val],
        probe_suspect=np.asarray(minority, bool)[is_val],
    )
    opts = {**s["scores"]["mapd_minority"], "k": s["assign"]["k"]}
    scores["mapd_minority"] = compute_score("mapd_minority", inputs, **opts)
    flags["mapd_minority"] = flag_issues("mapd_minority", inputs, **opts)
    return scores, flags


def scores(
    config: dict[str, Any], dataset: str, seed: int, erm_dir: str | Path, out: str | Path
) -> dict[str, Any]:
    """Every detector's score and decision per training example (``scores.parquet``) and
    their detection metrics against the true minority flags (``metrics.json``)."""
    rows = stage_one_rows(config, dataset)
    run = Run.load(erm_dir, rows=len(rows.data.labels))
    is_val, attrs = rows.is_val, rows.data.attrs
    minority = np.asarray(attrs["minority"], dtype=bool)
    sc, fl = detect(config, dataset, run.finite_loss(), run.correct, is_val, minority)
    truth = minority[~is_val]
    table = pd.DataFrame(
        {
            "row": np.arange(rows.n_train),
            "orig_index": rows.data.index[~is_val],
            "label": rows.data.labels[~is_val],
            "group": np.asarray(attrs["group"])[~is_val],
            "minority": truth,
        }
    )
    results = {}
    for name in sc:
        table[f"score_{name}"], table[f"flag_{name}"] = sc[name], fl[name]
        results[name] = detection_metrics(truth, sc[name], flags=fl[name])
    groups = np.asarray(attrs["group"])
    metrics = {
        "dataset": dataset,
        "seed": seed,
        "jtt_epoch": jtt_epoch(config, dataset),
        "detectors": results,
        "counts": {
            "train": _counts(groups[~is_val], minority[~is_val]),
            "val": _counts(groups[is_val], minority[is_val]),
        },
        "erm_test": run.metrics.get("test_groups"),
    }
    with atomic_dir(out) as tmp:
        save_table(tmp / "scores.parquet", table)
        save_json(tmp / "metrics.json", metrics)
    m = results["mapd_minority"]
    j = results["jtt"]
    log(
        f"{dataset} seed {seed}: {truth.sum()} minority of {len(truth)}; MAP-D P/R "
        f"{m['precision']:.3f}/{m['recall']:.3f}, JTT P/R {j['precision']:.3f}/{j['recall']:.3f}"
    )
    return metrics


def retrain(
    config: dict[str, Any],
    dataset: str,
    seed: int,
    detector: str,
    scores_dir: str | Path,
    out: str | Path,
    partial: str | Path,
) -> dict[str, Any]:
    """JTT's second stage: train again with ``detector``'s set upweighted."""
    check_data(config, dataset)
    check_weights(config, dataset)
    up = dataset_settings(config, dataset)["methods"]["upweight"]
    train = load_split(config, dataset, "train")
    table = load_table(Path(scores_dir) / "scores.parquet")
    if len(table) != len(train):
        raise DataError(f"{scores_dir}: {len(table)} rows, the training split has {len(train)}")
    chosen = np.flatnonzero(table[f"flag_{detector}"].to_numpy(bool))
    method = build_method("upweight", up)
    if up["mode"] == "upsample":
        order = upsample_order(len(train), chosen, int(up["lambda_up"]))
        data = train.subset(order)
        method.with_rows(len(order), np.zeros(0, dtype=np.int64))
    else:
        data = train
        method.with_rows(len(train), chosen)
    log(
        f"{dataset} seed {seed}: {detector} set of {len(chosen)} upweighted x{up['lambda_up']} "
        f"({up['mode']}): {len(data)} training rows"
    )
    images = data.images if data.images is not None else FileRows.from_dataset(data)
    return fit_run(
        images,
        data.labels,
        config=config,
        name=dataset,
        seed=seed,
        method=method,
        out=out,
        partial=partial,
        test=load_split(config, dataset, "test"),
        num_classes=train.num_classes,
        train=train_settings(config, dataset, record="none"),
        extra_metrics={"detector": detector, "upweighted": len(chosen), "upweight": up},
    )


def tables(config: dict[str, Any], detection_out: str | Path, accuracy_out: str | Path) -> None:
    """``detection.csv``: one row per data set, seed and detector (P / R / F1 / AUROC);
    ``accuracy.csv``: one row per data set, seed and method (ERM, each second stage): average,
    worst-group and per-group test accuracy."""
    lay = Layout.of(config)
    det, acc = [], []
    for d in datasets(config):
        for s in seeds(config):
            m = load_json(Path(lay.groups("scores", d, s)) / "metrics.json")
            n_min = sum(c["n"] for c in m["counts"]["train"].values() if c["minority"])
            for name, r in m["detectors"].items():
                t = int(name.split("_T")[1]) if name.startswith("jtt_T") else None
                det.append(
                    {"dataset": d, "seed": s, "detector": name, "T": t, "minority": n_min, **r}
                )
            runs = {"erm": m["erm_test"]}
            for name in detectors(config):
                runs[name] = load_json(Path(lay.groups("retrain", d, s, name)) / "metrics.json")[
                    "test_groups"
                ]
            for name, g in runs.items():
                if g is None:
                    raise DataError(f"{d} seed {s}: {name} has no per-group test accuracy")
                per = {f"group{k}": v for k, v in g["per_group"].items()}
                acc.append(
                    {
                        "dataset": d,
                        "seed": s,
                        "method": name,
                        "average": g["average"],
                        "worst_group": g["worst_group"],
                        **per,
                    }
                )
    save_table(detection_out, pd.DataFrame(det))
    save_table(accuracy_out, pd.DataFrame(acc))
    log(f"groups tables: {len(det)} + {len(acc)} rows -> {detection_out}, {accuracy_out}")


def figures(config: dict[str, Any], dataset: str, out: str | Path) -> dict[str, str]:
    """Fig. 9: precision / recall / F1 of MAP-D and JTT at each T (mean over seeds), and the
    ROC curves of the first seed."""
    from mapd.experiments.groups.figures import write_fig9

    lay = Layout.of(config)
    det = load_table(lay.groups_table("detection"))
    first = load_table(Path(lay.groups("scores", dataset, seeds(config)[0])) / "scores.parquet")
    paths = write_fig9(det[det["dataset"] == dataset], first, dataset, out)
    log(f"{dataset}: Fig. 9 -> {out}")
    return paths
