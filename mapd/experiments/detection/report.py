"""The detection experiment's report section and headline metrics (DVC metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.experiments.detection.grid import datasets
from mapd.io import load_table
from mapd.outputs import seed_summary
from mapd.paths import Layout
from mapd.scores import SCORES, describe

# what the table reports per detector, in this order
COLUMNS = ("auroc", "ap", "f1_at_k", "precision", "recall", "f1")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (:func:`seed_summary`) per data set, source and detector."""
    rows = []
    for (d, src, name), g in table.groupby(["dataset", "source", "score"], sort=False):
        row: dict[str, Any] = {"dataset": d, "source": src, "score": name}
        for col in COLUMNS:
            values = g[col].to_numpy(float)
            if np.isnan(values).all():
                row[f"{col}_mean"], row[f"{col}_std"] = float("nan"), float("nan")
                continue
            s = seed_summary(values[~np.isnan(values)])
            row[f"{col}_mean"], row[f"{col}_std"] = s["mean"], s["std"]
        row["seeds"] = len(g)
        row["extra_trainings"] = float(g["extra_trainings"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Per data set, noise source and detector: AUROC and AP, mean and std over seeds."""
    s = summary(load_table(Layout.of(config).det_table()))
    out: dict[str, Any] = {}
    for _, r in s.iterrows():
        out.setdefault(r["dataset"], {}).setdefault(r["source"], {})[r["score"]] = {
            "auroc": {"mean": r["auroc_mean"], "std": r["auroc_std"]},
            "ap": {"mean": r["ap_mean"], "std": r["ap_std"]},
            "seeds": int(r["seeds"]),
        }
    return out


def _fmt(mean: float, std: float) -> str:
    return "–" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def sections(config: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    lay = Layout.of(config)
    s = summary(load_table(lay.det_table()))
    names = {n: describe(n) for n in config["detection"]["scores"] if n in SCORES}
    text = (
        "Every detector scores the same training examples from the same runs; a higher score "
        "means more likely mislabeled. AUROC and AP rank all examples; precision / recall / F1 "
        "at k flag the k highest scores, k = the true number of noisy labels; precision / "
        "recall / F1 without 'at k' use the detector's own decision where it has one (MAP-D: "
        "p >= 0.5, AUM: its threshold samples' 99th percentile, confident learning: cleanlab's "
        "find_label_issues, Beta mixture: posterior >= 0.5). Extra trainings: the training "
        "runs a detector needs beyond the one run every detector shares (MAP-D: none). "
        "mapd is this project's default MAP-D detector: a logistic regression fitted on the "
        "probes' loss and margin curves (random-label probes against the clean random-sample, "
        "typical and atypical ones). mapd_paper is the paper's detector: the share of "
        "random-label probes among the 20 nearest probe loss curves, against the clean "
        "random-sample probe (the paper's label-noise setting); mapd_audit4 / mapd_audit6 the "
        "same share against the audit's 4 / 6 categories."
    )
    parts = [{"heading": "Finding the mislabeled examples", "text": text}]
    desc = pd.DataFrame({"detector": list(names), "what it scores": list(names.values())})
    desc.attrs["caption"] = "The registered detectors"
    parts[0]["tables"] = [desc]
    for d in datasets(config):
        tables = []
        for src, g in s[s["dataset"] == d].groupby("source", sort=False):
            t = pd.DataFrame(
                {
                    "detector": g["score"],
                    **{
                        c: [_fmt(m, v) for m, v in zip(g[f"{c}_mean"], g[f"{c}_std"], strict=True)]
                        for c in COLUMNS
                    },
                    "extra trainings": g["extra_trainings"],
                }
            ).sort_values("auroc", ascending=False, key=lambda c: c.str.slice(0, 5))
            t.attrs["caption"] = (
                f"{d}, {src}: detection metrics, mean ± std over {int(g['seeds'].max())} seed(s)"
            )
            tables.append(t)
        images = [(lay.figure(d, "detection.png"), "ROC and precision-recall curves (first seed)")]
        parts.append({"heading": f"Mislabel detection: {d}", "images": images, "tables": tables})
    return parts
