"""ROC and precision-recall curves of every detector, one column per noise source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from mapd.io import atomic_path, save_table

_PALETTE = sns.color_palette("tab20", 20).as_hex()


def _color(i: int) -> str:
    return _PALETTE[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]


def write_curves(
    per_source: dict[str, pd.DataFrame], names: list[str], dataset: str, out: str | Path
) -> dict[str, Any]:
    """``per_source``: source id -> a cell's ``scores.parquet`` (``is_noisy``, ``score_<n>``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(5 * len(per_source) + 2, 9), layout="constrained")
        axes = np.atleast_2d(fig.subplots(2, len(per_source), squeeze=False))
        for j, (src, table) in enumerate(per_source.items()):
            truth = table["is_noisy"].to_numpy(bool)
            ax_roc, ax_pr = axes[0, j], axes[1, j]
            for i, name in enumerate(names):
                score = table[f"score_{name}"].to_numpy(float)
                if truth.all() or not truth.any():
                    continue
                fpr, tpr, _ = roc_curve(truth, score)
                prec, rec, _ = precision_recall_curve(truth, score)
                kw = {"color": _color(i), "lw": 2.2 if name.startswith("mapd") else 1.2}
                ax_roc.plot(fpr, tpr, label=name, **kw)
                ax_pr.plot(rec, prec, label=name, **kw)
                rows += [
                    {"source": src, "score": name, "curve": "roc", "x": x, "y": y}
                    for x, y in zip(
                        fpr[:: max(1, len(fpr) // 200)],
                        tpr[:: max(1, len(fpr) // 200)],
                        strict=True,
                    )
                ]
            ax_roc.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1)
            ax_roc.set(
                title=f"{src}: ROC", xlabel="False positive rate", ylabel="True positive rate"
            )
            ax_pr.axhline(truth.mean(), color="#999999", ls=":", lw=1)
            ax_pr.set(title=f"{src}: precision-recall", xlabel="Recall", ylabel="Precision")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        fig.suptitle(f"Finding the mislabeled examples of {dataset} (first seed)")
        paths = {}
        for fmt in ("png", "svg"):
            path = out / f"detection.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=100)
            paths[fmt] = str(path)
    save_table(out / "detection.csv", pd.DataFrame(rows))
    paths["csv"] = str(out / "detection.csv")
    return paths
