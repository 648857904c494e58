"""The audit's figures, paper Figs. 3 and 4: probe learning dynamics and the held-out check.

Inputs are the files of the pipeline steps (see docs/architecture.md), one set per seed:
a probe-suite dir (``examples.parquet``, ``meta.json``), a run dir (``loss.npy``,
``correct.npy``) and, for Fig. 4, an assign dir (``heldout.json``).

Figures are drawn on ``matplotlib.figure.Figure`` objects directly (no pyplot), so importing
this module neither selects a backend nor touches anybody's global pyplot state; seaborn
styles are applied through its context managers only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from mapd.categories import category_color, category_name, sort_categories
from mapd.errors import ConfigError, DataError
from mapd.io import atomic_path, save_table
from mapd.outputs import DDOF, Seed, load_seeds, read_heldout, seed_summary

PathLike = str | os.PathLike

METRICS: tuple[str, ...] = ("accuracy", "first_learned", "consistently_learned", "mean_loss")


# --------------------------------------------------------------------------------------------
# Per-category learning dynamics
# --------------------------------------------------------------------------------------------


def probe_dynamics(loss: np.ndarray, correct: np.ndarray, categories: np.ndarray) -> pd.DataFrame:
    """Per probe category and epoch: accuracy, % first-learned, % consistently-learned, loss.

    Args:
        loss: (N, T) float per-example loss after each of T epochs.
        correct: (N, T) bool, whether the example was predicted correctly after each epoch.
        categories: (N,) str probe category per row; rows with ``""`` (ordinary data) are
            ignored.

    Returns:
        Long table with one row per (category, epoch) and columns ``category``, ``epoch``
        (1-based int), ``accuracy`` (% of the category correct at this epoch),
        ``first_learned`` (% correct at least once up to and including this epoch),
        ``consistently_learned`` (% correct at this epoch and every later one),
        ``mean_loss`` (mean loss at this epoch) and ``n`` (rows in the category).
        Categories appear in the fixed order of :data:`mapd.categories.CATEGORIES`.
    """
    loss = np.asarray(loss)
    correct = np.asarray(correct)
    categories = np.asarray(categories).astype(str)
    if loss.ndim != 2:
        raise DataError(f"loss must be 2-D (N, T), got shape {loss.shape}")
    if correct.shape != loss.shape:
        raise DataError(f"correct has shape {correct.shape}, loss has {loss.shape}; must match")
    if correct.dtype != np.bool_:
        raise DataError(f"correct must be bool, got dtype {correct.dtype}")
    if categories.shape != (loss.shape[0],):
        raise DataError(f"categories has shape {categories.shape}, expected ({loss.shape[0]},)")
    n_epochs = loss.shape[1]
    epochs = np.arange(1, n_epochs + 1)
    # Cumulative OR from the start = learned at least once; cumulative AND from the end =
    # never forgotten again.
    first = np.logical_or.accumulate(correct, axis=1)
    consistent = np.logical_and.accumulate(correct[:, ::-1], axis=1)[:, ::-1]
    frames = []
    for cat in sort_categories(categories):
        m = categories == cat
        frames.append(
            pd.DataFrame(
                {
                    "category": cat,
                    "epoch": epochs,
                    "accuracy": 100.0 * correct[m].mean(axis=0),
                    "first_learned": 100.0 * first[m].mean(axis=0),
                    "consistently_learned": 100.0 * consistent[m].mean(axis=0),
                    "mean_loss": loss[m].astype(np.float64).mean(axis=0),
                    "n": int(m.sum()),
                }
            )
        )
    if not frames:
        raise DataError("no probe rows: every category is empty")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Loading one seed
# --------------------------------------------------------------------------------------------


class _Probes:
    """The probe rows of one seed: categories (P,), loss (P, T) float32, correct (P, T) bool."""

    def __init__(self, seed: Seed) -> None:
        rows = seed.probe_rows()
        if rows.size == 0:
            raise DataError(f"{seed.suite.meta.get('dataset', '?')}: no probe rows in the suite")
        self.categories = seed.suite.table["category"].to_numpy()[rows].astype(str)
        self.loss = seed.run.finite_loss(rows)
        self.correct = np.asarray(seed.run.correct[rows], dtype=bool)
        self.seed = seed.seed
        self.n_epochs = seed.run.n_epochs


def _load_seeds(probe_dirs: Sequence[PathLike], run_dirs: Sequence[PathLike]) -> list[_Probes]:
    return [_Probes(s) for s in load_seeds(probe_dirs, run_dirs)]


def _save_figure(fig: Figure, out_dir: Path, stem: str) -> dict[str, str]:
    paths = {}
    for fmt in ("png", "svg"):
        path = out_dir / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110)
        paths[fmt] = str(path)
    return paths


# --------------------------------------------------------------------------------------------
# Fig. 3
# --------------------------------------------------------------------------------------------


def _aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (sample std, 0 for a single seed) per category and epoch."""
    g = per_seed.groupby(["category", "epoch"], sort=False)
    out = g.size().rename("n_seeds").reset_index()
    for col in METRICS:
        out[f"{col}_mean"] = g[col].mean().to_numpy()
        out[f"{col}_std"] = g[col].std(ddof=DDOF).fillna(0.0).to_numpy()
    out["n"] = g["n"].mean().to_numpy()
    return out


def _default_loss_epochs(n_epochs: int, k: int = 5) -> list[int]:
    return sorted({int(e) for e in np.rint(np.linspace(1, n_epochs, min(k, n_epochs)))})


def _violins(ax: Any, data: list[np.ndarray], colors: list[str]) -> None:
    """One violin per array, drawn from a Gaussian KDE with a floor on the bandwidth.

    seaborn/matplotlib drop groups whose values are all equal (singular KDE); a fully
    memorised probe category does exactly that, so the bandwidth never goes below a small
    fraction of the panel's loss range.
    """
    span = max(float(np.ptp(np.concatenate(data))), 1e-6)
    for x, (vals, color) in enumerate(zip(data, colors, strict=True)):
        vals = np.asarray(vals, dtype=np.float64)
        if vals.size == 0:
            continue
        std = vals.std()
        bw = max(1.06 * std * vals.size ** (-1 / 5), 0.01 * span)
        lo, hi = vals.min() - bw, vals.max() + bw
        grid = np.linspace(max(lo, 0.0) if vals.min() >= 0 else lo, hi, 200)
        # Chunk the kernel sum so a large pooled category does not build a huge matrix.
        dens = np.zeros_like(grid)
        for start in range(0, vals.size, 4096):
            z = (grid[:, None] - vals[None, start : start + 4096]) / bw
            dens += np.exp(-0.5 * z**2).sum(axis=1)
        dens /= dens.max()
        ax.fill_betweenx(grid, x - 0.4 * dens, x + 0.4 * dens, color=color, alpha=0.55, lw=0)
        ax.plot(x + 0.4 * np.r_[dens, -dens[::-1]], np.r_[grid, grid[::-1]], color=color, lw=0.8)
        q1, med, q3 = np.percentile(vals, [25, 50, 75])
        ax.plot([x, x], [q1, q3], color="black", lw=2.5, solid_capstyle="butt")
        ax.plot([x], [med], marker="o", color="white", mec="black", ms=4, zorder=3)


def write_fig3(
    probe_dirs: Sequence[PathLike],
    run_dirs: Sequence[PathLike],
    out_dir: PathLike,
    *,
    loss_epochs: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Fig. 3: probe accuracy / % first-learned / % consistently-learned, loss distributions.

    Args:
        probe_dirs: one probe-suite dir per seed (``examples.parquet``, optional ``meta.json``).
        run_dirs: the matching run dirs (``loss.npy`` float32 (N, T), ``correct.npy`` bool).
        out_dir: receives ``fig3.png``, ``fig3.svg`` and ``fig3.csv``.
        loss_epochs: 1-based epochs of the loss-distribution panels (default: 5 evenly
            spaced epochs from 1 to T).

    Every probe row (``probe_train`` and ``probe_heldout``) is used: all probes are trained on.
    Curves are the mean over seeds with a ±1 std band; loss distributions pool the seeds.

    Returns:
        ``{"png", "svg", "csv"}`` paths, ``n_seeds``, ``n_epochs``, ``categories``,
        ``loss_epochs`` and ``final``: per category the mean over seeds of each metric at the
        last epoch.
    """
    seeds = _load_seeds(probe_dirs, run_dirs)
    n_epochs = seeds[0].n_epochs
    if loss_epochs is None:
        loss_epochs = _default_loss_epochs(n_epochs)
    loss_epochs = [int(e) for e in loss_epochs]
    bad = [e for e in loss_epochs if not 1 <= e <= n_epochs]
    if not loss_epochs or bad:
        raise ConfigError(f"loss_epochs must be non-empty and within 1..{n_epochs}, got {bad}")

    per_seed = []
    for s in seeds:
        df = probe_dynamics(s.loss, s.correct, s.categories)
        df.insert(0, "seed", s.seed)
        per_seed.append(df)
    table = _aggregate(pd.concat(per_seed, ignore_index=True))
    cats = sort_categories(table["category"].unique())
    table["_order"] = table["category"].map({c: i for i, c in enumerate(cats)})
    table = table.sort_values(["_order", "epoch"]).drop(columns="_order").reset_index(drop=True)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(16, 9), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.0])
        axes_top = top.subplots(1, 3)
        panels = [
            ("accuracy", "(a) Probe accuracy", "Accuracy (%)"),
            ("first_learned", "(b) First-learned", "% learned at least once"),
            ("consistently_learned", "(c) Consistently-learned", "% never forgotten again"),
        ]
        for ax, (col, title, ylabel) in zip(axes_top, panels, strict=True):
            for cat in cats:
                sub = table[table["category"] == cat]
                mean, std = sub[f"{col}_mean"].to_numpy(), sub[f"{col}_std"].to_numpy()
                ax.plot(
                    sub["epoch"], mean, color=category_color(cat), lw=2, label=category_name(cat)
                )
                band = np.clip([mean - std, mean + std], 0, 100)  # percentages
                ax.fill_between(
                    sub["epoch"], band[0], band[1], color=category_color(cat), alpha=0.2, lw=0
                )
            ax.set(title=title, xlabel="Epoch", ylabel=ylabel, ylim=(-2, 102))
            ax.set_xlim(1, max(n_epochs, 2))
        handles, labels = axes_top[0].get_legend_handles_labels()
        top.legend(
            handles, labels, loc="outside upper center", ncol=min(len(cats), 7), frameon=False
        )

        axes_bottom = np.atleast_1d(bottom.subplots(1, len(loss_epochs), sharey=True))
        for i, (ax, ep) in enumerate(zip(axes_bottom, loss_epochs, strict=True)):
            data = [
                np.concatenate([s.loss[s.categories == c, ep - 1] for s in seeds]) for c in cats
            ]
            _violins(ax, data, [category_color(c) for c in cats])
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(
                [category_name(c) for c in cats], rotation=40, ha="right", fontsize=8
            )
            ax.set_xlim(-0.6, len(cats) - 0.4)
            ax.set_title(f"({chr(ord('d') + i)}) Loss at epoch {ep}")
            if i == 0:
                ax.set_ylabel("Per-example loss")
        fig.suptitle(
            f"Probe learning dynamics (mean ± std over {len(seeds)} seed(s), "
            f"{int(table['n'].sum() / n_epochs)} probes per seed)",
            fontsize=13,
        )
        paths = _save_figure(fig, out_dir, "fig3")
    csv_path = out_dir / "fig3.csv"
    save_table(csv_path, table)

    last = table[table["epoch"] == n_epochs].set_index("category")
    final = {
        c: {m: float(last.loc[c, f"{m}_mean"]) for m in METRICS} for c in cats if c in last.index
    }
    return {
        **paths,
        "csv": str(csv_path),
        "n_seeds": len(seeds),
        "n_epochs": n_epochs,
        "categories": cats,
        "loss_epochs": loss_epochs,
        "final": final,
    }


# --------------------------------------------------------------------------------------------
# Fig. 4
# --------------------------------------------------------------------------------------------


def _align_confusion(conf: np.ndarray, labels: list[str], target: list[str], where: str):
    if sorted(labels) != sorted(target):
        raise DataError(f"{where}: confusion labels {labels} differ from the first seed's {target}")
    idx = [labels.index(t) for t in target]
    return conf[np.ix_(idx, idx)]


def write_fig4(
    probe_dirs: Sequence[PathLike],
    run_dirs: Sequence[PathLike],
    assign_dirs: Sequence[PathLike],
    out_dir: PathLike,
    *,
    n_sampled: int = 250,
    seed: int = 0,
) -> dict[str, Any]:
    """Fig. 4: loss trajectories per category and held-out confusion matrices per setting.

    One row per setting of ``heldout.json`` (e.g. ``4-probe``, ``6-probe``). Left: mean loss
    trajectory per category of the setting (solid) and up to ``n_sampled`` randomly drawn
    individual probe trajectories (translucent), from the first seed, using all probe rows of
    the category. Right: confusion matrix of the held-out probes (rows true, columns
    predicted), counts summed over seeds, annotated with row-normalised % and counts; the
    title gives the held-out accuracy as mean ± std over seeds.

    Writes ``fig4.png``, ``fig4.svg`` and ``fig4.csv`` (setting, seed, accuracy as a fraction,
    n) into ``out_dir``. Returns their paths and ``settings``: per setting ``categories``,
    ``accuracies`` (per seed), ``accuracy_mean`` and ``accuracy_std`` (fractions).
    """
    if n_sampled < 0:
        raise ConfigError(f"n_sampled must be >= 0, got {n_sampled}")
    seeds = _load_seeds(probe_dirs, run_dirs)
    assign_dirs = [Path(a) for a in assign_dirs]
    if len(assign_dirs) != len(seeds):
        raise ConfigError(f"need one assign dir per seed: {len(assign_dirs)} for {len(seeds)}")
    heldouts = [read_heldout(a / "heldout.json") for a in assign_dirs]
    names = list(heldouts[0])
    rows, summary = [], {}
    confusions: dict[str, np.ndarray] = {}
    for name in names:
        target = heldouts[0][name]["labels"]
        total = np.zeros((len(target), len(target)), dtype=np.int64)
        accs = []
        for s, h, a in zip(seeds, heldouts, assign_dirs, strict=True):
            if name not in h:
                raise DataError(
                    f"{a / 'heldout.json'}: setting {name!r} missing (first seed has it)"
                )
            total += _align_confusion(h[name]["confusion"], h[name]["labels"], target, str(a))
            accs.append(h[name]["accuracy"])
            rows.append(
                {
                    "setting": name,
                    "seed": s.seed,
                    "accuracy": h[name]["accuracy"],
                    "n": int(h[name]["confusion"].sum()),
                }
            )
        confusions[name] = total
        stats = seed_summary(accs)
        summary[name] = {
            "categories": heldouts[0][name]["categories"],
            "labels": target,
            "accuracies": accs,
            "accuracy_mean": stats["mean"],
            "accuracy_std": stats["std"],
        }

    first = seeds[0]
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, first.n_epochs + 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = Figure(figsize=(14, 5.6 * len(names)), layout="constrained")
        subfigs = np.atleast_1d(fig.subfigures(len(names), 1))
        for i, (sf, name) in enumerate(zip(subfigs, names, strict=True)):
            ax_l, ax_r = sf.subplots(1, 2, width_ratios=[1.35, 1.0])
            info = summary[name]
            for cat in sort_categories(info["categories"]):
                traj = first.loss[first.categories == cat]
                if len(traj) == 0:
                    continue
                color = category_color(cat)
                pick = rng.choice(len(traj), size=min(n_sampled, len(traj)), replace=False)
                if len(pick):
                    segs = np.stack(
                        [np.broadcast_to(epochs, (len(pick), len(epochs))), traj[pick]], axis=-1
                    )
                    # Rasterised so the SVG stays small with hundreds of lines; fainter the
                    # more lines overlap.
                    alpha = float(np.clip(2.0 / np.sqrt(len(pick)), 0.05, 0.3))
                    ax_l.add_collection(
                        LineCollection(
                            list(segs), colors=color, alpha=alpha, linewidths=0.6, rasterized=True
                        )
                    )
                ax_l.plot(
                    epochs,
                    traj.mean(axis=0),
                    color=color,
                    lw=2.6,
                    label=f"{category_name(cat)} (n={len(traj)})",
                )
            ax_l.autoscale_view()
            ax_l.set_xlim(1, max(first.n_epochs, 2))
            ax_l.set(
                xlabel="Epoch",
                ylabel="Per-example loss",
                title=f"({chr(ord('a') + 2 * i)}) Loss trajectories, {name} (seed {first.seed})",
            )
            ax_l.legend(fontsize=8, loc="upper right")

            conf = confusions[name]
            row_sums = conf.sum(axis=1, keepdims=True)
            pct = np.divide(100.0 * conf, row_sums, out=np.zeros(conf.shape), where=row_sums > 0)
            annot = np.array(
                [
                    [f"{p:.0f}%\n({c})" for p, c in zip(pr, cr, strict=True)]
                    for pr, cr in zip(pct, conf, strict=True)
                ]
            )
            ticks = [category_name(c) for c in info["labels"]]
            sns.heatmap(
                pct,
                annot=annot,
                fmt="",
                cmap="Blues",
                vmin=0,
                vmax=100,
                square=True,
                xticklabels=ticks,
                yticklabels=ticks,
                ax=ax_r,
                annot_kws={"fontsize": 8},
                cbar_kws={"label": "% of true category", "shrink": 0.8},
            )
            ax_r.set_xticklabels(ax_r.get_xticklabels(), rotation=35, ha="right")
            ax_r.set_yticklabels(ax_r.get_yticklabels(), rotation=0)
            ax_r.set(xlabel="Predicted category", ylabel="True category")
            ax_r.set_title(
                f"({chr(ord('b') + 2 * i)}) Held-out probes, {name}: accuracy "
                f"{100 * info['accuracy_mean']:.1f} ± {100 * info['accuracy_std']:.1f}% "
                f"({len(seeds)} seed(s))"
            )
        paths = _save_figure(fig, out_dir, "fig4")
    csv_path = out_dir / "fig4.csv"
    save_table(csv_path, pd.DataFrame(rows, columns=["setting", "seed", "accuracy", "n"]))
    return {**paths, "csv": str(csv_path), "n_seeds": len(seeds), "settings": summary}
