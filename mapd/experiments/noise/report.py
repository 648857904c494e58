"""The label-noise experiment's report sections and headline metrics (DVC metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mapd.experiments.noise.figures import method_name, summarise
from mapd.experiments.noise.grid import datasets, figures_of, methods, own_warmup
from mapd.io import load_table
from mapd.paths import Layout


def _table(config: dict[str, Any]) -> pd.DataFrame:
    return load_table(Layout.of(config).noise_table())


def metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Per data set, method (at its own warm-up) and level: best and last test accuracy (%),
    mean and std over seeds; Fig. 7's other warm-ups under ``<method>@w<warm-up>``."""
    summary = summarise(_table(config))
    out: dict[str, Any] = {}
    for d in datasets(config):
        entry: dict[str, Any] = {}
        for _, r in summary[summary["dataset"] == d].iterrows():
            m = str(r["method"])
            key = m if int(r["warmup"]) == own_warmup(config, d, m) else f"{m}@w{int(r['warmup'])}"
            entry.setdefault(key, {})[f"noise{int(r['level'])}"] = {
                "best": {"mean": r["best_acc_mean"], "std": r["best_acc_std"]},
                "last": {"mean": r["last_acc_mean"], "std": r["last_acc_std"]},
                "seeds": int(r["seeds"]),
            }
        out[d] = entry
    return out


def _settings_text(config: dict[str, Any]) -> str:
    n = config["noise"]
    inj = n["injection"]
    kind = {
        "arazo": "Arazo's injection (the authors'): the chosen share of examples is relabelled "
        "uniformly over all classes, so some keep their label",
        "symmetric": "symmetric: the chosen examples get another class, uniformly",
        "asymmetric": "asymmetric: class-dependent flips",
    }[inj["kind"]]
    draw = (
        f"; new labels drawn from range({inj['draw_classes']}) (the authors' CIFAR-100 quirk)"
        if inj["draw_classes"]
        else ""
    )
    seed = "each run seed its own fixed noise" if inj["seed"] is None else f"seed {inj['seed']}"
    p = n["probes"]
    record = (
        "the authors': training rows from the training forward pass (for mixing methods, the "
        "loss of the output on the MIXED input against the un-mixed label), probes from an "
        "eval pass after each epoch"
        if n["record"] == "authors"
        else "an eval-mode pass over every row after each epoch"
    )
    drawn = (
        "uniformly over all classes (some keep theirs; the authors)"
        if p["noisy_labels"] == "any"
        else "from the other classes"
    )
    fixed = ", never augmented (the authors)" if p["fixed_inputs"] else ""
    return " ".join(
        [
            f"Noise: {kind}{draw}; {seed}.",
            f"MAP-D's probes: {p['size']} random training examples with their clean labels and",
            f"{p['size']} with labels drawn {drawn}, added as copies{fixed};",
            "every method trains on the same rows.",
            f"Learning curves: {record}.",
            "Test accuracy is reported as the best over training (the authors' plots) and at",
            "the last epoch. The paper's numbers (CIFAR-10/100 only) are open diamonds, to be",
            "compared with the best-accuracy panel. Differences from the authors' code: the",
            "prediction z of the bootstrapping target comes from a training-mode forward that",
            "leaves BatchNorm's running statistics untouched.",
        ]
    )


def _pivot(summary: pd.DataFrame, col: str, own: dict[str, int]) -> pd.DataFrame:
    own_rows = summary[summary.apply(lambda r: own.get(r["method"]) == r["warmup"], axis=1)]
    cells = own_rows.assign(
        text=[
            f"{m:.1f} ± {s:.1f}"
            for m, s in zip(own_rows[f"{col}_mean"], own_rows[f"{col}_std"], strict=True)
        ],
        name=[method_name(m) for m in own_rows["method"]],
    )
    table = cells.pivot(index="name", columns="level", values="text")
    table.columns = [f"{c}%" for c in table.columns]
    return table.reset_index().rename(columns={"name": "method"})


def sections(config: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    lay = Layout.of(config)
    table = _table(config)
    parts = [
        {
            "heading": "Label-noise correction (Figs. 6, 7, 11)",
            "text": _settings_text(config),
        }
    ]
    for d in datasets(config):
        summary = summarise(table[table["dataset"] == d])
        own = {m: own_warmup(config, d, m) for m in methods(config)}
        best, last = _pivot(summary, "best_acc", own), _pivot(summary, "last_acc", own)
        best.attrs["caption"] = f"{d}: test accuracy (%), best over training, mean ± std over seeds"
        last.attrs["caption"] = f"{d}: test accuracy (%), last epoch, mean ± std over seeds"
        tables = [best, last]
        if "auroc_p_noisy_mean" in summary:
            det = summary.dropna(subset=["auroc_p_noisy_mean"])
            det = det.assign(method=[method_name(m) for m in det["method"]])
            det = det[["method", "warmup", "level", "auroc_p_noisy_mean"]]
            det.attrs["caption"] = (
                f"{d}: how well the final p(noisy) ranks the noisy labels (AUROC, mean over seeds)"
            )
            tables.append(det)
        captions = {
            "fig6": "Fig. 6: test accuracy vs noise level",
            "fig7": "Fig. 7: warm-up epochs before correction",
            "fig11": "Fig. 11: probabilistic vs binary p(noisy)",
        }
        images = [(lay.figure(d, f"{stem}.png"), captions[stem]) for stem in figures_of(config)]
        parts.append({"heading": f"Label noise: {d}", "images": images, "tables": tables})
    return parts
