"""Fig. 9: how well MAP-D and JTT's error set find the minority-group training examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from mapd.io import atomic_path, save_table

METRICS = ("precision", "recall", "f1")
MAPD_COLOUR, JTT_COLOURS = "#d62728", "Blues"


def _order(det: pd.DataFrame) -> list[str]:
    """JTT at ascending T, then MAP-D (the second stage's plain ``jtt`` alias left out)."""
    jtt = det[det["detector"].str.startswith("jtt_T")].sort_values("T")["detector"].unique()
    return [*jtt, "mapd_minority"]


def write_fig9(
    det: pd.DataFrame, first: pd.DataFrame, dataset: str, out: str | Path
) -> dict[str, str]:
    """``det``: the data set's rows of ``detection.csv``; ``first``: the first seed's
    ``scores.parquet``. Left: precision / recall / F1 per detector (mean ± std over seeds);
    right: ROC curves (MAP-D's score; JTT's sets are points)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = _order(det)
    blues = sns.color_palette(JTT_COLOURS, len(names) + 1)[2:]
    colour = {n: (MAPD_COLOUR if n == "mapd_minority" else blues[i]) for i, n in enumerate(names)}
    label = {n: ("MAP-D" if n == "mapd_minority" else f"JTT T={n[5:]}") for n in names}
    rows = []
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        ax_bar, ax_roc = fig.subplots(1, 2, width_ratios=[1.4, 1])
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            g = det[det["detector"] == n]
            mean = [float(g[m].mean()) for m in METRICS]
            std = [float(g[m].std(ddof=1)) if len(g) > 1 else 0.0 for m in METRICS]
            x = np.arange(len(METRICS)) + (i - (len(names) - 1) / 2) * width
            ax_bar.bar(x, mean, width, yerr=std, color=colour[n], label=label[n], capsize=2)
            rows += [
                {"detector": n, "metric": m, "mean": a, "std": b, "seeds": len(g)}
                for m, a, b in zip(METRICS, mean, std, strict=True)
            ]
        ax_bar.set_xticks(np.arange(len(METRICS)), ["Precision", "Recall", "F1"])
        ax_bar.set(ylim=(0, 1), ylabel="minority-group detection", title="Detection (mean ± std)")
        ax_bar.legend(
            frameon=False,
            fontsize=7,
            ncol=len(names),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.08),
        )
        truth = first["minority"].to_numpy(bool)
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, first["score_mapd_minority"].to_numpy(float))
            ax_roc.plot(fpr, tpr, color=MAPD_COLOUR, lw=2, label="MAP-D p(minority)")
            for n in names[:-1]:
                flag = first[f"flag_{n}"].to_numpy(bool)
                ax_roc.plot(
                    (flag & ~truth).sum() / (~truth).sum(),
                    (flag & truth).sum() / truth.sum(),
                    "o",
                    color=colour[n],
                    label=label[n],
                )
        ax_roc.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1)
        ax_roc.set(
            title="ROC (first seed)", xlabel="False positive rate", ylabel="True positive rate"
        )
        ax_roc.legend(frameon=False, fontsize=7, loc="lower right")
        fig.suptitle(f"Fig. 9: minority-group examples of {dataset}, MAP-D vs JTT's error set")
        paths = {}
        for fmt in ("png", "svg"):
            path = out / f"fig9.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=100)
            paths[fmt] = str(path)
    save_table(out / "fig9.csv", pd.DataFrame(rows))
    paths["csv"] = str(out / "fig9.csv")
    return paths
