"""The results layout: every path under ``results/`` is spelled here and nowhere else.

The pipeline steps, the Python API, the Snakemake rules (``workflow/rules/common.smk``) and the
generated ``dvc.yaml`` all take their paths from :class:`Layout`. A value left out of a call
stays a ``{wildcard}``, so the same method gives Snakemake its patterns::

    Layout("results").run("digits", 0)   -> results/runs/digits/seed0
    Layout("results").run()              -> results/runs/{dataset}/seed{seed}

Files *inside* an output folder (``loss.npy`` in a run, ...) belong to that folder's reader in
:mod:`mapd.outputs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# kind -> template relative to the results folder
TEMPLATES: dict[str, str] = {
    "summary": "data/{dataset}/summary.json",
    "cscores": "cscores/{dataset}.npz",
    "probes": "probes/{dataset}/seed{seed}",
    "run": "runs/{dataset}/seed{seed}",
    "assign": "assign/{dataset}/seed{seed}",
    "figures": "figures/{dataset}",
    # every training example ranked by how likely its label is wrong, merged over seeds
    "issues": "issues/{dataset}",
    "figure": "figures/{dataset}/{name}",
    "report": "report/index.html",
    "metrics": "metrics/{family}.json",
    "log": "logs/{step}/{job}.log",
    # Snakemake's `benchmark:` files: wall time and memory of every job (the report's table)
    "timing": "timings/{step}/{job}.tsv",
    # `mapd plan`: seconds per image of each model's training step on this host (calibration)
    "calibration": "plan/calibration.json",
    # content-addressed resolved configs, never rewritten (jobs read the one they were given)
    "config": "configs/{digest}.yaml",
    # in-progress state of an output (a run's checkpoint and partial trajectories): the output's
    # own path under partial/, outside the folders DVC owns, so `dvc repro` does not delete it
    "partial": "partial/{path}",
    # label-noise correction (mapd.experiments.noise); level in percent
    "noise_suite": "noise/suites/{dataset}/noise{level}/seed{seed}",
    "noise_run": "noise/runs/{dataset}/noise{level}/{method}/w{warmup}/seed{seed}",
    "noise_table": "noise/table.csv",
    # mislabel detection (mapd.experiments.detection); source e.g. symmetric20
    "det_suite": "detection/suites/{dataset}/{source}/seed{seed}",
    "det_run": "detection/runs/{dataset}/{source}/seed{seed}",
    "det_aum": "detection/aum/{dataset}/{source}/seed{seed}",
    "det_fold": "detection/folds/{dataset}/{source}/seed{seed}/fold{fold}",
    "det_scores": "detection/scores/{dataset}/{source}/seed{seed}",
    "det_table": "detection/table.csv",
    # prioritized training (mapd.experiments.prioritized); scorer e.g. mapd_balanced
    "prio_data": "prioritized/data/{dataset}/seed{seed}",
    "prio_holdout": "prioritized/holdout/{dataset}/seed{seed}",
    "prio_run": "prioritized/runs/{dataset}/{scorer}/seed{seed}",
    "prio_curves": "prioritized/curves.csv",
    "prio_table": "prioritized/table.csv",
    # minority groups (mapd.experiments.groups); detector e.g. jtt, mapd_minority
    "groups_erm": "groups/erm/{dataset}/seed{seed}",
    "groups_scores": "groups/scores/{dataset}/seed{seed}",
    "groups_retrain": "groups/retrain/{dataset}/{detector}/seed{seed}",
    "groups_detection": "groups/detection.csv",
    "groups_accuracy": "groups/accuracy.csv",
}


class _Keep(dict):
    """Format mapping that leaves missing keys as ``{key}`` (Snakemake wildcards)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class Layout:
    """Paths of one results folder. Every method returns a ``str``.

    Arguments left as ``None`` stay wildcards in the returned path.
    """

    root: str

    @classmethod
    def of(cls, config: dict) -> Layout:
        """The layout of a validated config (its ``results`` folder)."""
        return cls(str(config["results"]))

    def path(self, kind: str, /, **values: object) -> str:
        if kind not in TEMPLATES:
            raise KeyError(f"unknown results path kind {kind!r}; known: {sorted(TEMPLATES)}")
        given = _Keep({k: str(v) for k, v in values.items() if v is not None})
        return os.path.join(self.root, TEMPLATES[kind].format_map(given))

    # --- per data set / seed ------------------------------------------------------------------
    def summary(self, dataset: str | None = None) -> str:
        return self.path("summary", dataset=dataset)

    def cscores(self, dataset: str | None = None) -> str:
        return self.path("cscores", dataset=dataset)

    def probes(self, dataset: str | None = None, seed: int | str | None = None) -> str:
        return self.path("probes", dataset=dataset, seed=seed)

    def run(self, dataset: str | None = None, seed: int | str | None = None) -> str:
        return self.path("run", dataset=dataset, seed=seed)

    def assign(self, dataset: str | None = None, seed: int | str | None = None) -> str:
        return self.path("assign", dataset=dataset, seed=seed)

    def figures(self, dataset: str | None = None) -> str:
        return self.path("figures", dataset=dataset)

    def issues(self, dataset: str | None = None) -> str:
        """``label_issues.csv`` / ``.parquet`` of a data set (the audit)."""
        return self.path("issues", dataset=dataset)

    def figure(self, dataset: str | None, name: str) -> str:
        """One file of a data set's figures folder, e.g. ``figure("digits", "fig3.png")``."""
        return self.path("figure", dataset=dataset, name=name)

    def partial(self, output: str) -> str:
        """In-progress state of the output at path ``output`` (a path of this layout)."""
        rel = os.path.relpath(output, self.root)
        if rel.startswith(".."):
            raise ValueError(f"{output} is not under the results folder {self.root}")
        return self.path("partial", path=rel)

    # --- label-noise correction ---------------------------------------------------------------
    def noise_suite(
        self,
        dataset: str | None = None,
        level: int | str | None = None,
        seed: int | str | None = None,
    ) -> str:
        """The training set of one noise cell: noisy labels and the two probes (a probe suite)."""
        return self.path("noise_suite", dataset=dataset, level=level, seed=seed)

    def noise_run(
        self,
        dataset: str | None = None,
        level: int | str | None = None,
        method: str | None = None,
        warmup: int | str | None = None,
        seed: int | str | None = None,
    ) -> str:
        return self.path(
            "noise_run", dataset=dataset, level=level, method=method, warmup=warmup, seed=seed
        )

    def noise_table(self) -> str:
        return self.path("noise_table")

    # --- mislabel detection -------------------------------------------------------------------
    def det(
        self,
        kind: str,
        dataset: str | None = None,
        source: str | None = None,
        seed: int | str | None = None,
        fold: int | str | None = None,
    ) -> str:
        """A detection output: ``kind`` is suite, run, aum, fold or scores."""
        return self.path(f"det_{kind}", dataset=dataset, source=source, seed=seed, fold=fold)

    def det_table(self) -> str:
        return self.path("det_table")

    # --- minority groups ----------------------------------------------------------------------
    def groups(
        self,
        kind: str,
        dataset: str | None = None,
        seed: int | str | None = None,
        detector: str | None = None,
    ) -> str:
        """A minority-group output: ``kind`` is erm (the ERM run with train and validation
        curves), scores (every detector's scores) or retrain (the second stage of a detector)."""
        return self.path(f"groups_{kind}", dataset=dataset, seed=seed, detector=detector)

    def groups_table(self, kind: str) -> str:
        """``detection`` (detection metrics) or ``accuracy`` (worst-group / average) CSV."""
        return self.path(f"groups_{kind}")

    # --- prioritized training -----------------------------------------------------------------
    def prio(
        self,
        kind: str,
        dataset: str | None = None,
        seed: int | str | None = None,
        scorer: str | None = None,
    ) -> str:
        """A prioritized-training output: ``kind`` is data (the training rows with their noisy
        labels, the probes as copies, the holdout rows), holdout (the irreducible-loss model
        and its loss of every training row) or run (one selecting run)."""
        return self.path(f"prio_{kind}", dataset=dataset, seed=seed, scorer=scorer)

    def prio_table(self, kind: str = "table") -> str:
        """``table`` (one row per data set x scorer: accuracy, speed-up) or ``curves`` (test
        accuracy per epoch, step and second of every run) CSV."""
        return self.path(f"prio_{kind}")

    # --- whole run ------------------------------------------------------------------------------
    def report(self) -> str:
        return self.path("report")

    def metrics(self, family: str | None = None) -> str:
        """A family's headline numbers (DVC metrics)."""
        return self.path("metrics", family=family)

    def config(self, digest: str | None = None) -> str:
        return self.path("config", digest=digest)

    def log(self, step: str, job: str | None = None) -> str:
        return self.path("log", step=step, job=job)

    def timing(self, step: str, job: str | None = None) -> str:
        return self.path("timing", step=step, job=job)

    def calibration(self) -> str:
        return self.path("calibration")

    def folder(self, kind: str) -> str:
        """The top folder of an output kind: its path up to the first wildcard
        (``run`` -> ``results/runs``); for whole-folder declarations such as DVC outputs."""
        parts = []
        for part in TEMPLATES[kind].split("/"):
            if "{" in part:
                break
            parts.append(part)
        return os.path.join(self.root, *parts)


def noise_suite_job(
    dataset: str | None = None, level: int | str | None = None, seed: int | str | None = None
) -> str:
    """Log / timing name of a noise cell's training-set job: ``<dataset>/noise<level>/seed<S>``."""
    lay = Layout("")
    return os.path.relpath(lay.noise_suite(dataset, level, seed), lay.folder("noise_suite"))


def noise_run_job(
    dataset: str | None = None,
    level: int | str | None = None,
    method: str | None = None,
    warmup: int | str | None = None,
    seed: int | str | None = None,
) -> str:
    """Log / timing name of a noise run: ``<dataset>/noise<level>/<method>/w<warmup>/seed<S>``."""
    lay = Layout("")
    run = lay.noise_run(dataset, level, method, warmup, seed)
    return os.path.relpath(run, lay.folder("noise_run"))


def det_job(
    dataset: str | None = None, source: str | None = None, seed: int | str | None = None
) -> str:
    """Log / timing name of a detection cell's job: ``<dataset>/<source>/seed<S>``."""
    lay = Layout("")
    return os.path.relpath(lay.det("run", dataset, source, seed), lay.folder("det_run"))


def groups_retrain_job(
    dataset: str | None = None, seed: int | str | None = None, detector: str | None = None
) -> str:
    """Log / timing name of a second-stage run: ``<dataset>/seed<S>/<detector>``."""
    return f"{seed_job(dataset, seed)}/{'{detector}' if detector is None else detector}"


def prio_run_job(
    dataset: str | None = None, scorer: str | None = None, seed: int | str | None = None
) -> str:
    """Log / timing name of a selecting run: ``<dataset>/<scorer>/seed<S>``."""
    lay = Layout("")
    return os.path.relpath(lay.prio("run", dataset, seed, scorer), lay.folder("prio_run"))


def dataset_job(dataset: str | None = None) -> str:
    """Log / timing name of a per-data-set job: ``<dataset>`` (a wildcard when None)."""
    return "{dataset}" if dataset is None else str(dataset)


def seed_job(dataset: str | None = None, seed: int | str | None = None) -> str:
    """Log / timing name of a per-data-set-and-seed job: ``<dataset>/seed<seed>``."""
    return f"{dataset_job(dataset)}/seed{'{seed}' if seed is None else seed}"
