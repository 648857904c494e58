"""The pipeline steps, each with explicit inputs and outputs (the CLI and Snakemake call these).

Every step reads the validated config, writes its outputs atomically and logs progress to
stderr. Settings come only from the config; paths only from the arguments.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapd.assign import assign_metadata, heldout_accuracy
from mapd.config import dataset_settings, fingerprint
from mapd.cscores import compute_cscores, load_cscores_file, read_method, save_cscores
from mapd.data import ImageDataset, load_dataset
from mapd.engine.run import train_trajectories
from mapd.errors import ConfigError
from mapd.io import atomic_dir, load_npy, save_json, save_npy, save_table
from mapd.probes import ProbeSuite, build_probe_suite


def log(msg: str) -> None:
    print(f"[mapd {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_split(config: dict[str, Any], name: str, split: str) -> ImageDataset:
    """The configured data set's split; ``subset`` keeps a fixed random subset of training rows."""
    s = dataset_settings(config, name)
    ds = load_dataset(s["loader"], split, **s["options"])
    if split == "train" and s["subset"] and s["subset"] < len(ds):
        # the subset is the same for every seed: seeds vary probes and training, not the data
        rows = np.sort(np.random.default_rng(12345).choice(len(ds), size=s["subset"], replace=False))
        ds = ds.subset(rows)
        ds.info["subset"] = int(s["subset"])
    return ds


def data_summary(config: dict[str, Any], name: str, out: str | Path) -> dict[str, Any]:
    """Load every split of the data set, validate it, and write counts per class/group/split."""
    from mapd.data import get_spec

    s = dataset_settings(config, name)
    spec = get_spec(s["loader"])
    summary: dict[str, Any] = {"dataset": name, "loader": s["loader"], "description": spec.description,
                               "source": spec.source, "splits": {}}
    for split in spec.splits:
        ds = load_split(config, name, split)
        summary["splits"][split] = ds.summary()
        log(f"{name}/{split}: {len(ds)} examples, {ds.num_classes} classes")
    save_json(out, summary)
    return summary


def cscores(config: dict[str, Any], name: str, out: str | Path) -> str:
    s = dataset_settings(config, name)
    ds = load_split(config, name, "train")
    log(f"C-scores for {name} ({len(ds)} examples) by {s['cscores']['method']}")
    scores, source = compute_cscores(ds, settings=s["cscores"], train=s["train"], seed=0,
                                     device=config["device"], log=log)
    save_cscores(out, ds, scores, method=source)
    return source


def probes(config: dict[str, Any], name: str, seed: int, cscores_path: str | Path | None, out: str | Path) -> ProbeSuite:
    s = dataset_settings(config, name)
    p = s["probes"]
    ds = load_split(config, name, "train")
    scores, source = None, None
    if {"typical", "atypical"} & set(p["categories"]):
        if cscores_path is None:
            raise ConfigError("typical/atypical probes need --cscores")
        scores, source = load_cscores_file(cscores_path, ds), read_method(cscores_path)
    suite = build_probe_suite(
        ds, categories=p["categories"], train_size=p["train_size"], heldout_size=p["heldout_size"],
        seed=seed, cscores=scores, cscore_source=source, corrupted_std=p["corrupted_std"],
        ood_blur_kernel=p["ood_blur_kernel"], random_inputs_kind=p["random_inputs"],
    )
    suite.meta["settings"] = p
    suite.save(out)
    log(f"probe suite for {name} seed {seed}: {suite.meta['n_data']} data rows + {suite.meta['n_probes']} probes -> {out}")
    return suite


def train(config: dict[str, Any], name: str, seed: int, probes_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Train on the audit set and write loss.npy, correct.npy, metrics.json, model.pt to ``out``.

    In-progress state lives in ``<out>.partial/`` and is resumed when the step is re-run.
    """
    s = dataset_settings(config, name)
    suite = ProbeSuite.load(probes_dir)
    ds = load_split(config, name, "train")
    test = load_split(config, name, "test") if "test" in _splits(s) else None
    images = suite.images(ds)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    log(f"training {s['train']['model']} on {name} seed {seed}: {len(images)} rows, {s['train']['epochs']} epochs")
    t0 = time.perf_counter()
    result = train_trajectories(
        images, suite.labels, num_classes=ds.num_classes, train=s["train"], seed=seed, workdir=partial,
        test_images=None if test is None else test.images, test_labels=None if test is None else test.labels,
        device=config["device"], log=log,
    )
    metrics = {**result.metrics, "dataset": name, "seed": seed, "wall_s": time.perf_counter() - t0,
               "settings_fingerprint": fingerprint(s["train"])}
    with atomic_dir(out) as tmp:
        save_npy(tmp / "loss.npy", result.loss)
        save_npy(tmp / "correct.npy", result.correct)
        save_json(tmp / "metrics.json", metrics)
        torch.save(result.model.state_dict(), tmp / "model.pt")
    shutil.rmtree(partial, ignore_errors=True)
    log(f"trained {name} seed {seed}: final test accuracy {metrics['final_test_acc']}")
    return metrics


def _splits(settings: dict[str, Any]) -> tuple[str, ...]:
    from mapd.data import get_spec

    return get_spec(settings["loader"]).splits


def assign(config: dict[str, Any], name: str, probes_dir: str | Path, run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    s = dataset_settings(config, name)
    a = s["assign"]
    suite = ProbeSuite.load(probes_dir)
    loss = load_npy(Path(run_dir) / "loss.npy")
    built = set(suite.categories)
    held: dict[str, Any] = {"k": a["k"], "settings": {}}
    for setting, cats in a["settings"].items():
        if set(cats) <= built:
            held["settings"][setting] = heldout_accuracy(loss, suite.table, categories=cats, k=a["k"])
            log(f"{name}: held-out probe accuracy ({setting}) = {held['settings'][setting]['accuracy']:.3f}")
    meta = assign_metadata(loss, suite.table, categories=a["settings"][a["use"]], k=a["k"])
    held["use"] = a["use"]
    with atomic_dir(out) as tmp:
        save_table(tmp / "metadata.parquet", meta)
        save_table(tmp / "metadata.csv", meta)
        save_json(tmp / "heldout.json", held)
    counts = meta[meta.role == "data"]["assigned"].value_counts().to_dict()
    log(f"{name}: assigned categories of the data rows: {counts}")
    return held
