"""The detection experiment's steps: the noisy training set of a cell, the main run, AUM's
threshold run, confident learning's K folds, every detector's scores against the true noisy
labels, the table, and the figures.

Every detector scores the same training examples from the same runs:

- the main run (cross-entropy, an eval pass records loss, correctness and margin after every
  epoch, and the softmax at EL2N's early epoch) gives MAP-D's curves and the probes' curves,
  the loss / forgetting / data-map / EL2N / Beta-mixture statistics and AUM's margins;
- AUM's threshold run (one extra training) gives N / (C + 1) examples a fake class C; the
  99th percentile of their AUM is AUM's cut-off;
- confident learning trains K models on K - 1 folds of the data each and predicts the held-out
  fold (K extra trainings): cleanlab's scores and issues from those out-of-sample probabilities.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.config import dataset_settings, section
from mapd.data import load_dataset, split_size
from mapd.engine.run import predict_proba, train_trajectories
from mapd.experiments.detection.grid import (
    VARIANT_PROBES,
    Cell,
    cells,
    early_epoch,
    sources,
)
from mapd.experiments.noisy_data import noisy_suite
from mapd.io import atomic_dir, load_json, load_npy, save_json, save_npy, save_table
from mapd.methods import build_method
from mapd.outputs import Run
from mapd.paths import Layout
from mapd.pipeline import eval_split, fit_run, load_split, log
from mapd.probes import ProbeSuite
from mapd.scores import SCORES, Inputs, compute_score, flag_issues, probe_references
from mapd.scores.dynamics import mapd_probability
from mapd.scores.metrics import detection_metrics


def extra_trainings(config: dict[str, Any], name: str) -> float:
    """Training runs a detector needs beyond the main run (the table's cost column)."""
    if name == "confident_learning":
        k = config["detection"]["folds"]
        return k * (k - 1) / k  # K trainings on (K - 1) / K of the data each
    return 1.0 if name == "aum" else 0.0


def train_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The data set's train section with the experiment's overrides: an eval pass records the
    curves after every epoch; the softmax of EL2N's early epoch is kept."""
    train = {**dataset_settings(config, dataset)["train"], **config["detection"]["train"]}
    train["record"] = "eval"
    train["record_probs"] = [early_epoch(config, dataset, train["epochs"])]
    return section("train", train)


def _full_size(config: dict[str, Any], dataset: str) -> int:
    s = dataset_settings(config, dataset)
    n = split_size(s["loader"], "train", **s["options"])
    return n if n is not None else len(load_dataset(s["loader"], "train", **s["options"]))


def suite(
    config: dict[str, Any], cell: Cell, cscores_path: str | Path | None, out: str | Path
) -> None:
    from mapd.cscores import load_cscores_file

    d = config["detection"]
    s = dataset_settings(config, cell.dataset)
    ds = load_split(config, cell.dataset, "train")
    cats = d["probes"]["categories"]
    scores = None
    if {"typical", "atypical"} & set(cats):
        if cscores_path is None:
            raise ValueError("typical/atypical probes need the C-scores (--cscores)")
        scores = load_cscores_file(cscores_path, ds)
    source = {**sources(config)[cell.source], "n": _full_size(config, cell.dataset)}
    built = noisy_suite(
        ds,
        source,
        seed=cell.seed,
        categories=cats,
        size=d["probes"]["size"],
        noisy_labels_draw="other",
        train=train_settings(config, cell.dataset),
        cscores=scores,
        probe_settings=s["probes"],
    )
    built.save(out)
    log(
        f"{cell.dataset} {cell.source} seed {cell.seed}: {built.meta['noise']['changed']} of "
        f"{len(ds)} labels wrong, {len(built.table) - len(ds)} probe rows -> {out}"
    )


def _images(config: dict[str, Any], cell: Cell, suite_dir: str | Path):
    suite_ = ProbeSuite.load(suite_dir)
    ds = load_split(config, cell.dataset, "train")
    return suite_, ds, suite_.images(ds)


def main_run(
    config: dict[str, Any], cell: Cell, suite_dir: str | Path, out: str | Path, partial: str | Path
) -> dict[str, Any]:
    suite_, ds, images = _images(config, cell, suite_dir)
    return fit_run(
        images,
        suite_.labels,
        config=config,
        name=cell.dataset,
        seed=cell.seed,
        method=build_method("ce"),
        out=out,
        partial=partial,
        test=eval_split(config, cell.dataset),
        num_classes=ds.num_classes,
        train=train_settings(config, cell.dataset),
    )


def threshold_rows(suite_: ProbeSuite, num_classes: int, seed: int) -> np.ndarray:
    """AUM's threshold samples: N / (C + 1) of the data rows (Pleiss et al.), seeded."""
    data = suite_.rows(role="data")
    k = len(data) // (num_classes + 1)
    return np.sort(np.random.default_rng([seed, 0xA0]).choice(data, size=k, replace=False))


def aum_run(
    config: dict[str, Any], cell: Cell, suite_dir: str | Path, out: str | Path, partial: str | Path
) -> dict[str, Any]:
    """The same training with the threshold samples relabelled to a fake extra class."""
    suite_, ds, images = _images(config, cell, suite_dir)
    rows = threshold_rows(suite_, ds.num_classes, cell.seed)
    labels = suite_.labels.copy()
    labels[rows] = ds.num_classes
    return fit_run(
        images,
        labels,
        config=config,
        name=cell.dataset,
        seed=cell.seed,
        method=build_method("ce"),
        out=out,
        partial=partial,
        test=None,
        num_classes=ds.num_classes + 1,
        train=train_settings(config, cell.dataset),
        extra_metrics={"threshold_rows": rows.tolist()},
    )


def fold_rows(suite_: ProbeSuite, k: int, fold: int, seed: int) -> np.ndarray:
    """The data rows of fold ``fold`` of ``k`` (a seeded partition)."""
    data = suite_.rows(role="data")
    perm = np.random.default_rng([seed, 0xCF]).permutation(data)
    return np.sort(np.array_split(perm, k)[fold])


def fold_run(
    config: dict[str, Any],
    cell: Cell,
    fold: int,
    suite_dir: str | Path,
    out: str | Path,
    partial: str | Path,
) -> None:
    """Train on the other folds' data rows; write the held-out fold's predicted probabilities
    (``rows.npy``, ``probs.npy``) and the run's metrics."""
    suite_, ds, images = _images(config, cell, suite_dir)
    held = fold_rows(suite_, config["detection"]["folds"], fold, cell.seed)
    fit = np.setdiff1d(suite_.rows(role="data"), held)
    train = train_settings(config, cell.dataset)
    train = {**train, "record": "none", "record_probs": []}  # only the model is needed
    log(f"{cell.dataset} {cell.source} seed {cell.seed}: fold {fold}, {len(fit)} rows")
    res = train_trajectories(
        images[fit],
        suite_.labels[fit],
        num_classes=ds.num_classes,
        train=train,
        seed=cell.seed * 100 + fold,
        workdir=partial,
        device=config["device"],
        method=build_method("ce"),
        log=log,
    )
    probs = predict_proba(
        res.model.state_dict(),
        images,
        num_classes=ds.num_classes,
        train=train,
        device=config["device"],
        rows=held,
        reference_images=images[fit],
    )
    with atomic_dir(out) as tmp:
        save_npy(tmp / "rows.npy", held)
        save_npy(tmp / "probs.npy", probs.astype(np.float32))
        save_json(tmp / "metrics.json", res.metrics)
    shutil.rmtree(partial, ignore_errors=True)


def _oos_probs(fold_dirs: list[str | Path], n: int) -> np.ndarray:
    probs = None
    seen = np.zeros(n, dtype=bool)
    for d in fold_dirs:
        rows, p = load_npy(Path(d) / "rows.npy"), load_npy(Path(d) / "probs.npy")
        if probs is None:
            probs = np.full((n, p.shape[1]), np.nan)
        probs[rows] = p
        seen[rows] = True
    return probs, seen


def _mapd_variant(name: str, loss: np.ndarray, table: pd.DataFrame, k: int) -> np.ndarray:
    cats = VARIANT_PROBES[name]
    ref = np.flatnonzero(table["category"].isin(cats).to_numpy())
    suspect = table["category"].to_numpy()[ref] == "random_labels"
    return mapd_probability(loss=loss, probe_loss=loss[ref], probe_suspect=suspect, k=k)


def scores(
    config: dict[str, Any],
    cell: Cell,
    suite_dir: str | Path,
    run_dir: str | Path,
    aum_dir: str | Path | None,
    fold_dirs: list[str | Path],
    out: str | Path,
) -> dict[str, Any]:
    """Every configured detector's score and own decision for every training example, and
    their detection metrics against the true noisy flags (``scores.parquet``,
    ``metrics.json``)."""
    d = config["detection"]
    s = dataset_settings(config, cell.dataset)
    suite_ = ProbeSuite.load(suite_dir)
    run = Run.load(run_dir, rows=len(suite_))
    t = suite_.table
    data = suite_.rows(role="data")
    truth = (t["label"] != t["orig_label"]).to_numpy()[data]
    loss = run.finite_loss()
    margin = np.asarray(run.margin, dtype=np.float32)
    correct = np.asarray(run.correct)
    labels = t["label"].to_numpy()
    early = early_epoch(config, cell.dataset, run.n_epochs)
    base = Inputs(loss=loss[data], correct=correct[data], margin=margin[data], labels=labels[data])
    out_table = t.loc[data, ["orig_index", "label", "orig_label"]].reset_index(drop=True)
    out_table["is_noisy"] = truth
    results: dict[str, Any] = {}
    for name in d["scores"]:
        opts = dict(s["scores"].get(name, {}))
        flags = None
        if name in VARIANT_PROBES:
            score = _mapd_variant(name, loss, t, s["assign"]["k"])[data]
        elif "probe_suspect" in SCORES[name].needs:
            # the probes of the score's categories; without its own clean ones, the clean
            # random sample as in the paper's label-noise experiment
            probes = np.flatnonzero((t["role"] != "data").to_numpy())
            ref, suspect = probe_references(
                t["category"].to_numpy(), probes, {"clean": ["random_sample"], **opts}
            )
            inputs = Inputs(
                loss=loss[data],
                margin=margin[data],
                probe_loss=loss[ref],
                probe_margin=margin[ref] if "probe_margin" in SCORES[name].needs else None,
                probe_suspect=suspect,
            )
            opts = {**opts, "k": s["assign"]["k"]}
            score = compute_score(name, inputs, **opts)
            flags = flag_issues(name, inputs, **opts)
        else:
            inputs = base
            if name == "el2n":
                inputs = Inputs(labels=labels[data], probs=run.array(f"probs_e{early}")[data])
            elif name == "confident_learning":
                probs, seen = _oos_probs(fold_dirs, len(t))
                if not seen[data].all():
                    raise ValueError(f"{cell}: the folds do not cover every data row")
                inputs = Inputs(labels=labels[data], probs=probs[data])
            elif name == "aum" and aum_dir is not None:
                aum = Run.load(aum_dir, rows=len(t))
                rows = np.asarray(aum.metrics["threshold_rows"], dtype=np.int64)
                opts = {**opts, "threshold_margin": np.asarray(aum.margin)[rows]}
            score = compute_score(name, inputs, **opts)
            flags = flag_issues(name, inputs, **opts)
        out_table[f"score_{name}"] = score
        if flags is not None:
            out_table[f"flag_{name}"] = flags
        results[name] = {
            **detection_metrics(truth, score, flags=flags),
            "extra_trainings": extra_trainings(config, name),
        }
    metrics = {
        "cell": cell.__dict__,
        "n": len(data),
        "noisy": int(truth.sum()),
        "test_acc": run.final_test_acc,
        "scores": results,
    }
    with atomic_dir(out) as tmp:
        save_table(tmp / "scores.parquet", out_table)
        save_json(tmp / "metrics.json", metrics)
    best = max(results, key=lambda k: np.nan_to_num(results[k]["auroc"], nan=-1))
    auroc = results[best]["auroc"]
    log(f"{cell}: {truth.sum()} noisy of {len(data)}; best AUROC {best} {auroc:.3f}")
    return metrics


def table(config: dict[str, Any], out: str | Path) -> pd.DataFrame:
    """One row per cell and detector: AUROC, AP, precision / recall / F1 at the true noise rate
    and at the detector's own decision, and its extra training cost."""
    lay = Layout.of(config)
    rows = []
    for c in cells(config):
        m = load_json(Path(lay.det("scores", c.dataset, c.source, c.seed)) / "metrics.json")
        for name, r in m["scores"].items():
            rows.append({**c.__dict__, "score": name, "noisy": m["noisy"], "n": m["n"], **r})
    df = pd.DataFrame(rows)
    save_table(out, df)
    log(f"detection table: {len(df)} rows -> {out}")
    return df


def figures(config: dict[str, Any], dataset: str, out: str | Path) -> None:
    """ROC and precision-recall curves of every detector, one panel per noise source (first
    seed), with the table behind them as CSV."""
    from mapd.experiments.detection.figures import write_curves

    lay = Layout.of(config)
    seed = config["detection"]["seeds"][0] if config["detection"]["seeds"] else config["seeds"][0]
    per_source = {
        src: pd.read_parquet(Path(lay.det("scores", dataset, src, seed)) / "scores.parquet")
        for src in sources(config)
    }
    write_curves(per_source, config["detection"]["scores"], dataset, out)
    log(f"{dataset}: detection ROC / PR curves -> {out}")
