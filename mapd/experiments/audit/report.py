"""The audit's report section and headline metrics (DVC metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mapd.categories import category_name, sort_categories
from mapd.data import ImageDataset
from mapd.errors import DataError
from mapd.experiments.audit import datasets as audited
from mapd.outputs import Assignment, Run, mean_std_text, seed_summary
from mapd.paths import Layout
from mapd.probes import ProbeSuite


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


SeedOutputs = tuple[Any, ProbeSuite, Run, Assignment]  # (seed, suite, run, assignment)


def load_outputs(
    probe_dirs: list[Any], run_dirs: list[Any], assign_dirs: list[Any]
) -> list[SeedOutputs]:
    """Each seed's probe suite, run and assignment, read and checked by :mod:`mapd.outputs`."""
    if not probe_dirs or not (len(probe_dirs) == len(run_dirs) == len(assign_dirs)):
        raise DataError(
            f"need equally many probe/run/assign folders, at least one: got {len(probe_dirs)}/"
            f"{len(run_dirs)}/{len(assign_dirs)}"
        )
    out = []
    for i, (p, r, a) in enumerate(zip(probe_dirs, run_dirs, assign_dirs, strict=True)):
        suite = ProbeSuite.load(p)
        seed = suite.seed if suite.seed is not None else i
        out.append((seed, suite, Run.load(r, rows=len(suite)), Assignment.load(a)))
    return out


def metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Per data set, over seeds (:func:`mapd.outputs.seed_summary`): held-out probe accuracy per
    setting, final test accuracy and, where test groups exist, worst-group test accuracy."""
    lay = Layout.of(config)
    out: dict[str, Any] = {}
    for name in audited(config):
        held: dict[str, list[float]] = {}
        test, worst = [], []
        for seed in config["seeds"]:
            a = Assignment.load(lay.assign(name, seed))
            for setting, res in a.heldout.items():
                held.setdefault(setting, []).append(res["accuracy"])
            run = Run.load(lay.run(name, seed))
            if run.final_test_acc is not None:
                test.append(run.final_test_acc)
            if "test_groups" in run.metrics:
                worst.append(run.metrics["test_groups"]["worst_group"])
        entry = {f"heldout_{k}": seed_summary(v) for k, v in held.items()}
        if test:
            entry["test_acc"] = seed_summary(test)
        if worst:
            entry["test_worst_group_acc"] = seed_summary(worst)
        out[name] = entry
    return out


def dataset_section(
    name: str,
    seeds: list[SeedOutputs],
    *,
    figures: Path,
    gallery_dir: Path,
    per_category: int,
    train: ImageDataset | None = None,
    issues: pd.DataFrame | None = None,
    issues_per_class: int = 0,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One data set's section: held-out accuracy, training and assignment tables, Figs. 3/4
    (``figures`` holds fig3.png and fig4.png), the surfaced-examples gallery (needs the
    in-memory ``train`` split) and the probe galleries. Also returns the held-out accuracies
    per setting and seed, for the summary table."""
    from mapd.experiments.audit.galleries import probe_galleries, surfaced_gallery

    settings = list(seeds[0][3].heldout)
    acc_rows: list[dict[str, Any]] = [
        {"seed": s, **{k: _pct(a.heldout[k]["accuracy"]) for k in settings if k in a.heldout}}
        for s, _, _, a in seeds
    ]
    accuracies = {
        k: [a.heldout[k]["accuracy"] for *_, a in seeds if k in a.heldout] for k in settings
    }
    acc_rows.append({"seed": "mean ± std", **{k: mean_std_text(v) for k, v in accuracies.items()}})
    acc_table = pd.DataFrame(acc_rows)
    acc_table.attrs["caption"] = "Held-out probe accuracy of the k-NN assignment per seed"

    train_table = pd.DataFrame(
        [
            {
                "seed": s,
                "epochs": run.n_epochs,
                # NaN when the data set has no test split (e.g. an image folder)
                "final_test_acc": float("nan")
                if run.final_test_acc is None
                else run.final_test_acc,
                "train_seconds": float(sum(float(e["seconds"]) for e in run.epoch_rows)),
                "recording": str(run.metrics["recording"]),
            }
            for s, _, run, _ in seeds
        ]
    )
    train_table.attrs["caption"] = "Training run per seed (final test accuracy as recorded)"

    count_rows = []
    for s, _, _, a in seeds:
        counts = a.data_rows()["assigned"].astype(str).value_counts()
        count_rows.append(
            {"seed": s, **{c: int(counts.get(c, 0)) for c in sort_categories(counts.index)}}
        )
    count_table = pd.DataFrame(count_rows).fillna(0)
    count_table.attrs["caption"] = "Training examples (role 'data') per assigned category"

    first_seed, suite, _, first = seeds[0]
    data = first.data_rows()
    crosstab = pd.crosstab(data["label"], data["assigned"].astype(str))
    crosstab = crosstab[sort_categories(crosstab.columns)].reset_index()
    if (classes := suite.classes) is not None:
        crosstab.insert(
            1, "class", [classes[k] if 0 <= k < len(classes) else "" for k in crosstab["label"]]
        )
    crosstab.attrs["caption"] = (
        f"Training examples per class (rows) and assigned category, seed {first_seed}"
    )

    figures = Path(figures)
    images: list[Any] = [
        (figures / "fig3.png", "Fig. 3: probe accuracy, first- and consistently-learned, losses"),
        (figures / "fig4.png", "Fig. 4: loss trajectories and held-out confusion matrices"),
    ]
    if train is not None:
        images += surfaced_gallery(train, suite, first, gallery_dir / f"{name}-surfaced.png")
    images += [
        (p, f"Probe examples (cf. Fig. 2): {category_name(c)}")
        for c, p in probe_galleries(suite, gallery_dir / name, per_category=per_category)
    ]
    tables = [acc_table, train_table, count_table, crosstab]
    if issues is not None:
        from mapd.experiments.audit.issues import issue_galleries

        if train is not None:
            data = first.data_rows()
            typical = data.set_index("orig_index")["p_typical"] if "p_typical" in data else None
            images += issue_galleries(
                train, issues, typical, gallery_dir / f"{name}-issues", per_class=issues_per_class
            )
        top = issues.head(20).drop(columns=["path"] if not issues["path"].any() else [])
        top.attrs["caption"] = (
            f"The 20 most likely mislabeled of {len(issues)} training examples "
            "(label_issues.csv ranks them all)"
        )
        tables.append(top)
        from mapd.experiments.audit.issues import truth_metrics

        if (truth := truth_metrics(issues)) is not None:
            t = pd.DataFrame([{k: round(v, 4) for k, v in truth.items()}])
            t.attrs["caption"] = (
                f"The ranking against the truth: {truth['noisy']} of {truth['n']} training "
                "labels (read from the labels file) differ from the data set's own; AUROC, "
                "average precision and precision at k = that count"
            )
            tables.append(t)
    text = (
        f"{len(seeds)} seed(s): {', '.join(str(s) for s, *_ in seeds)}. Fig. 3: probe learning "
        "dynamics, mean ± std over seeds. Fig. 4: loss trajectories and confusion matrices of "
        "the held-out probes (the paper reports ~81.9% with 4 probes and ~78% with 6 for "
        "ResNet-50 on ImageNet). Probe examples are drawn from the first seed's probe suite; "
        "captions give the label trained on (and the original one where it was changed)."
    )
    section = {
        "heading": f"Data set: {name}",
        "text": text,
        "images": images,
        "tables": tables,
    }
    return section, accuracies


def sections(config: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    """The audit's part of the report: a summary table, then one section per data set."""
    from mapd.experiments.audit.issues import read_issues
    from mapd.pipeline import load_split

    lay = Layout.of(config)
    parts, summary_rows = [], []
    for name in audited(config):
        seeds = load_outputs(
            [lay.probes(name, s) for s in config["seeds"]],
            [lay.run(name, s) for s in config["seeds"]],
            [lay.assign(name, s) for s in config["seeds"]],
        )
        section, accuracies = dataset_section(
            name,
            seeds,
            figures=Path(lay.figures(name)),
            gallery_dir=workdir,
            per_category=config["report"]["gallery_per_category"],
            train=load_split(config, name, "train"),
            issues=read_issues(lay.issues(name)),
            issues_per_class=config["audit"]["label_issues"]["gallery"],
        )
        parts.append(section)
        summary_rows.append(
            {
                "data set": name,
                **{k: mean_std_text(v) for k, v in accuracies.items()},
                "seeds": len(config["seeds"]),
            }
        )
    summary = pd.DataFrame(summary_rows)
    summary.attrs["caption"] = "Held-out probe accuracy (mean ± std over seeds)"
    head = {
        "heading": "MAP-D audit",
        "text": "Probe suites, learning curves and k-NN metadata assignment (paper Secs. 2-3.2).",
        "tables": [summary],
    }
    return [head, *parts]
