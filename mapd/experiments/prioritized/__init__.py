"""Prioritized training (paper Sec. 3.4, Fig. 8): online batch selection on the engine with
every scorer of :mod:`mapd.methods.selection` (uniform, highest loss, correct class, RHO-Loss,
MAP-D, each optionally class-balanced) over data set x scorer x seed.

``grid.py`` (the runs), ``steps.py`` (the pool, RHO-Loss's holdout model, runs, tables),
``figures.py`` (Fig. 8), ``report.py`` and ``workflow/rules/prioritized.smk``.
"""

from __future__ import annotations

from typing import Any

from mapd.experiments import Family, lazy
from mapd.experiments.prioritized import grid
from mapd.paths import Layout, dataset_job, prio_run_job, seed_job


def jobs(config: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [(d, s) for d in grid.datasets(config) for s in grid.seeds(config)]
    out = [("prio_data", seed_job(d, s)) for d, s in pairs]
    if grid.needs_holdout(config):
        out += [("prio_holdout", seed_job(d, s)) for d, s in pairs]
    out += [("prio_train", prio_run_job(c.dataset, c.scorer, c.seed)) for c in grid.cells(config)]
    out.append(("prio_table", "all"))
    out += [("prio_figures", dataset_job(d)) for d in grid.datasets(config)]
    return out


def targets(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    figs = [lay.figure(d, "fig8.png") for d in grid.datasets(config)]
    return [lay.prio_table(), lay.prio_table("curves"), *figs]


def preflight(config: dict[str, Any]) -> None:
    grid.check(config)


def run(config: dict[str, Any]) -> None:
    from mapd.experiments.prioritized import steps

    lay = Layout.of(config)
    for d in grid.datasets(config):
        for s in grid.seeds(config):
            steps.data(config, d, s, lay.prio("data", d, s))
            if grid.needs_holdout(config):
                out = lay.prio("holdout", d, s)
                steps.holdout(config, d, s, lay.prio("data", d, s), out, lay.partial(out))
    for c in grid.cells(config):
        out = lay.prio("run", c.dataset, c.seed, c.scorer)
        held = lay.prio("holdout", c.dataset, c.seed) if c.score == "rho_loss" else None
        steps.train(config, c, lay.prio("data", c.dataset, c.seed), out, lay.partial(out), held)
    steps.curves(config, lay.prio_table("curves"))
    steps.table(config, lay.prio_table("curves"), lay.prio_table())
    for d in grid.datasets(config):
        steps.figures(config, d, lay.prio_table("curves"), lay.prio_table(), lay.figures(d))


def dvc_outs(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    outs = [lay.folder("prio_data"), lay.folder("prio_run")]
    if grid.needs_holdout(config):
        outs.append(lay.folder("prio_holdout"))
    return [*outs, lay.prio_table("curves"), lay.prio_table()]


def dvc_plots(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lay = Layout.of(config)
    return {lay.figure(d, "fig8.png"): {} for d in grid.datasets(config)}


FAMILY = Family(
    name="prioritized",
    title="Prioritized training",
    jobs=jobs,
    targets=targets,
    preflight=preflight,
    run=run,
    metrics=lazy("mapd.experiments.prioritized.report", "metrics"),
    sections=lazy("mapd.experiments.prioritized.report", "sections"),
    dvc_outs=dvc_outs,
    dvc_plots=dvc_plots,
)
