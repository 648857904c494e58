"""Label-noise correction (paper Sec. 3.3; Figs. 6, 7 and 11): every method of Fig. 6 on the one
engine over data set x noise level x method x seed, MAP-D and M-DYR-H also at Fig. 7's warm-ups.

``grid.py`` (the runs), ``steps.py`` (noisy training sets, runs, the table), ``figures.py``,
``report.py``, ``paper.py`` (the paper's numbers) and ``workflow/rules/noise.smk``.
"""

from __future__ import annotations

from typing import Any

from mapd.experiments import Family, lazy
from mapd.experiments.noise import grid
from mapd.paths import Layout, dataset_job, noise_run_job, noise_suite_job


def jobs(config: dict[str, Any]) -> list[tuple[str, str]]:
    out = [("noise_suite", noise_suite_job(*key)) for key in grid.suites(config)]
    out += [
        ("noise_train", noise_run_job(c.dataset, c.level, c.method, c.warmup, c.seed))
        for c in grid.cells(config)
    ]
    out.append(("noise_table", "all"))
    out += [("noise_figures", dataset_job(d)) for d in grid.datasets(config)]
    return out


def targets(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    figs = [
        lay.figure(d, f"{f}.png") for d in grid.datasets(config) for f in grid.figures_of(config)
    ]
    return [lay.noise_table(), *figs]


def preflight(config: dict[str, Any]) -> None:
    from mapd.categories import check_probe_budget
    from mapd.config import dataset_settings
    from mapd.data import split_size

    grid.check(config)
    size = config["noise"]["probes"]["size"]
    for d in grid.datasets(config):
        s = dataset_settings(config, d)
        n = split_size(s["loader"], "train", **s["options"])
        if n is not None and size:
            n = min(n, s["subset"]) if s["subset"] else n
            check_probe_budget(["random_sample", "random_labels"], per_cat=size, n=n, name=d)


def run(config: dict[str, Any]) -> None:
    from mapd.experiments.noise import steps

    lay = Layout.of(config)
    for key in grid.suites(config):
        steps.suite(config, *key, lay.noise_suite(*key))
    for c in grid.cells(config):
        out = lay.noise_run(c.dataset, c.level, c.method, c.warmup, c.seed)
        ref = grid.reference(c)
        ref_dir = None
        if ref is not None:
            ref_dir = lay.noise_run(ref.dataset, ref.level, ref.method, ref.warmup, ref.seed)
        suite_dir = lay.noise_suite(c.dataset, c.level, c.seed)
        steps.train(config, c, suite_dir, out, lay.partial(out), ref_dir)
    steps.table(config, lay.noise_table())
    for d in grid.datasets(config):
        steps.figures(config, d, lay.noise_table(), lay.figures(d))


def dvc_outs(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    return [lay.folder("noise_suite"), lay.folder("noise_run"), lay.noise_table()]


def dvc_plots(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lay = Layout.of(config)
    return {
        lay.figure(d, f"{f}.png"): {}
        for d in grid.datasets(config)
        for f in grid.figures_of(config)
    }


FAMILY = Family(
    name="noise",
    title="Label-noise correction",
    jobs=jobs,
    targets=targets,
    preflight=preflight,
    run=run,
    metrics=lazy("mapd.experiments.noise.report", "metrics"),
    sections=lazy("mapd.experiments.noise.report", "sections"),
    dvc_outs=dvc_outs,
    dvc_plots=dvc_plots,
)
