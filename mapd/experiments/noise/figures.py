"""Figs. 6, 7 and 11 of the label-noise experiment, from the table of every run.

Fig. 6: test accuracy vs noise level per method (each at its own warm-up), mean ± std over seeds,
best over training and last epoch, the paper's numbers beside ours as open markers (CIFAR-10/100).
Fig. 7: MAP-D and M-DYR-H at each warm-up length. Fig. 11: MAP-D's probabilities vs its binary
(argmax) p(noisy). Each figure also writes the table behind it as CSV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mapd.experiments.noise.paper import paper_rows
from mapd.io import save_figure
from mapd.outputs import seed_summary

NAMES = {
    "ce": "CE",
    "mixup": "Mixup",
    "reed_soft": "Reed soft",
    "reed_hard": "Reed hard",
    "forward": "Forward (Patrini)",
    "backward": "Backward (Patrini)",
    "mdyr_h": "M-DYR-H (Arazo)",
    "mapd": "MAP-D",
    "mapd_binary": "MAP-D binary",
}
_PALETTE = sns.color_palette("tab10", 10).as_hex()
METRICS = (("best_acc", "best over training"), ("last_acc", "last epoch"))


def method_name(method: str) -> str:
    return NAMES.get(method, method)


def method_color(method: str) -> str:
    order = list(NAMES)
    return _PALETTE[order.index(method) % 10] if method in order else "#444444"


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds (:func:`seed_summary`) of best and last accuracy, in %, per data
    set, method, warm-up and level."""
    rows = []
    keys = ["dataset", "method", "warmup", "level"]
    for key, g in table.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        for col, _ in METRICS:
            s = seed_summary(100.0 * g[col].to_numpy(dtype=float))
            row[f"{col}_mean"], row[f"{col}_std"], row["seeds"] = s["mean"], s["std"], s["seeds"]
        if "auroc_p_noisy" in g and g["auroc_p_noisy"].notna().any():
            row["auroc_p_noisy_mean"] = float(np.nanmean(g["auroc_p_noisy"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _lines(
    summary: pd.DataFrame, series: list[tuple[str, int, str, str, str]], title: str
) -> Figure:
    """Two panels (best, last): one line per (method, warm-up, label, colour, style)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        fig = Figure(figsize=(13, 5), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (col, what) in zip(axes, METRICS, strict=True):
            for method, warmup, label, color, style in series:
                sub = summary[(summary["method"] == method) & (summary["warmup"] == warmup)]
                if sub.empty:
                    continue
                sub = sub.sort_values("level")
                ax.errorbar(
                    sub["level"],
                    sub[f"{col}_mean"],
                    yerr=sub[f"{col}_std"],
                    color=color,
                    ls=style,
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=label,
                )
            ax.set(xlabel="Noise level (%)", title=f"Test accuracy, {what}")
        axes[0].set_ylabel("Test accuracy (%)")
        fig.suptitle(title)
        return fig


def _legend(fig: Figure) -> None:
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize=8)


def write_fig6(
    table: pd.DataFrame, dataset: str, loader: str, methods: list[str], own: dict[str, int], out
) -> dict[str, Any]:
    """Fig. 6 of one data set; ``own`` is each method's own warm-up (its Fig. 6 run)."""
    summary = summarise(table[table["dataset"] == dataset])
    series = [(m, own[m], method_name(m), method_color(m), "-") for m in methods]
    n_seeds = int(summary["seeds"].max()) if len(summary) else 0
    fig = _lines(
        summary, series, f"Fig. 6: label-noise correction on {dataset} ({n_seeds} seed(s))"
    )
    paper = pd.DataFrame(paper_rows(loader))
    if len(paper):
        ax = fig.axes[0]  # the paper reports the best accuracy over training
        for method, g in paper.groupby("method"):
            ax.plot(
                g["level"],
                g["acc"],
                ls="none",
                marker="D",
                mfc="none",
                mec=method_color(str(method)),
                ms=7,
                label=f"paper: {g['paper_name'].iloc[0]}",
            )
    _legend(fig)
    data = summary[summary.apply(lambda r: own.get(r["method"]) == r["warmup"], axis=1)]
    if len(paper):
        data = pd.concat([data, paper.rename(columns={"acc": "paper_acc"})], ignore_index=True)
    return save_figure(fig, Path(out), "fig6", data)


def write_fig7(
    table: pd.DataFrame, dataset: str, methods: list[str], warmups: dict[str, list[int]], out
) -> dict[str, Any]:
    """Fig. 7: each method at each warm-up length (solid: longest, dashed: shorter)."""
    summary = summarise(table[table["dataset"] == dataset])
    series = []
    for m in methods:
        ws = sorted(warmups[m])
        for w in ws:
            style = "-" if w == ws[-1] else "--"
            series.append((m, w, f"{method_name(m)}, {w} warm-up epochs", method_color(m), style))
    fig = _lines(summary, series, f"Fig. 7: warm-up epochs before correction, {dataset}")
    _legend(fig)
    data = summary[summary["method"].isin(methods)]
    return save_figure(fig, Path(out), "fig7", data)


def write_fig11(table: pd.DataFrame, dataset: str, own: dict[str, int], out) -> dict[str, Any]:
    """Fig. 11: MAP-D with its probabilities vs with binary (argmax) p(noisy)."""
    summary = summarise(table[table["dataset"] == dataset])
    series = [
        ("mapd", own["mapd"], "MAP-D (probabilities)", method_color("mapd"), "-"),
        (
            "mapd_binary",
            own["mapd_binary"],
            "MAP-D binary (argmax)",
            method_color("mapd_binary"),
            "--",
        ),
    ]
    fig = _lines(summary, series, f"Fig. 11: probabilistic vs binary p(noisy), {dataset}")
    _legend(fig)
    data = summary[summary["method"].isin(["mapd", "mapd_binary"])]
    return save_figure(fig, Path(out), "fig11", data)
