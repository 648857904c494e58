"""``label_issues.csv``: every training example of a data set ranked by how likely its label is
wrong, from the audit's runs, merged over seeds; and its report figures (the top-ranked examples
per class, and the paper's Fig. 5 layout: per class the most typical example beside the two most
likely mislabeled ones).

An example's score is the mean of the configured score (``audit/label_issues/score``, a column
``score_<name>`` of the assignment) over the seeds in which it is a data row. How each verdict was
obtained is a column: with the paper's protocol (``probes/keep_sources: false``) a probe's source
example leaves the data of that seed, so it gets its verdict from the other seeds or none; with
copies (``keep_sources: true``) every example has a row in every seed, but a random-label probe's
source is trained on with two labels, which disturbs its own curve (flagged ``conflict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.data import ImageDataset
from mapd.errors import DataError
from mapd.io import atomic_dir, load_table, save_json, save_table
from mapd.outputs import Assignment, Run
from mapd.pipeline import load_split, log
from mapd.probes import ProbeSuite

COLUMNS = (
    "rank",
    "orig_index",
    "path",
    "label",
    "class",
    "predicted",
    "predicted_class",
    "score",
    "seeds",
    "verdict",
)


def label_issues(
    seeds: list[tuple[Any, ProbeSuite, Run, Assignment]], score: str, ds: ImageDataset
) -> pd.DataFrame:
    """The ranked table (one row per training example of ``ds``); see the module docstring."""
    col = f"score_{score}"
    parts = []
    conflict: set[int] = set()
    for seed, suite, run, a in seeds:
        if col not in a.metadata:
            raise DataError(f"{a.path}: no column {col!r}; is {score!r} in assign/scores?")
        md = a.metadata
        data = md[md["role"] == "data"]
        pred = np.asarray(run.pred[:, -1])[data["row"].to_numpy()]
        parts.append(
            pd.DataFrame(
                {
                    "orig_index": data["orig_index"].to_numpy(),
                    "label": data["label"].to_numpy(),
                    "predicted": pred.astype(np.int64),
                    "score": data[col].to_numpy(dtype=float),
                    "seed": seed,
                }
            )
        )
        t = suite.table
        noisy_probe = (t["category"] == "random_labels") & (t["orig_index"] >= 0)
        conflict |= (
            set(t.loc[noisy_probe, "orig_index"].astype(int))
            if suite.meta.get("keep_sources")
            else set()
        )
    rows = pd.concat(parts, ignore_index=True)
    merged = rows.groupby("orig_index", sort=False).agg(
        label=("label", "first"),
        predicted=("predicted", lambda p: int(p.mode().iloc[0])),
        score=("score", "mean"),
        seeds=("seed", lambda s: ",".join(str(v) for v in s)),
    )
    table = pd.DataFrame({"orig_index": ds.index}).merge(
        merged, left_on="orig_index", right_index=True, how="left"
    )
    scored = table["score"].notna()
    table["verdict"] = np.where(
        scored, "data row in seed(s) " + table["seeds"].fillna(""), "probe source in every seed"
    )
    is_conflict = table["orig_index"].isin(conflict).to_numpy() & scored.to_numpy()
    table.loc[is_conflict, "verdict"] += "; also a random-label probe (conflict)"
    table["label"] = table["label"].fillna(pd.Series(ds.labels, index=table.index)).astype(int)
    table["predicted"] = table["predicted"].fillna(-1).astype(int)
    table["seeds"] = table["seeds"].fillna("")
    classes = list(ds.classes)

    def name(k: int) -> str:
        return classes[k] if 0 <= k < len(classes) else ""

    table["class"] = [name(int(k)) for k in table["label"]]
    table["predicted_class"] = [name(int(k)) for k in table["predicted"]]
    table["path"] = ds.paths if ds.paths is not None else ""
    # highest score first; unscored last; ties by the example's index (stable)
    table = table.sort_values(
        ["score", "orig_index"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    extra = []
    if "orig_label" in ds.attrs:  # labels from a file: the data set's own labels are the truth
        truth = pd.Series(np.asarray(ds.attrs["orig_label"]), index=ds.index)
        table["true_label"] = truth.loc[table["orig_index"]].to_numpy().astype(int)
        table["is_noisy"] = table["label"] != table["true_label"]
        extra = ["true_label", "is_noisy"]
    return table[[*COLUMNS, *extra]]


def truth_metrics(table: pd.DataFrame) -> dict[str, Any] | None:
    """How well the ranking finds the wrong labels when the truth is known (a labels file
    over the data set's own labels): detection metrics over the scored examples."""
    if "is_noisy" not in table:
        return None
    from mapd.scores.metrics import detection_metrics

    scored = table[table["score"].notna()]
    truth = scored["is_noisy"].to_numpy(dtype=bool)
    out = detection_metrics(truth, scored["score"].to_numpy(dtype=float))
    return {"n": len(scored), "noisy": int(truth.sum()), **out}


def issues(
    config: dict[str, Any],
    name: str,
    probe_dirs: list[str],
    run_dirs: list[str],
    assign_dirs: list[str],
    out: str | Path,
) -> pd.DataFrame:
    """Write ``out/label_issues.csv`` and ``.parquet`` for data set ``name``."""
    from mapd.experiments.audit.report import load_outputs

    seeds = load_outputs(probe_dirs, run_dirs, assign_dirs)
    ds = load_split(config, name, "train")
    table = label_issues(seeds, config["audit"]["label_issues"]["score"], ds)
    if ds.paths is None:
        table["path"] = _file_paths(config, name, table["orig_index"].to_numpy())
    truth = truth_metrics(table)
    with atomic_dir(out) as tmp:
        save_table(tmp / "label_issues.csv", table)
        save_table(tmp / "label_issues.parquet", table)
        if truth is not None:
            save_json(tmp / "truth_metrics.json", truth)
    if truth is not None:
        log(
            f"{name}: {truth['noisy']} of {truth['n']} labels differ from the data set's; "
            f"AUROC {truth['auroc']:.3f}, AP {truth['ap']:.3f}"
        )
    unscored = int(table["score"].isna().sum())
    log(
        f"{name}: label_issues.csv ranks {len(table)} training examples"
        + (f" ({unscored} without a verdict: probe sources in every seed)" if unscored else "")
        + f" -> {out}"
    )
    return table


def _file_paths(config: dict[str, Any], name: str, orig_index: np.ndarray) -> np.ndarray | str:
    """The image files of ``orig_index`` for a file-based data set decoded into memory (an
    image folder of small images): its listing without decoding; "" where there are none."""
    import inspect

    from mapd.config import dataset_settings
    from mapd.data import get_spec, load_dataset

    s = dataset_settings(config, name)
    if "in_memory" not in inspect.signature(get_spec(s["loader"]).loader).parameters:
        return ""
    listing = load_dataset(s["loader"], "train", **{**s["options"], "in_memory": False})
    if listing.paths is None:
        return ""
    by_index = pd.Series(listing.paths, index=listing.index)
    return by_index.reindex(orig_index).fillna("").to_numpy()


def read_issues(folder: str | Path) -> pd.DataFrame:
    table = load_table(Path(folder) / "label_issues.parquet")
    if missing := [c for c in COLUMNS if c not in table.columns]:
        raise DataError(f"{folder}/label_issues.parquet: missing columns {missing}")
    return table


def _images(ds: ImageDataset, orig_index: np.ndarray) -> np.ndarray:
    """uint8 (K, H, W, C) images of the examples ``orig_index`` (decoded if file-backed)."""
    lookup = {int(i): p for p, i in enumerate(ds.index)}
    pos = np.array([lookup[int(i)] for i in orig_index], dtype=np.int64)
    if ds.images is not None:
        return ds.images[pos]
    from mapd.probes import materialise

    return materialise(ds, pos, size=96)


def issue_galleries(
    ds: ImageDataset,
    table: pd.DataFrame,
    typical: pd.Series | None,
    out_dir: Path,
    *,
    per_class: int,
    max_classes: int = 10,
) -> list[tuple[str, str]]:
    """Two PNGs: the ``per_class`` top-ranked examples of each class, and Fig. 5's layout
    (per class the most typical example, then the two most likely mislabeled ones);
    ``typical`` maps an example's orig_index to p(typical) (None: Fig. 5 is left out)."""
    from mapd.report import gallery_png

    scored = table[table["score"].notna()]
    classes = list(range(min(ds.num_classes, max_classes)))
    out: list[tuple[str, str]] = []
    if per_class > 0 and len(scored):
        cells, labels = [], []
        for k in classes:
            top = scored[scored["label"] == k].head(per_class)
            for r in top.itertuples():
                cells.append(r.orig_index)
                labels.append(f"#{r.rank} {ds.classes[k]}\npred {r.predicted_class} {r.score:.2f}")
        if cells:
            path = out_dir / "label_issues.png"
            gallery_png(
                _images(ds, np.array(cells)),
                labels,
                path,
                ncols=per_class,
                title="Most likely mislabeled training examples per class (rank, given label)",
            )
            out.append(
                (str(path), "Label issues: the top-ranked examples per class (label_issues.csv)")
            )
    if typical is not None and len(scored):
        cells, labels = [], []
        for k in classes:
            members = scored[scored["label"] == k]
            if len(members) < 3:
                continue
            p_typ = members["orig_index"].map(typical).fillna(-1.0)
            best = members.loc[p_typ.idxmax()]
            picks = [best, *[r for _, r in members.head(3).iterrows() if r.name != best.name][:2]]
            for i, r in enumerate(picks):
                cells.append(int(r["orig_index"]))
                kind = "typical" if i == 0 else f"#{int(r['rank'])}"
                labels.append(f"{kind} {ds.classes[k]}")
        if cells:
            path = out_dir / "fig5.png"
            gallery_png(
                _images(ds, np.array(cells)),
                labels,
                path,
                ncols=9,
                title="Fig. 5: per class, the most typical, then the two likeliest mislabeled",
            )
            out.append((str(path), "Fig. 5 layout: typical beside the two most likely mislabeled"))
    return out
