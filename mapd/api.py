"""The small Python API: audit a data set in a few lines.

    from mapd import audit, load_dataset
    result = audit(load_dataset("digits", "train"), seed=0)
    result.metadata          # one row per example: p_<category> and the assigned category
    result.heldout["6-probe"]["accuracy"]

and :func:`run_audit`, the whole pipeline in one process for a config (what ``mapd audit``
runs; Snakemake runs the same steps as separate jobs).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mapd.config import dataset_settings, deep_merge, validate_config
from mapd.cscores import compute_cscores
from mapd.data import ImageDataset
from mapd.engine.run import train_trajectories
from mapd.experiments.audit.steps import assign_run, build_suite
from mapd.experiments.report import run_all
from mapd.methods import method_for
from mapd.probes import ProbeSuite


@dataclass
class AuditResult:
    suite: ProbeSuite
    loss: np.ndarray  # (N, T) float32, rows = suite.table rows
    correct: np.ndarray  # (N, T) bool
    metadata: pd.DataFrame  # per row: p_<category>, assigned
    heldout: dict[str, dict[str, Any]]  # per setting: accuracy, confusion
    metrics: dict[str, Any]


def audit(
    dataset: ImageDataset,
    *,
    test: ImageDataset | None = None,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
    cscores: np.ndarray | None = None,
    device: str = "auto",
    workdir: str | Path | None = None,
) -> AuditResult:
    """Audit an in-memory data set: probes, training with recorded curves, k-NN assignment.

    Args:
        dataset: training split (in memory).
        test: optional test split, evaluated after every epoch.
        settings: overrides of the config's ``defaults`` section, e.g.
            ``{"train": {"epochs": 10}, "probes": {"train_size": 25, "heldout_size": 25}}``.
        cscores: (N,) consistency scores for typical/atypical; estimated if None.
        workdir: checkpoint folder (resumable); a temporary one if None.
    """
    cfg = validate_config(
        {"seeds": [seed], "datasets": {dataset.name: {}}, "defaults": settings or {}}
    )
    s = dataset_settings(cfg, dataset.name)
    p = s["probes"]
    source = "given"
    if cscores is None and {"typical", "atypical"} & set(p["categories"]):
        cscores, source = compute_cscores(
            dataset, settings=s["cscores"], train=s["train"], seed=seed, device=device
        )
    suite = build_suite(dataset, s, seed=seed, cscores=cscores, cscore_source=source)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_trajectories(
            suite.images(dataset),
            suite.labels,
            num_classes=dataset.num_classes,
            train=s["train"],
            seed=seed,
            workdir=workdir or tmp,
            test_images=None if test is None else test.images,
            test_labels=None if test is None else test.labels,
            device=device,
            method=method_for(s),
        )
    metadata, held = assign_run(res.loss, suite, s, margin=res.margin)
    return AuditResult(suite, res.loss, res.correct, metadata, held["settings"], res.metrics)


def probe_sizes_for(n: int, n_source_categories: int) -> int:
    """Probes per category (train = held-out) so that probe sources take at most ~25% of data."""
    return int(max(5, min(250, n // (8 * max(n_source_categories, 1)))))


def run_audit(config: dict[str, Any], config_path: str | Path) -> Path:
    """Run every step of every active experiment family of ``config`` in this process (what
    ``mapd audit`` runs; Snakemake runs the same steps as separate jobs).

    Returns the path of the HTML report.
    """
    return run_all(config, config_path)


def imagefolder_config(
    root: str | Path, out: str | Path, *, seeds: list[int], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A config auditing the image tree/manifest at ``root``, probe sizes scaled to its size."""
    from mapd.categories import n_from_data
    from mapd.data import load_dataset

    options: dict[str, Any] = (
        {"manifest": str(root)} if str(root).endswith(".csv") else {"root": str(root)}
    )
    n = len(load_dataset("imagefolder", "train", **options))
    base = validate_config({"seeds": seeds, "datasets": {"imagefolder": {}}})
    cats = base["defaults"]["probes"]["categories"]
    size = probe_sizes_for(n, n_from_data(cats))
    defaults = deep_merge(
        {
            # probes as copies: every image keeps its own row and gets a verdict
            "probes": {"train_size": size, "heldout_size": size, "keep_sources": True},
            "cscores": {"method": "learning_speed"},
        },
        overrides or {},
    )
    return validate_config(
        {
            "name": "imagefolder-audit",
            "seeds": seeds,
            "results": str(out),
            "defaults": defaults,
            "datasets": {"imagefolder": {"options": options}},
        }
    )


def write_config(config: dict[str, Any], path: str | Path) -> None:
    from mapd.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
