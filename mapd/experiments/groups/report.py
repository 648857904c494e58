"""The minority-group experiment's report section and headline metrics (DVC metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.config import dataset_settings
from mapd.experiments.groups.grid import datasets, detectors, jtt_epoch, seeds
from mapd.io import load_json, load_table
from mapd.outputs import seed_summary
from mapd.paths import Layout

METHOD_NAMES = {"erm": "ERM", "jtt": "JTT (error set)", "mapd_minority": "MAP-D + upweighting"}
# published worst-group test accuracy (%) on Waterbirds, REFERENCE.md Sec. 4 and the issue:
# JTT's paper (ERM, JTT), and the MAP-D authors' results file at upweight 50 / 100
PUBLISHED: dict[str, dict[str, str]] = {
    "waterbirds": {
        "erm": "72.6 (JTT paper)",
        "jtt": "86.7 (JTT paper); 85.0 / 86.0 (authors' file, up 50 / 100)",
        "mapd_minority": "88.1 / 88.2 (authors' file, up 50 / 100)",
    },
}


def _ms(values: pd.Series) -> dict[str, float]:
    s = seed_summary(values.to_numpy(float))
    return {"mean": s["mean"], "std": s["std"]}


def metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Per data set: detection P / R / F1 / AUROC per detector and worst-group / average test
    accuracy per method, mean and std over seeds."""
    lay = Layout.of(config)
    det = load_table(lay.groups_table("detection"))
    acc = load_table(lay.groups_table("accuracy"))
    out: dict[str, Any] = {}
    for d in datasets(config):
        dd, da = det[det["dataset"] == d], acc[acc["dataset"] == d]
        out[d] = {
            "detection": {
                name: {m: _ms(g[m]) for m in ("precision", "recall", "f1", "auroc")}
                for name, g in dd.groupby("detector", sort=False)
                if name != "jtt"
            },
            "accuracy": {
                name: {m: _ms(g[m]) for m in ("worst_group", "average")}
                for name, g in da.groupby("method", sort=False)
            },
            "seeds": len(seeds(config)),
        }
    return out


def _pct(g: pd.Series) -> str:
    s = seed_summary(g.to_numpy(float))
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def _num(g: pd.Series) -> str:
    v = g.to_numpy(float)
    v = v[~np.isnan(v)]
    if not len(v):
        return "–"
    s = seed_summary(v)
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def _counts(config: dict[str, Any], d: str) -> pd.DataFrame:
    lay = Layout.of(config)
    m = load_json(Path(lay.groups("scores", d, seeds(config)[0])) / "metrics.json")
    rows = []
    for g, c in m["counts"]["train"].items():
        val = m["counts"]["val"].get(g, {"n": 0})
        test = (m.get("erm_test") or {}).get("counts", {}).get(g, 0)
        role = "minority" if c["minority"] else "majority"
        rows.append({"group": g, "role": role, "train": c["n"], "val": val["n"], "test": test})
    t = pd.DataFrame(rows)
    t.attrs["caption"] = f"{d}: examples per group (group = 2 * label + spurious attribute)"
    return t


def sections(config: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    lay = Layout.of(config)
    det = load_table(lay.groups_table("detection"))
    acc = load_table(lay.groups_table("accuracy"))
    n = len(seeds(config))
    text = (
        "Which training examples belong to a minority group (an attribute the label usually "
        "co-occurs with is absent)? JTT's error set takes the examples the ERM model gets wrong "
        "after epoch T; MAP-D fits a k-NN (k = assign/k) on the loss trajectories of the whole "
        "validation split, recorded in the same ERM run but never trained on, labelled minority "
        "/ majority by their group annotation, and flags training examples with p(minority) "
        "above the threshold. Precision / recall / F1 use each detector's decision, AUROC its "
        "score (JTT's is a 0/1 set). The second stage trains again with the detected set "
        "counted lambda_up times (methods/upweight); worst-group and average accuracy on the "
        f"test split, mean ± std over {n} seed(s). ERM is the first stage's own run."
    )
    parts = [{"heading": "Minority groups (Fig. 9)", "text": text}]
    for d in datasets(config):
        up = dataset_settings(config, d)["methods"]["upweight"]
        dd = det[(det["dataset"] == d) & (det["detector"] != "jtt")]
        t_det = pd.DataFrame(
            [
                {
                    "detector": name,
                    "flagged": _num(g["flagged"]),
                    **{m: _num(g[m]) for m in ("precision", "recall", "f1", "auroc")},
                }
                for name, g in dd.groupby("detector", sort=False)
            ]
        )
        t_det.attrs["caption"] = (
            f"{d}: finding the {int(dd['minority'].iloc[0])} minority training examples "
            f"(JTT at each T; the second stage uses T = {jtt_epoch(config, d)})"
        )
        da = acc[acc["dataset"] == d]
        pub = PUBLISHED.get(d, {})
        t_acc = pd.DataFrame(
            [
                {
                    "method": METHOD_NAMES.get(name, name),
                    "worst-group %": _pct(g["worst_group"]),
                    "average %": _pct(g["average"]),
                    **{
                        c.replace("group", "group "): _pct(g[c])
                        for c in g.columns
                        if c.startswith("group")
                    },
                    "published worst-group %": pub.get(name, "–"),
                }
                for name, g in da.groupby("method", sort=False)
                if name in ("erm", *detectors(config))
            ]
        )
        t_acc.attrs["caption"] = (
            f"{d}: test accuracy after the second stage (lambda_up {up['lambda_up']}, "
            f"{up['mode']}), per group and worst group"
        )
        images = [(lay.figure(d, "fig9.png"), "Fig. 9: detection of minority-group examples")]
        parts.append(
            {
                "heading": f"Minority groups: {d}",
                "images": images,
                "tables": [_counts(config, d), t_det, t_acc],
            }
        )
    return parts
