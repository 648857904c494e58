"""Minority groups (paper Sec. 3.5, Fig. 9): MAP-D's p(minority) against JTT's error set, and
JTT's second stage with each detected set upweighted (worst-group / average test accuracy).

``grid.py`` (cells, checks), ``steps.py`` (ERM run, scores, second stage, tables),
``figures.py`` (Fig. 9), ``report.py``, ``cli.py`` and ``workflow/rules/groups.smk``.
"""

from __future__ import annotations

from typing import Any

from mapd.experiments import Family, lazy
from mapd.experiments.groups import grid
from mapd.paths import Layout, dataset_job, groups_retrain_job, seed_job


def jobs(config: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for d in grid.datasets(config):
        for s in grid.seeds(config):
            out += [("groups_erm", seed_job(d, s)), ("groups_scores", seed_job(d, s))]
            out += [("groups_retrain", groups_retrain_job(d, s, n)) for n in grid.detectors(config)]
        out.append(("groups_figures", dataset_job(d)))
    out.append(("groups_tables", "all"))
    return out


def targets(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    figs = [lay.figure(d, "fig9.png") for d in grid.datasets(config)]
    return [lay.groups_table("detection"), lay.groups_table("accuracy"), *figs]


def preflight(config: dict[str, Any]) -> None:
    grid.check(config)
    for d in grid.datasets(config):
        if grid.check_data(config, d, absent_ok=True):  # a host that can run it
            grid.check_weights(config, d)


def run(config: dict[str, Any]) -> None:
    from mapd.experiments.groups import steps

    lay = Layout.of(config)
    for d in grid.datasets(config):
        for s in grid.seeds(config):
            erm = lay.groups("erm", d, s)
            steps.erm(config, d, s, erm, lay.partial(erm))
            steps.scores(config, d, s, erm, lay.groups("scores", d, s))
            for n in grid.detectors(config):
                out = lay.groups("retrain", d, s, n)
                steps.retrain(config, d, s, n, lay.groups("scores", d, s), out, lay.partial(out))
    steps.tables(config, lay.groups_table("detection"), lay.groups_table("accuracy"))
    for d in grid.datasets(config):
        steps.figures(config, d, lay.figures(d))


def dvc_outs(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    kinds = ("groups_erm", "groups_scores", "groups_retrain")
    return [lay.folder(k) for k in kinds] + [
        lay.groups_table("detection"),
        lay.groups_table("accuracy"),
    ]


def dvc_plots(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lay = Layout.of(config)
    return {lay.figure(d, "fig9.png"): {} for d in grid.datasets(config)}


FAMILY = Family(
    name="groups",
    title="Minority groups",
    jobs=jobs,
    targets=targets,
    preflight=preflight,
    run=run,
    metrics=lazy("mapd.experiments.groups.report", "metrics"),
    sections=lazy("mapd.experiments.groups.report", "sections"),
    dvc_outs=dvc_outs,
    dvc_plots=dvc_plots,
)
