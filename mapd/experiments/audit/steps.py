"""The audit's pipeline steps (paper Secs. 2-3.2): C-scores, probe suites, training with recorded
learning curves, k-NN assignment with the held-out check, and Figs. 3 / 4.

Each file-level step (``cscores``, ``probes``, ``train``, ``assign``, ``figures``) reads its inputs,
calls the in-memory core (``build_suite``, ``train_suite``, ``assign_run``) and writes its output
atomically; :func:`mapd.api.audit` calls the same cores on an in-memory data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapd.assign import assign_metadata, fit_rows, heldout_accuracy
from mapd.config import dataset_settings
from mapd.cscores import compute_cscores, load_cscores_file, read_method, save_cscores
from mapd.data import ImageDataset
from mapd.engine.stream import FileRows
from mapd.errors import ConfigError
from mapd.methods import method_for
from mapd.outputs import Assignment, Run
from mapd.pipeline import eval_split, fit_run, load_split, log
from mapd.probes import ProbeSuite, build_probe_suite
from mapd.scores import SCORES, Inputs, compute_score, probe_references

# --- in-memory cores (shared with mapd.api.audit) ---------------------------------------------


def build_suite(
    ds: ImageDataset,
    settings: dict[str, Any],
    *,
    seed: int,
    cscores: np.ndarray | None,
    cscore_source: str | None,
) -> ProbeSuite:
    """The probe suite of ``ds`` built with a data set's effective settings (config or API)."""
    p, train = settings["probes"], settings["train"]
    suite = build_probe_suite(
        ds,
        categories=p["categories"],
        train_size=p["train_size"],
        heldout_size=p["heldout_size"],
        seed=seed,
        cscores=cscores,
        cscore_source=cscore_source,
        corrupted_std=p["corrupted_std"],
        ood_blur_kernel=p["ood_blur_kernel"],
        random_inputs_kind=p["random_inputs"],
        # file-backed data: probes are materialised once, as the streaming source's eval view
        probe_size=train["image_size"],
        probe_resize=train["resize"],
        workers=train["workers"],
        keep_sources=p["keep_sources"],
    )
    suite.meta["settings"] = p
    return suite


def suite_scores(
    loss: np.ndarray,
    table: pd.DataFrame,
    settings: dict[str, Any],
    categories: list[str],
    *,
    margin: np.ndarray | None = None,
) -> pd.DataFrame:
    """The configured per-example scores (``assign/scores``) of every row: ``score_<name>``.

    Scores that need probes (MAP-D's k-NN) are given the ``probe_train`` rows of ``categories``
    (the assignment's setting) as references, the suspect ones being those of the score's
    ``suspect`` categories and the assignment's ``k``; such a score is left out (and said so)
    when the setting has none of its suspect categories. ``margin`` (N, T), where the run
    recorded it, goes to the scores that use it (and the probes' rows of it with them).
    """
    setting_rows, _ = fit_rows(table, categories, "probe_train")
    probe_rows = np.flatnonzero((table["role"] == "probe_train").to_numpy())
    category = table["category"].to_numpy()
    out = table[["row"]].copy()
    for name in settings["assign"]["scores"]:
        opts = settings["scores"][name]
        inputs = Inputs(loss=loss, margin=margin)
        if "probe_suspect" in SCORES[name].needs:
            # the k-NN share reads the assignment's probes; a score naming its clean
            # categories takes those (and its suspect ones) from every training probe
            candidates = probe_rows if "clean" in opts else setting_rows
            ref_rows, suspect = probe_references(category, candidates, opts)
            if suspect.all() or not suspect.any():
                have = sorted(set(category[candidates]))
                log(
                    f"score {name} left out: it needs probes of {opts['suspect']} and of "
                    f"{opts.get('clean', 'other categories')}; the suite has {have}"
                )
                continue
            inputs = Inputs(
                loss=loss,
                margin=margin,
                probe_loss=loss[ref_rows],
                probe_margin=None if margin is None else margin[ref_rows],
                probe_suspect=suspect,
            )
            opts = {**opts, "k": settings["assign"]["k"]}  # MAP-D's one k (assign/k)
        out[f"score_{name}"] = compute_score(name, inputs, **opts)
    return out


def assign_run(
    loss: np.ndarray,
    suite: ProbeSuite,
    settings: dict[str, Any],
    *,
    margin: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Metadata of every row (Eqs. 6-7) plus the configured scores, and the held-out check of
    every setting whose categories were built (Fig. 4)."""
    a = settings["assign"]
    built = set(suite.categories)
    held: dict[str, Any] = {"k": a["k"], "settings": {}, "use": a["use"]}
    for setting, cats in a["settings"].items():
        if set(cats) <= built:
            held["settings"][setting] = heldout_accuracy(
                loss, suite.table, categories=cats, k=a["k"]
            )
    cats = a["settings"][a["use"]]
    meta = assign_metadata(loss, suite.table, categories=cats, k=a["k"])
    scores = suite_scores(loss, suite.table, settings, cats, margin=margin)
    meta = meta.merge(scores, on="row", how="left", validate="one_to_one")
    return meta, held


# --- file-level steps (the CLI and Snakemake call these) --------------------------------------


def cscores(config: dict[str, Any], name: str, out: str | Path) -> str:
    s = dataset_settings(config, name)
    ds = load_split(config, name, "train")
    log(f"C-scores for {name} ({len(ds)} examples) by {s['cscores']['method']}")
    scores, source = compute_cscores(
        ds, settings=s["cscores"], train=s["train"], seed=0, device=config["device"], log=log
    )
    save_cscores(out, ds, scores, method=source)
    return source


def probes(
    config: dict[str, Any], name: str, seed: int, cscores_path: str | Path | None, out: str | Path
) -> ProbeSuite:
    s = dataset_settings(config, name)
    ds = load_split(config, name, "train")
    scores, source = None, None
    if {"typical", "atypical"} & set(s["probes"]["categories"]):
        if cscores_path is None:
            raise ConfigError("typical/atypical probes need --cscores")
        scores, source = load_cscores_file(cscores_path, ds), read_method(cscores_path)
    suite = build_suite(ds, s, seed=seed, cscores=scores, cscore_source=source)
    suite.save(out)
    log(
        f"probe suite for {name} seed {seed}: {suite.meta['n_data']} data rows + "
        f"{suite.meta['n_probes']} probes -> {out}"
    )
    return suite


def train(
    config: dict[str, Any],
    name: str,
    seed: int,
    probes_dir: str | Path,
    out: str | Path,
    partial: str | Path,
) -> dict[str, Any]:
    """Train on the audit set; write the run folder ``out`` (resumable from ``partial``)."""
    s = dataset_settings(config, name)
    suite = ProbeSuite.load(probes_dir)
    ds = load_split(config, name, "train")
    if ds.images is None:  # file-backed: data rows are decoded from their files every epoch
        _check_probe_size(suite, s["train"], name)
        images: np.ndarray | FileRows = suite.stream_rows(ds)
    else:
        images = suite.images(ds)
    return fit_run(
        images,
        suite.labels,
        config=config,
        name=name,
        seed=seed,
        method=method_for(s),
        out=out,
        partial=partial,
        test=eval_split(config, name),
        num_classes=ds.num_classes,
    )


def _check_probe_size(suite: ProbeSuite, train: dict[str, Any], name: str) -> None:
    """Streamed probes must have been materialised at the size the data rows stream at."""
    want = (train["image_size"], train["resize"] or train["image_size"])
    have = (suite.meta.get("probe_size"), suite.meta.get("probe_resize"))
    if have != want:
        raise ConfigError(
            f"{name}: the probe suite was materialised with image_size/resize {list(have)} but "
            f"train/image_size, train/resize are {list(want)}: rebuild the probes (mapd probes)"
        )


def assign(
    config: dict[str, Any], name: str, probes_dir: str | Path, run_dir: str | Path, out: str | Path
) -> dict[str, Any]:
    s = dataset_settings(config, name)
    suite = ProbeSuite.load(probes_dir)
    run = Run.load(run_dir, rows=len(suite))
    margin = np.asarray(run.margin) if (Path(run_dir) / "margin.npy").is_file() else None
    meta, held = assign_run(run.finite_loss(), suite, s, margin=margin)
    for setting, res in held["settings"].items():
        log(f"{name}: held-out probe accuracy ({setting}) = {res['accuracy']:.3f}")
    Assignment.save(out, metadata=meta, heldout=held)
    counts = meta[meta.role == "data"]["assigned"].value_counts().to_dict()
    log(f"{name}: assigned categories of the data rows: {counts}")
    return held


def figures(
    probe_dirs: list[str], run_dirs: list[str], assign_dirs: list[str], out: str | Path
) -> dict[str, Any]:
    from mapd.experiments.audit.figures import write_fig3, write_fig4

    if not (len(probe_dirs) == len(run_dirs) == len(assign_dirs)):
        raise ConfigError("figures: give one --probes, --runs and --assign directory per seed")
    write_fig3(probe_dirs, run_dirs, out)
    res = write_fig4(probe_dirs, run_dirs, assign_dirs, out)
    log(f"figures 3 and 4 -> {out}")
    return res
