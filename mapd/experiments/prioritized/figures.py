"""Fig. 8 of the prioritized-training experiment: test accuracy per epoch, per gradient step and
per second of training, mean ± std over seeds for every scorer, the reference's best accuracy
as a line, and the paper's statements beside our speed-ups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mapd.io import save_figure

# the paper's colours of Fig. 8's lines (uniform blue / green, correct class purple / orange,
# MAP-D pink / lavender); RHO-Loss (grey) is ours here, the paper plotted Mindermann's numbers
STYLE: dict[str, tuple[str, str]] = {
    "uniform": ("Uniform", "#1f77b4"),
    "uniform_balanced": ("Uniform (balanced)", "#2ca02c"),
    "correct_class": ("Correct class score", "#9467bd"),
    "correct_class_balanced": ("Correct class score (balanced)", "#ff7f0e"),
    "loss": ("Highest loss", "#8c564b"),
    "loss_balanced": ("Highest loss (balanced)", "#bcbd22"),
    "rho_loss": ("RHO-Loss", "#7f7f7f"),
    "rho_loss_balanced": ("RHO-Loss (balanced)", "#17becf"),
    "mapd": ("MAP-D", "#e377c2"),
    "mapd_balanced": ("MAP-D (balanced)", "#b39ddb"),
}

# what the paper and Mindermann et al. state for Clothing1M (REFERENCE.md Sec. 3)
PAPER = (
    "Paper (Clothing1M, ResNet-50): MAP-D ~10x faster than uniform selection to uniform's best "
    "accuracy; RHO-Loss (Mindermann et al.) 18x fewer steps and +2 % final accuracy vs uniform."
)


# the same per scorer, for the table beside ours
PAPER_BY_SCORER = {
    "uniform": "reference",
    "mapd": "~10x (MAP-D)",
    "mapd_balanced": "~10x (MAP-D)",
    "rho_loss": "18x fewer steps, +2 % final (Mindermann et al.)",
}


def scorer_name(scorer: str) -> str:
    return STYLE.get(scorer, (scorer, ""))[0]


def summarise(curves: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Mean and std over seeds of the test accuracy (%) per scorer and epoch, with the steps,
    examples and seconds of training at that epoch (means over seeds)."""
    sub = curves[curves["dataset"] == dataset]
    g = sub.groupby(["scorer", "epoch"])
    out = g.agg(
        step=("step", "mean"),
        examples=("examples", "mean"),
        train_s=("train_s", "mean"),
        acc_mean=("test_acc", "mean"),
        acc_std=("test_acc", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0),
        seeds=("seed", "nunique"),
    ).reset_index()
    out[["acc_mean", "acc_std"]] *= 100.0
    return out


def write_fig8(
    curves: pd.DataFrame,
    table: pd.DataFrame,
    dataset: str,
    config: dict[str, Any],
    out: str | Path,
) -> dict[str, str]:
    """Fig. 8 of ``dataset``: three panels (accuracy vs epoch, vs gradient step, vs seconds)."""
    data = summarise(curves, dataset)
    tab = table[table["dataset"] == dataset].set_index("scorer")
    ref = config["prioritized"]["reference"]
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(13.5, 4.6), layout="constrained")
        axes = fig.subplots(1, 3, sharey=True)
        for scorer in config["prioritized"]["scorers"]:
            d = data[data["scorer"] == scorer].sort_values("epoch")
            name, color = STYLE.get(scorer, (scorer, "#444444"))
            speed = tab.loc[scorer, "speedup"] if scorer in tab.index else float("nan")
            label = f"{name} ({speed:.1f}x)" if scorer != ref else f"{name} (reference)"
            for ax, x in zip(axes, ("epoch", "step", "train_s"), strict=True):
                ax.plot(d[x], d["acc_mean"], color=color, label=label, lw=1.6)
                ax.fill_between(
                    d[x], d["acc_mean"] - d["acc_std"], d["acc_mean"] + d["acc_std"],
                    color=color, alpha=0.15, lw=0,
                )  # fmt: skip
        if ref in tab.index:
            for ax in axes:
                ax.axhline(100 * tab.loc[ref, "target_acc"], color="k", ls=":", lw=1)
        axes[0].set_ylabel("test accuracy (%)")
        for ax, xl in zip(axes, ("epoch", "gradient step", "training time (s)"), strict=True):
            ax.set_xlabel(xl)
        axes[2].legend(
            title="scorer (speed-up to the reference's best)", fontsize=7, loc="lower right"
        )
        fig.suptitle(f"Fig. 8 — prioritized training on {dataset}\n{PAPER}", fontsize=8.5)
    return save_figure(fig, Path(out), "fig8", data)
