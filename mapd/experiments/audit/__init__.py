"""The MAP-D audit (paper Secs. 2-3.2): probe suites -> training with recorded learning curves ->
k-NN metadata assignment -> Figs. 3 and 4, galleries (Figs. 1, 2, 5) and the report section.

It is also the template of an experiment family: ``steps.py`` (pipeline steps), ``figures.py``
and ``galleries.py`` (figures), ``report.py`` (report section and metrics), this file (the
:class:`~mapd.experiments.Family`), and ``workflow/rules/audit.smk``.
"""

from __future__ import annotations

from typing import Any

from mapd.config import dataset_settings
from mapd.errors import ConfigError
from mapd.experiments import Family, lazy
from mapd.paths import Layout, dataset_job, seed_job


def datasets(config: dict[str, Any]) -> list[str]:
    """The audited data sets: ``audit/datasets``, or every data set when it is empty."""
    return list(config["audit"]["datasets"] or config["datasets"])


def jobs(config: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for d in datasets(config):
        out += [
            ("cscores", dataset_job(d)),
            ("figures", dataset_job(d)),
            ("issues", dataset_job(d)),
        ]
        for s in config["seeds"]:
            out += [(step, seed_job(d, s)) for step in ("probes", "train", "assign")]
    return out


def targets(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    out = [lay.figure(d, f"fig{n}.png") for d in datasets(config) for n in (3, 4)]
    out += [lay.issues(d) for d in datasets(config)]
    return out + [lay.assign(d, s) for d in datasets(config) for s in config["seeds"]]


def preflight(config: dict[str, Any]) -> None:
    """Probe sizes against the training data's size, known without loading it."""
    from mapd.categories import check_probe_budget
    from mapd.data import split_size

    if unknown := [n for n in datasets(config) if n not in config["datasets"]]:
        raise ConfigError(f"audit/datasets: {unknown} are not keys of datasets")
    for name in datasets(config):
        s = dataset_settings(config, name)
        n = split_size(s["loader"], "train", **s["options"])
        if n is None:
            continue
        if s["subset"]:
            n = min(n, s["subset"])
        p = s["probes"]
        per_cat = p["train_size"] + p["heldout_size"]
        check_probe_budget(p["categories"], per_cat=per_cat, n=n, name=name)


def run(config: dict[str, Any]) -> None:
    from mapd.experiments.audit import steps
    from mapd.experiments.audit.issues import issues

    lay = Layout.of(config)
    for name in datasets(config):
        cs = None
        if {"typical", "atypical"} & set(dataset_settings(config, name)["probes"]["categories"]):
            cs = lay.cscores(name)
            steps.cscores(config, name, cs)
        for seed in config["seeds"]:
            steps.probes(config, name, seed, cs, lay.probes(name, seed))
            steps.train(
                config,
                name,
                seed,
                lay.probes(name, seed),
                lay.run(name, seed),
                lay.partial(lay.run(name, seed)),
            )
            steps.assign(
                config, name, lay.probes(name, seed), lay.run(name, seed), lay.assign(name, seed)
            )
        per_seed = (
            [lay.probes(name, s) for s in config["seeds"]],
            [lay.run(name, s) for s in config["seeds"]],
            [lay.assign(name, s) for s in config["seeds"]],
        )
        steps.figures(*per_seed, lay.figures(name))
        issues(config, name, *per_seed, lay.issues(name))


def dvc_outs(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    kinds = ("summary", "cscores", "probes", "run", "assign", "issues")
    return [lay.folder(kind) for kind in kinds]


def dvc_plots(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lay = Layout.of(config)
    plots: dict[str, dict[str, Any]] = {}
    for d in datasets(config):
        plots[lay.figure(d, "fig3.png")] = {}
        plots[lay.figure(d, "fig4.png")] = {}
        plots[lay.figure(d, "fig3.csv")] = {"x": "epoch", "y": "accuracy_mean"}
    return plots


FAMILY = Family(
    name="audit",
    title="MAP-D audit",
    jobs=jobs,
    targets=targets,
    preflight=preflight,
    run=run,
    metrics=lazy("mapd.experiments.audit.report", "metrics"),
    sections=lazy("mapd.experiments.audit.report", "sections"),
    dvc_outs=dvc_outs,
    dvc_plots=dvc_plots,
)
