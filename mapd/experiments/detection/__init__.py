"""Finding the mislabeled examples: every detector of the score registry on the same runs, over
data set x noise source x seed, against the true noisy labels (AUROC, AP, precision / recall /
F1 at the true noise rate and at each detector's own decision, and its extra training cost).

``grid.py`` (the cells), ``steps.py`` (training sets, the main, AUM and K-fold runs, scores,
table), ``figures.py`` (ROC / PR curves), ``report.py``, ``cli.py`` and
``workflow/rules/detection.smk``.
"""

from __future__ import annotations

from typing import Any

from mapd.experiments import Family, lazy
from mapd.experiments.detection import grid
from mapd.paths import Layout, dataset_job, det_job


def jobs(config: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for c in grid.cells(config):
        job = det_job(c.dataset, c.source, c.seed)
        out += [("det_suite", job), ("det_train", job), ("det_scores", job)]
        if grid.needs_aum_run(config):
            out.append(("det_aum", job))
        if grid.needs_folds(config):
            out += [("det_fold", f"{job}/fold{k}") for k in grid.folds(config)]
    out.append(("det_table", "all"))
    out += [("det_figures", dataset_job(d)) for d in grid.datasets(config)]
    return out


def targets(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    figs = [lay.figure(d, "detection.png") for d in grid.datasets(config)]
    return [lay.det_table(), *figs]


def preflight(config: dict[str, Any]) -> None:
    from mapd.categories import check_probe_budget
    from mapd.config import dataset_settings
    from mapd.data import split_size

    grid.check(config)
    p = config["detection"]["probes"]
    for d in grid.datasets(config):
        s = dataset_settings(config, d)
        n = split_size(s["loader"], "train", **s["options"])
        if n is not None:
            n = min(n, s["subset"]) if s["subset"] else n
            check_probe_budget(p["categories"], per_cat=p["size"], n=n, name=d)


def run(config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    lay = Layout.of(config)
    for c in grid.cells(config):

        def d(kind: str, c: grid.Cell = c, **kw: Any) -> str:
            return lay.det(kind, c.dataset, c.source, c.seed, **kw)

        cs = lay.cscores(c.dataset) if _needs_cscores(config) else None
        if cs is not None and not _exists(cs):
            from mapd.experiments.audit.steps import cscores

            cscores(config, c.dataset, cs)
        steps.suite(config, c, cs, d("suite"))
        steps.main_run(config, c, d("suite"), d("run"), lay.partial(d("run")))
        aum = None
        if grid.needs_aum_run(config):
            aum = d("aum")
            steps.aum_run(config, c, d("suite"), aum, lay.partial(aum))
        folds = []
        if grid.needs_folds(config):
            for k in grid.folds(config):
                folds.append(d("fold", fold=k))
                steps.fold_run(config, c, k, d("suite"), folds[-1], lay.partial(folds[-1]))
        steps.scores(config, c, d("suite"), d("run"), aum, folds, d("scores"))
    steps.table(config, lay.det_table())
    for name in grid.datasets(config):
        steps.figures(config, name, lay.figures(name))


def _needs_cscores(config: dict[str, Any]) -> bool:
    return bool({"typical", "atypical"} & set(config["detection"]["probes"]["categories"]))


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def dvc_outs(config: dict[str, Any]) -> list[str]:
    lay = Layout.of(config)
    kinds = ("det_suite", "det_run", "det_aum", "det_fold", "det_scores")
    return [lay.folder(k) for k in kinds] + [lay.det_table()]


def dvc_plots(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lay = Layout.of(config)
    return {lay.figure(d, "detection.png"): {} for d in grid.datasets(config)}


FAMILY = Family(
    name="detection",
    title="Finding the mislabeled examples",
    jobs=jobs,
    targets=targets,
    preflight=preflight,
    run=run,
    metrics=lazy("mapd.experiments.detection.report", "metrics"),
    sections=lazy("mapd.experiments.detection.report", "sections"),
    dvc_outs=dvc_outs,
    dvc_plots=dvc_plots,
)
