"""The prioritized-training steps (paper Sec. 3.4, Fig. 8).

- ``data``: the training pool of (data set, seed): the training split with its (injected or
  web) noisy labels, plus MAP-D's two probes as copies drawn from the clean validation rows
  (``size`` with their true labels, ``size`` with random other labels); the validation rows that
  are not probes are the holdout, listed in the folder's ``meta.json`` (a probe-suite folder).
- ``holdout``: RHO-Loss's irreducible-loss model, trained with cross-entropy on the holdout rows
  only, and its loss of every training row with that row's training label
  (``irreducible_loss.npy`` in its run folder).
- ``train``: one selecting run (:class:`mapd.methods.selection.Select`) on the pool.
- ``curves`` / ``table``: test accuracy per epoch, step and second of every run; per scorer the
  best and final accuracy (mean and std over seeds), the epochs to reach the reference's best
  accuracy and the speed-up, and the share of selected examples whose label is wrong.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mapd.config import dataset_settings, section
from mapd.data import ImageDataset, inject_label_noise, load_dataset
from mapd.engine.stream import FileRows
from mapd.errors import DataError
from mapd.experiments.prioritized.grid import Cell, cells, datasets
from mapd.io import save_table
from mapd.methods.selection import keep_of
from mapd.outputs import Run
from mapd.paths import Layout
from mapd.pipeline import fit_run, log
from mapd.probes import ProbeSuite, materialise, wrong_labels

CLEAN, NOISY = "random_sample", "random_labels"
CARVE_SEED = 20_230_501  # the carved validation rows: the same for every seed


def train_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The data set's train section with the experiment's overrides (batch_size = the large
    batch the selection draws)."""
    return section(
        "train", {**dataset_settings(config, dataset)["train"], **config["prioritized"]["train"]}
    )


def holdout_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    p = config["prioritized"]
    train = {**dataset_settings(config, dataset)["train"], **p["train"], **p["holdout"]["train"]}
    return section("train", {**train, "method": "ce"})


def load_role(config: dict[str, Any], dataset: str, role: str) -> ImageDataset | None:
    """The split playing ``role`` (train, val, test) under its loader's name; ``subset`` /
    ``test_subset`` keep the same fixed random rows as everywhere else. None: no val split."""
    s = dataset_settings(config, dataset)
    name = config["prioritized"]["splits"][role]
    if name is None:
        return None
    ds = load_dataset(s["loader"], name, **s["options"])
    size = s["subset"] if role == "train" else s["test_subset"] if role == "test" else None
    if size and size < len(ds):
        ds = ds.subset(np.sort(np.random.default_rng(12345).choice(len(ds), size, replace=False)))
    return ds


def pool_and_validation(config: dict[str, Any], dataset: str) -> tuple[ImageDataset, ImageDataset]:
    """The training pool and the clean validation rows (carved from the pool when the data set
    has no val split)."""
    pool = load_role(config, dataset, "train")
    val = load_role(config, dataset, "val")
    if val is None:
        size = config["prioritized"]["validation"]["size"]
        if size >= len(pool):
            raise DataError(
                f"prioritized ({dataset}): validation/size {size} leaves no training rows of "
                f"{len(pool)}"
            )
        carved = np.zeros(len(pool), dtype=bool)
        carved[np.random.default_rng(CARVE_SEED).choice(len(pool), size, replace=False)] = True
        pool, val = pool.subset(np.flatnonzero(~carved)), pool.subset(np.flatnonzero(carved))
    return pool, val


def _images(ds: ImageDataset, positions: np.ndarray, train: dict[str, Any]) -> np.ndarray:
    if ds.images is not None:
        return ds.images[positions]
    return materialise(
        ds, positions, size=train["image_size"], resize=train["resize"], workers=train["workers"]
    )


def data(config: dict[str, Any], dataset: str, seed: int, out: str | Path) -> ProbeSuite:
    """The training pool of a (data set, seed) with its probes and its holdout rows."""
    p = config["prioritized"]
    pool, val = pool_and_validation(config, dataset)
    size = p["probes"]["size"]
    if len(val) < 2 * size + pool.num_classes:
        raise DataError(
            f"prioritized ({dataset}): {len(val)} validation rows cannot give 2 x {size} probes "
            "and a holdout set"
        )
    labels = pool.labels.copy()
    for i, source in enumerate(p["noise"]):
        labels, _ = inject_label_noise(
            labels, rate=source["rate"], num_classes=pool.num_classes, kind=source["kind"],
            seed=seed * 1000 + i,
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(val))
    clean, noisy, held = order[:size], order[size : 2 * size], np.sort(order[2 * size :])
    probe_pos = np.concatenate([clean, noisy])
    probe_labels = val.labels[probe_pos].copy()
    probe_labels[size:] = wrong_labels(probe_labels[size:], val.num_classes, rng)
    n = len(pool)
    table = pd.DataFrame(
        {
            "row": np.arange(n + 2 * size),
            "orig_index": np.concatenate([pool.index, np.full(2 * size, -1)]),
            "category": [""] * n + [CLEAN] * size + [NOISY] * size,
            "role": ["data"] * n + ["probe_train"] * (2 * size),
            "label": np.concatenate([labels, probe_labels]),
            "orig_label": np.concatenate([pool.labels, val.labels[probe_pos]]),
            "probe_row": np.concatenate([np.full(n, -1), np.arange(2 * size)]),
        }
    )
    train = train_settings(config, dataset)
    suite = ProbeSuite(
        table=table,
        probe_images=_images(val, probe_pos, train),
        meta={
            "dataset": dataset,
            "seed": seed,
            "categories": [CLEAN, NOISY],
            "classes": list(pool.classes),
            "noise": {"sources": p["noise"], "changed": int((labels != pool.labels).sum())},
            # where the probes and the holdout rows come from: the val split, or rows carved
            # from the training split (stable indices of that split)
            "validation": {
                "split": val.split,
                "carved": p["splits"]["val"] is None,
                "probe_index": val.index[probe_pos].tolist(),
                "holdout_index": val.index[held].tolist(),
            },
        },
    )
    suite.save(out)
    log(
        f"{dataset} seed {seed}: {n} training rows ({suite.meta['noise']['changed']} labels "
        f"changed), 2 x {size} probes and {len(held)} holdout rows from {val.split} -> {out}"
    )
    return suite


def _rows(config: dict[str, Any], dataset: str, suite: ProbeSuite) -> np.ndarray | FileRows:
    """The pool's inputs: in memory, or streamed from files with the probes in memory."""
    pool, _ = pool_and_validation(config, dataset)
    return suite.stream_rows(pool) if pool.images is None else suite.images(pool)


def holdout_rows(config: dict[str, Any], dataset: str, suite: ProbeSuite) -> ImageDataset:
    """The holdout rows (the validation rows that are not probes) as a data set."""
    _, val = pool_and_validation(config, dataset)
    want = np.asarray(suite.meta["validation"]["holdout_index"], dtype=np.int64)
    pos = pd.Series(np.arange(len(val)), index=val.index).loc[want].to_numpy()
    return val.subset(pos)


def holdout(
    config: dict[str, Any], dataset: str, seed: int, data_dir: str | Path, out: str | Path,
    partial: str | Path,
) -> np.ndarray:  # fmt: skip
    """RHO-Loss's irreducible-loss model: trained on the holdout rows only; its loss of every
    training row (with the training label) is written as ``irreducible_loss.npy``."""
    from mapd.engine.method import Method
    from mapd.engine.run import predict_loss

    suite = ProbeSuite.load(data_dir)
    held = holdout_rows(config, dataset, suite)
    train = holdout_settings(config, dataset)
    images = held.images if held.images is not None else FileRows.from_dataset(held)
    scratch = Path(partial) / "model"
    fit_run(
        images, held.labels, config=config, name=dataset, seed=seed, method=Method(),
        out=scratch, partial=Path(partial) / "train", test=load_role(config, dataset, "test"),
        num_classes=len(suite.classes), train=train,
        extra_metrics={"holdout_rows": len(held)},
    )  # fmt: skip
    run = Run.load(scratch)
    state = torch.load(scratch / "model.pt", map_location="cpu", weights_only=True)
    loss = predict_loss(
        state, images, _rows(config, dataset, suite), suite.labels,
        num_classes=len(suite.classes), train=train, device=config["device"],
    )  # fmt: skip
    Run.save(
        out, loss=run.loss, correct=run.correct, metrics=run.metrics,
        model_state=state, arrays={"irreducible_loss": loss},
    )  # fmt: skip
    shutil.rmtree(partial, ignore_errors=True)
    log(
        f"{dataset} seed {seed}: irreducible-loss model on {len(held)} holdout rows, test "
        f"accuracy {run.metrics['final_test_acc']}; its loss of {len(loss)} training rows -> {out}"
    )
    return loss


def train(
    config: dict[str, Any],
    cell: Cell,
    data_dir: str | Path,
    out: str | Path,
    partial: str | Path,
    holdout_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One selecting run on the pool with the cell's scorer."""
    from mapd.methods import build_method

    s = dataset_settings(config, cell.dataset)
    suite = ProbeSuite.load(data_dir)
    settings = {**s["methods"]["select"], "score": cell.score, "balanced": cell.balanced}
    settings["k"] = s["assign"]["k"]
    method = build_method("select", settings)
    method.num_classes = len(suite.classes)
    if cell.score == "mapd":
        rows = suite.rows(role="probe_train")
        method.set_probes(rows, suite.table["category"].to_numpy()[rows] == NOISY)
    if cell.score == "rho_loss":
        if holdout_dir is None:
            raise DataError("rho_loss needs the irreducible-loss model's output (--holdout)")
        method.set_irreducible(Run.load(holdout_dir).array("irreducible_loss", rows=len(suite)))
    return fit_run(
        _rows(config, cell.dataset, suite), suite.labels, config=config, name=cell.dataset,
        seed=cell.seed, method=method, out=out, partial=partial,
        test=load_role(config, cell.dataset, "test"), num_classes=len(suite.classes),
        train=train_settings(config, cell.dataset), extra_metrics={"prio_cell": cell.__dict__},
    )  # fmt: skip


# --- tables ---------------------------------------------------------------------------------------
def curves(config: dict[str, Any], out: str | Path) -> pd.DataFrame:
    """Test accuracy after every epoch of every run, with the gradient steps and the seconds of
    training so far, and the share of the epoch's selections whose label is wrong."""
    lay = Layout.of(config)
    rows = []
    for c in cells(config):
        run = Run.load(lay.prio("run", c.dataset, c.seed, c.scorer))
        suite = ProbeSuite.load(lay.prio("data", c.dataset, c.seed))
        t = suite.table
        wrong = (t["label"] != t["orig_label"]).to_numpy()
        chosen = run.array("selected_count")
        n = len(t)
        batch = train_settings(config, c.dataset)["batch_size"]
        keep = run.metrics["method"]["settings"]["keep"]
        last = keep_of(n % batch, keep=keep, large=batch) if n % batch else 0
        per_epoch = (n // batch) * keep + last
        steps_per_epoch = -(-n // batch)
        seconds = 0.0
        for e in run.epoch_rows:
            seconds += e["train_s"]
            rows.append(
                {
                    **c.__dict__,
                    "epoch": e["epoch"],
                    "step": e["epoch"] * steps_per_epoch,
                    "examples": e["epoch"] * per_epoch,
                    "train_s": seconds,
                    "test_acc": e["test_acc"],
                }
            )
        rows[-1]["wrong_label_share_selected"] = float(chosen[wrong].sum() / max(chosen.sum(), 1))
        rows[-1]["wrong_label_share_pool"] = float(wrong.mean())
    df = pd.DataFrame(rows)
    save_table(out, df)
    log(f"prioritized curves: {len(df)} epochs of {len(cells(config))} runs -> {out}")
    return df


def epochs_to_reach(acc: np.ndarray, target: float) -> float:
    """1-based epoch at which a mean accuracy curve first reaches ``target`` (inf: never)."""
    hit = np.flatnonzero(np.asarray(acc) >= target - 1e-12)
    return float(hit[0] + 1) if len(hit) else float("inf")


def table(config: dict[str, Any], curves_path: str | Path, out: str | Path) -> pd.DataFrame:
    """Per data set and scorer: best / final accuracy (mean, std over seeds), epochs to reach
    the reference scorer's best mean accuracy, the speed-up, and wrong labels among the
    selected."""
    from mapd.io import load_table
    from mapd.outputs import seed_summary

    df = load_table(curves_path)
    ref = config["prioritized"]["reference"]
    rows = []
    for d in datasets(config):
        sub = df[df["dataset"] == d]
        mean = {
            sc: g.groupby("epoch")["test_acc"].mean().sort_index().to_numpy()
            for sc, g in sub.groupby("scorer")
        }
        target = float(mean[ref].max())
        ref_epochs = epochs_to_reach(mean[ref], target)
        for sc in config["prioritized"]["scorers"]:
            g = sub[sub["scorer"] == sc]
            per_seed = g.groupby("seed")["test_acc"]
            best = seed_summary(per_seed.max().to_numpy())
            final = seed_summary(per_seed.last().to_numpy())
            reach = epochs_to_reach(mean[sc], target)
            last = g.sort_values("epoch").groupby("seed").last()
            rows.append(
                {
                    "dataset": d, "scorer": sc, "seeds": int(g["seed"].nunique()),
                    "best_acc": best["mean"], "best_acc_std": best["std"],
                    "final_acc": final["mean"], "final_acc_std": final["std"],
                    "reference": ref, "target_acc": target, "epochs_to_target": reach,
                    "speedup": ref_epochs / reach if np.isfinite(reach) else 0.0,
                    "wrong_label_share_selected": float(last["wrong_label_share_selected"].mean()),
                    "wrong_label_share_pool": float(last["wrong_label_share_pool"].mean()),
                    "train_s": float(last["train_s"].mean()),
                }
            )  # fmt: skip
    out_df = pd.DataFrame(rows)
    save_table(out, out_df)
    log(f"prioritized table: {len(out_df)} rows -> {out}")
    return out_df


def figures(
    config: dict[str, Any], dataset: str, curves_path: str | Path, table_path: str | Path,
    out: str | Path,
) -> None:  # fmt: skip
    """Fig. 8 of one data set (test accuracy per epoch and per step, mean +- std over seeds)."""
    from mapd.experiments.prioritized.figures import write_fig8
    from mapd.io import load_table

    write_fig8(load_table(curves_path), load_table(table_path), dataset, config, out)
