"""The label-noise experiment's steps (paper Sec. 3.3): the noisy training set of a cell, one
training run per method, and the table of every run.

- ``suite``: the training set of (data set, level, seed): every training example with its
  label redrawn at the noise level (Arazo's injection by default), plus MAP-D's two probes as
  copies (clean random examples, random-label examples); a probe-suite folder.
- ``train``: one method on it; forward/backward first estimate the transition matrix from the
  ``ce`` run of the same cell (:func:`transition_from`).
- ``table``: best and last test accuracy of every run, and how well p(noisy) finds the noisy
  labels where a method estimates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mapd.config import dataset_settings, section
from mapd.engine.method import Method
from mapd.engine.run import predict_proba
from mapd.experiments.noise.grid import Cell, cells, uses_warmup
from mapd.experiments.noisy_data import noisy_suite
from mapd.io import save_table
from mapd.methods import build_method
from mapd.methods.correction import LossCorrection
from mapd.methods.dynamic import MAPD
from mapd.methods.losses import estimate_transition
from mapd.outputs import Run
from mapd.paths import Layout
from mapd.pipeline import eval_split, fit_run, load_split, log
from mapd.probes import ProbeSuite

CLEAN, NOISY = "random_sample", "random_labels"


def train_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The data set's train section with the experiment's overrides and its recording mode."""
    n = config["noise"]
    train = {**dataset_settings(config, dataset)["train"], **n["train"]}
    train["record"] = "online" if n["record"] == "authors" else "eval"
    return section("train", train)


def suite(config: dict[str, Any], dataset: str, level: int, seed: int, out: str | Path) -> None:
    """The noisy training set of a cell: Arazo's injection (by default) at ``level`` percent,
    plus MAP-D's clean and random-label probes as copies."""
    n = config["noise"]
    ds = load_split(config, dataset, "train")
    source = {**n["injection"], "rate": level / 100.0}
    built = noisy_suite(
        ds,
        source,
        seed=seed,
        categories=[CLEAN, NOISY],
        size=n["probes"]["size"],
        noisy_labels_draw=n["probes"]["noisy_labels"],
        train=train_settings(config, dataset),
    )
    built.save(out)
    data = built.rows(role="data")
    log(
        f"{dataset} noise {level}% seed {seed}: {built.meta['noise']['changed']} of {len(data)} "
        f"labels changed, {len(built.table) - len(data)} probe rows -> {out}"
    )


def cell_method(config: dict[str, Any], cell: Cell) -> Method:
    """The cell's method with its settings section, its warm-up and MAP-D's one k."""
    s = dataset_settings(config, cell.dataset)
    settings = dict(s["methods"][cell.method])
    if uses_warmup(cell.method):
        settings["warmup"] = cell.warmup
    if cell.method in ("mapd", "mapd_binary"):
        settings["k"] = s["assign"]["k"]
    return build_method(cell.method, settings)


def transition_from(
    config: dict[str, Any],
    cell: Cell,
    reference: str | Path,
    images: np.ndarray,
    rows: np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """Patrini's transition matrix from the reference (cross-entropy) run's model: its softmax
    on the noisy training examples ``rows``, anchored on each class's most confident ones."""
    state = torch.load(Path(reference) / "model.pt", map_location="cpu", weights_only=True)
    probs = predict_proba(
        state,
        images,
        num_classes=num_classes,
        train=train_settings(config, cell.dataset),
        device=config["device"],
        rows=rows,
    )
    quantile = dataset_settings(config, cell.dataset)["methods"][cell.method]["quantile"]
    return estimate_transition(probs, quantile=quantile)


def train(
    config: dict[str, Any],
    cell: Cell,
    suite_dir: str | Path,
    out: str | Path,
    partial: str | Path,
    reference: str | Path | None = None,
) -> dict[str, Any]:
    s = config["noise"]
    suite_ = ProbeSuite.load(suite_dir)
    ds = load_split(config, cell.dataset, "train")
    images = suite_.images(ds)
    method = cell_method(config, cell)
    probe_rows = np.flatnonzero(suite_.table["category"].to_numpy() != "")
    extra: dict[str, Any] = {"noise_cell": cell.__dict__}
    if isinstance(method, MAPD):
        categories = suite_.table["category"].to_numpy()[probe_rows]
        method.set_probes(probe_rows, categories == NOISY)
    if isinstance(method, LossCorrection):
        if reference is None:
            raise ValueError(f"{cell.method} needs the reference ce run (--reference)")
        transition = transition_from(
            config, cell, reference, images, suite_.rows(role="data"), ds.num_classes
        )
        method.set_transition(transition)
        extra["transition"] = transition.tolist()
    fixed = None
    if s["probes"]["fixed_inputs"] and len(probe_rows):
        fixed = np.zeros(len(suite_), dtype=bool)
        fixed[probe_rows] = True
    return fit_run(
        images,
        suite_.labels,
        config=config,
        name=cell.dataset,
        seed=cell.seed,
        method=method,
        out=out,
        partial=partial,
        test=eval_split(config, cell.dataset),
        num_classes=ds.num_classes,
        train=train_settings(config, cell.dataset),
        fixed_rows=fixed,
        eval_rows=probe_rows if s["record"] == "authors" and len(probe_rows) else None,
        extra_metrics=extra,
    )


def _auroc(is_noisy: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if is_noisy.all() or not is_noisy.any():
        return float("nan")
    return float(roc_auc_score(is_noisy, score))


def table(config: dict[str, Any], out: str | Path) -> pd.DataFrame:
    """One row per run: the cell, best and last test accuracy, and p(noisy)'s AUROC."""
    lay = Layout.of(config)
    rows = []
    suites: dict[tuple[str, int, int], ProbeSuite] = {}
    for c in cells(config):
        run = Run.load(lay.noise_run(c.dataset, c.level, c.method, c.warmup, c.seed))
        accs = [e["test_acc"] for e in run.epoch_rows if e["test_acc"] is not None]
        row: dict[str, Any] = {**c.__dict__, "epochs": run.n_epochs}
        row["best_acc"] = max(accs) if accs else float("nan")
        row["last_acc"] = accs[-1] if accs else float("nan")
        row["train_s"] = float(sum(e["seconds"] for e in run.epoch_rows))
        row["auroc_p_noisy"] = float("nan")
        if (run.path / "p_noisy.npy").is_file():
            key = (c.dataset, c.level, c.seed)
            if key not in suites:
                suites[key] = ProbeSuite.load(lay.noise_suite(*key))
            t = suites[key].table
            data = (t["role"] == "data").to_numpy()
            is_noisy = (t["label"] != t["orig_label"]).to_numpy()[data]
            row["auroc_p_noisy"] = _auroc(is_noisy, run.array("p_noisy")[data])
        rows.append(row)
    df = pd.DataFrame(rows)
    save_table(out, df)
    log(f"noise table: {len(df)} runs -> {out}")
    return df


def figures(config: dict[str, Any], dataset: str, table_path: str | Path, out: str | Path) -> None:
    """Figs. 6, 7 and 11 (those the grid makes) of one data set, from the table of runs."""
    from mapd.experiments.noise import figures as figs
    from mapd.experiments.noise.grid import figures_of, methods, own_warmup, warmups
    from mapd.io import load_table

    table = load_table(table_path)
    loader = dataset_settings(config, dataset)["loader"]
    own = {m: own_warmup(config, dataset, m) for m in methods(config)}
    made = figures_of(config)
    figs.write_fig6(table, dataset, loader, methods(config), own, out)
    if "fig7" in made:
        fig7 = [m for m in config["noise"]["fig7"]["methods"] if m in own]
        figs.write_fig7(table, dataset, fig7, {m: warmups(config, dataset, m) for m in fig7}, out)
    if "fig11" in made:
        figs.write_fig11(table, dataset, own, out)
    log(f"{dataset}: {', '.join(made)} -> {out}")
