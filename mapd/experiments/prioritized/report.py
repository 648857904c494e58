"""The prioritized-training experiment's report section and headline metrics (DVC metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from mapd.config import dataset_settings
from mapd.experiments.prioritized.figures import PAPER, PAPER_BY_SCORER, scorer_name
from mapd.experiments.prioritized.grid import datasets
from mapd.experiments.prioritized.steps import train_settings
from mapd.io import load_table
from mapd.paths import Layout

FIG8 = "Fig. 8: test accuracy vs epoch, gradient step and training time"


def _table(config: dict[str, Any]) -> pd.DataFrame:
    return load_table(Layout.of(config).prio_table())


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Per data set and scorer: best and final test accuracy (%, mean and std over seeds),
    epochs to the reference's best accuracy (null: never) and the speed-up."""
    out: dict[str, Any] = {}
    for d, g in _table(config).groupby("dataset"):
        out[str(d)] = {
            str(r["scorer"]): {
                "best": {"mean": 100 * r["best_acc"], "std": 100 * r["best_acc_std"]},
                "final": {"mean": 100 * r["final_acc"], "std": 100 * r["final_acc_std"]},
                "epochs_to_target": _finite(r["epochs_to_target"]),
                "speedup": float(r["speedup"]),
                "wrong_label_share_selected": float(r["wrong_label_share_selected"]),
                "seeds": int(r["seeds"]),
            }
            for _, r in g.iterrows()
        }
    return out


def settings_text(config: dict[str, Any], dataset: str) -> str:
    p = config["prioritized"]
    s = dataset_settings(config, dataset)
    sel = s["methods"]["select"]
    train = train_settings(config, dataset)
    noise = (
        " then ".join(f"{n['kind']} {round(100 * n['rate'])} %" for n in p["noise"])
        if p["noise"]
        else "the data set's own labels"
    )
    carved = f"{p['validation']['size']} clean rows carved from the training split"
    val = p["splits"]["val"] or carved
    k = s["assign"]["k"]
    curves = (
        "the completed epochs' losses plus the current loss of candidates and probes, the "
        f"probes' recomputed every {sel['probe_every']} step(s); the authors: every step"
        if sel["trajectory"] == "current"
        else "the completed epochs' losses only; p(clean) = 1/2 in the first epoch"
    )
    return " ".join(
        [
            f"Each step draws {train['batch_size']} examples, scores them with a training-mode",
            "forward that leaves BatchNorm's running statistics and the weights untouched, and",
            f"trains on the {sel['keep']} best (balanced: at least {sel['min_per_class']} of",
            f"every class). Noise in the training pool: {noise}. Validation rows ({val}):",
            f"MAP-D's probes ({p['probes']['size']} with their labels, {p['probes']['size']} with",
            "random other labels, added to the pool as copies) and RHO-Loss's holdout (the rest;",
            "its irreducible-loss model is trained there once per seed and nothing else sees",
            f"those rows). MAP-D's score = (p(clean) + 1 - p(y|x)) / 2 with a k = {k}",
            f"k-NN of the candidates' loss curves against the probes' ({curves}).",
            "Learning curves:",
            f"{train['record']} recording after each epoch. Speed-up = epochs the reference",
            f"({scorer_name(p['reference'])}) needs to reach its best mean accuracy / epochs a",
            "scorer needs to reach it (0 = never reached). 'loss' and 'correct_class' rank",
            "alike (both decrease with p(y|x)), so their runs coincide.",
            PAPER,
        ]
    )


def sections(config: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    lay = Layout.of(config)
    table = _table(config)
    parts: list[dict[str, Any]] = [{"heading": "Prioritized training (Fig. 8)"}]
    for d in datasets(config):
        t = table[table["dataset"] == d]
        show = pd.DataFrame(
            {
                "scorer": [scorer_name(s) for s in t["scorer"]],
                "best acc (%)": [
                    f"{100 * m:.1f} ± {100 * s:.1f}"
                    for m, s in zip(t["best_acc"], t["best_acc_std"], strict=True)
                ],
                "final acc (%)": [
                    f"{100 * m:.1f} ± {100 * s:.1f}"
                    for m, s in zip(t["final_acc"], t["final_acc_std"], strict=True)
                ],
                "epochs to target": [
                    "never" if not math.isfinite(e) else f"{e:.0f}" for e in t["epochs_to_target"]
                ],
                "speed-up": [f"{v:.2f}x" for v in t["speedup"]],
                "wrong labels among selected (%)": [
                    f"{100 * v:.1f}" for v in t["wrong_label_share_selected"]
                ],
                "training s": [f"{v:.0f}" for v in t["train_s"]],
                "paper (Clothing1M)": [PAPER_BY_SCORER.get(sc, "") for sc in t["scorer"]],
            }
        )
        pool = 100 * float(t["wrong_label_share_pool"].mean()) if len(t) else float("nan")
        target = 100 * float(t["target_acc"].iloc[0]) if len(t) else float("nan")
        show.attrs["caption"] = (
            f"{d}: mean ± std over seeds; target = the reference's best mean accuracy "
            f"({target:.1f} %); wrong labels in the pool: {pool:.1f} %"
        )
        parts.append(
            {
                "heading": f"Prioritized training: {d}",
                "text": settings_text(config, d),
                "images": [
                    (
                        lay.figure(d, "fig8.png"),
                        "Fig. 8: test accuracy vs epoch, gradient step and training time",
                    )
                ],
                "tables": [show],
            }
        )
    return parts
