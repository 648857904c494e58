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
from mapd.engine.stream import FileRows
from mapd.errors import ConfigError, MissingSplit
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
        rows = np.sort(
            np.random.default_rng(12345).choice(len(ds), size=s["subset"], replace=False)
        )
        ds = ds.subset(rows)
        ds.info["subset"] = int(s["subset"])
    return ds


def optional_split(config: dict[str, Any], name: str, split: str) -> ImageDataset | None:
    """The split, or None when this copy of the data set has none (an image folder without val/)."""
    try:
        return load_split(config, name, split)
    except MissingSplit as e:
        log(f"{name}: no {split} split ({e})")
        return None


def data_summary(config: dict[str, Any], name: str, out: str | Path) -> dict[str, Any]:
    """Load every split of the data set, validate it, and write counts per class/group/split."""
    from mapd.data import get_spec

    s = dataset_settings(config, name)
    spec = get_spec(s["loader"])
    summary: dict[str, Any] = {
        "dataset": name,
        "loader": s["loader"],
        "description": spec.description,
        "source": spec.source,
        "splits": {},
    }
    for split in spec.splits:
        ds = (
            optional_split(config, name, split)
            if split != "train"
            else load_split(config, name, split)
        )
        if ds is None:
            continue
        summary["splits"][split] = ds.summary()
        log(f"{name}/{split}: {len(ds)} examples, {ds.num_classes} classes")
    save_json(out, summary)
    return summary


def cscores(config: dict[str, Any], name: str, out: str | Path) -> str:
    s = dataset_settings(config, name)
    ds = load_split(config, name, "train")
    log(f"C-scores for {name} ({len(ds)} examples) by {s['cscores']['method']}")
    scores, source = compute_cscores(
        ds, settings=s["cscores"], train=s["train"], seed=0, device=config["device"], log=log
    )
    save_cscores(out, ds, scores, method=source)
    return source


def suite_from_settings(
    ds: ImageDataset,
    settings: dict[str, Any],
    *,
    seed: int,
    cscores: np.ndarray | None,
    cscore_source: str | None,
) -> ProbeSuite:
    """The probe suite of ``ds`` built with a data set's effective settings (config or API)."""
    p, train = settings["probes"], settings["train"]
    return build_probe_suite(
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
        probe_size=train.get("image_size"),
        probe_resize=train.get("resize"),
        workers=train.get("workers", 0),
    )


def probes(
    config: dict[str, Any], name: str, seed: int, cscores_path: str | Path | None, out: str | Path
) -> ProbeSuite:
    s = dataset_settings(config, name)
    p = s["probes"]
    ds = load_split(config, name, "train")
    scores, source = None, None
    if {"typical", "atypical"} & set(p["categories"]):
        if cscores_path is None:
            raise ConfigError("typical/atypical probes need --cscores")
        scores, source = load_cscores_file(cscores_path, ds), read_method(cscores_path)
    suite = suite_from_settings(ds, s, seed=seed, cscores=scores, cscore_source=source)
    suite.meta["settings"] = p
    suite.save(out)
    log(
        f"probe suite for {name} seed {seed}: {suite.meta['n_data']} data rows + "
        f"{suite.meta['n_probes']} probes -> {out}"
    )
    return suite


def train(
    config: dict[str, Any], name: str, seed: int, probes_dir: str | Path, out: str | Path
) -> dict[str, Any]:
    """Train on the audit set and write loss.npy, correct.npy, metrics.json, model.pt to ``out``.

    In-progress state lives in ``<out>.partial/`` and is resumed when the step is re-run.
    """
    s = dataset_settings(config, name)
    suite = ProbeSuite.load(probes_dir)
    ds = load_split(config, name, "train")
    # the evaluation split: test, or val where a data set publishes no test labels (ImageNet)
    test = None
    for split in ("test", "val"):
        if split in _splits(s) and (test := optional_split(config, name, split)) is not None:
            break
    streaming = ds.images is None
    if streaming:  # file-backed: data rows are decoded from their files every epoch
        _check_probe_size(suite, s["train"], name)
        images: np.ndarray | FileRows = suite.stream_rows(ds)
    else:
        images = suite.images(ds)
    test_images: np.ndarray | FileRows | None = None
    if test is not None:
        test_images = test.images if test.images is not None else FileRows.from_dataset(test)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    how = "streamed from files" if streaming else "in memory"
    log(
        f"training {s['train']['model']} on {name} seed {seed}: {len(images)} rows ({how}), "
        f"{s['train']['epochs']} epochs"
    )
    t0 = time.perf_counter()
    result = train_trajectories(
        images,
        suite.labels,
        num_classes=ds.num_classes,
        train=s["train"],
        seed=seed,
        workdir=partial,
        test_images=test_images,
        test_labels=None if test is None else test.labels,
        device=config["device"],
        log=log,
    )
    if test is not None and result.test_correct is not None and "group" in test.attrs:
        result.metrics["test_groups"] = group_accuracy(result.test_correct, test.attrs["group"])
        g = result.metrics["test_groups"]
        log(f"{name}: test accuracy {g['average']:.4f}, worst group {g['worst_group']:.4f}")
    metrics = {
        **result.metrics,
        "dataset": name,
        "seed": seed,
        "wall_s": time.perf_counter() - t0,
        "settings_fingerprint": fingerprint(s["train"]),
    }
    with atomic_dir(out) as tmp:
        save_npy(tmp / "loss.npy", result.loss)
        save_npy(tmp / "correct.npy", result.correct)
        save_json(tmp / "metrics.json", metrics)
        torch.save(result.model.state_dict(), tmp / "model.pt")
    shutil.rmtree(partial, ignore_errors=True)
    log(f"trained {name} seed {seed}: final test accuracy {metrics['final_test_acc']}")
    return metrics


def _check_probe_size(suite: ProbeSuite, train: dict[str, Any], name: str) -> None:
    """Streamed probes must have been materialised at the size the data rows stream at."""
    want = train.get("image_size")
    want = (want, train.get("resize") or want)
    have = (suite.meta.get("probe_size"), suite.meta.get("probe_resize"))
    if have != want:
        raise ConfigError(
            f"{name}: the probe suite was materialised with image_size/resize {list(have)} but "
            f"train/image_size, train/resize are {list(want)}: rebuild the probes (mapd probes)"
        )


def group_accuracy(correct: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Average and worst-group accuracy (the spurious-correlation metrics of JTT and MAP-D)."""
    correct, groups = np.asarray(correct, dtype=bool), np.asarray(groups)
    per = {str(g): float(correct[groups == g].mean()) for g in np.unique(groups)}
    counts = {str(g): int((groups == g).sum()) for g in np.unique(groups)}
    return {
        "average": float(correct.mean()),
        "worst_group": min(per.values()),
        "per_group": per,
        "counts": counts,
    }


def _splits(settings: dict[str, Any]) -> tuple[str, ...]:
    from mapd.data import get_spec

    return get_spec(settings["loader"]).splits


def assign(
    config: dict[str, Any], name: str, probes_dir: str | Path, run_dir: str | Path, out: str | Path
) -> dict[str, Any]:
    s = dataset_settings(config, name)
    a = s["assign"]
    suite = ProbeSuite.load(probes_dir)
    loss = load_npy(Path(run_dir) / "loss.npy")
    built = set(suite.categories)
    held: dict[str, Any] = {"k": a["k"], "settings": {}}
    for setting, cats in a["settings"].items():
        if set(cats) <= built:
            held["settings"][setting] = heldout_accuracy(
                loss, suite.table, categories=cats, k=a["k"]
            )
            log(
                f"{name}: held-out probe accuracy ({setting}) = "
                f"{held['settings'][setting]['accuracy']:.3f}"
            )
    meta = assign_metadata(loss, suite.table, categories=a["settings"][a["use"]], k=a["k"])
    held["use"] = a["use"]
    with atomic_dir(out) as tmp:
        save_table(tmp / "metadata.parquet", meta)
        save_table(tmp / "metadata.csv", meta)
        save_json(tmp / "heldout.json", held)
    counts = meta[meta.role == "data"]["assigned"].value_counts().to_dict()
    log(f"{name}: assigned categories of the data rows: {counts}")
    return held


def layout(config: dict[str, Any], name: str, seed: int | None = None) -> dict[str, Path]:
    """The documented ``results/`` layout (the Snakemake rules use the same function)."""
    r = Path(config["results"])
    out = {
        "summary": r / "data" / name / "summary.json",
        "cscores": r / "cscores" / f"{name}.npz",
        "figures": r / "figures" / name,
    }
    if seed is not None:
        out.update(
            probes=r / "probes" / name / f"seed{seed}",
            run=r / "runs" / name / f"seed{seed}",
            assign=r / "assign" / name / f"seed{seed}",
        )
    return out


def figures(
    probe_dirs: list[str], run_dirs: list[str], assign_dirs: list[str], out: str | Path
) -> None:
    from mapd.figures import write_fig3, write_fig4

    if not (len(probe_dirs) == len(run_dirs) == len(assign_dirs)):
        raise ConfigError("figures: give one --probes, --runs and --assign directory per seed")
    write_fig3(probe_dirs, run_dirs, out)
    res = write_fig4(probe_dirs, run_dirs, assign_dirs, out)
    log(f"figures 3 and 4 -> {out}")
    return res


def report(
    config: dict[str, Any], config_path: str | Path, out: str | Path, benchmark_files: list[str]
) -> None:
    from mapd.report import build_audit_report

    datasets = {}
    for name in config["datasets"]:
        paths = [layout(config, name, s) for s in config["seeds"]]
        datasets[name] = {
            "probes": [p["probes"] for p in paths],
            "runs": [p["run"] for p in paths],
            "assign": [p["assign"] for p in paths],
            "figures": layout(config, name)["figures"],
        }
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="mapd-surfaced-")
    for name in datasets:
        datasets[name]["surfaced"] = surfaced_gallery(config, name, Path(tmp.name) / f"{name}.png")
    present = [f for f in benchmark_files if Path(f).is_file()]
    if len(present) < len(benchmark_files):
        log(
            f"report: {len(benchmark_files) - len(present)} step benchmark file(s) absent; "
            "their times are not shown"
        )
    build_audit_report(
        out,
        config_path=config_path,
        datasets=datasets,
        benchmark_files=present,
        title=config["report"]["title"],
    )
    tmp.cleanup()
    save_json(Path(out).with_name("metrics.json"), audit_metrics(config))
    log(f"report -> {Path(out).resolve()}")


def surfaced_gallery(
    config: dict[str, Any], name: str, out_png: Path, max_classes: int = 10
) -> list[tuple[str, str]]:
    """Paper Figs. 1/5: per assigned category (rows) and class (columns) the training example
    with the highest probability of that category (first seed). Empty for file-backed sets."""
    from mapd.io import load_table
    from mapd.report import gallery_png

    seed = config["seeds"][0]
    paths = layout(config, name, seed)
    ds = load_split(config, name, "train")
    if ds.images is None:
        return []
    suite = ProbeSuite.load(paths["probes"])
    meta = load_table(paths["assign"] / "metadata.parquet")
    data = meta[meta["role"] == "data"]
    cats = [c[2:] for c in meta.columns if c.startswith("p_")]
    classes = list(range(min(ds.num_classes, max_classes)))
    cells, labels = (
        [],
        [],
    )  # a full grid: an empty cell where no example has that category and class
    blank = np.full(ds.images.shape[1:], 255, dtype=np.uint8)
    for cat in cats:
        pool = data[data["assigned"] == cat]
        for k in classes:
            cand = pool[pool["label"] == k]
            if len(cand):
                best = cand.sort_values(f"p_{cat}", ascending=False, kind="stable").iloc[0]
                orig = suite.table["orig_index"].to_numpy()[int(best["row"])]
                cells.append(ds.images[_positions_of(ds, np.array([orig]))[0]])
                labels.append(f"{cat}\n{ds.classes[k]} p={best[f'p_{cat}']:.2f}")
            else:
                cells.append(blank)
                labels.append(f"{cat}\n{ds.classes[k]}: none")
    if not cells:
        return []
    gallery_png(
        np.stack(cells),
        labels,
        out_png,
        ncols=len(classes),
        title="Training examples surfaced per assigned category (rows) and class (columns)",
    )
    caption = (
        f"Examples surfaced by MAP-D (cf. Figs. 1 and 5), seed {seed}: for each assigned category "
        "and class, the training example with the highest probability of that category"
    )
    return [(str(out_png), caption)]


def _positions_of(ds: ImageDataset, orig_index: np.ndarray) -> np.ndarray:
    lookup = {int(i): p for p, i in enumerate(ds.index)}
    return np.array([lookup[int(i)] for i in orig_index], dtype=np.int64)


def audit_metrics(config: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers per data set (mean and std over seeds): held-out probe accuracy per
    setting and final test accuracy. DVC tracks this file as the pipeline's metrics."""
    from mapd.io import load_json

    out: dict[str, Any] = {}
    for name in config["datasets"]:
        held: dict[str, list[float]] = {}
        test: list[float] = []
        worst: list[float] = []
        for seed in config["seeds"]:
            paths = layout(config, name, seed)
            for setting, res in load_json(paths["assign"] / "heldout.json")["settings"].items():
                held.setdefault(setting, []).append(res["accuracy"])
            run_metrics = load_json(paths["run"] / "metrics.json")
            acc = run_metrics.get("final_test_acc")
            if "test_groups" in run_metrics:
                worst.append(run_metrics["test_groups"]["worst_group"])
            if acc is not None:
                test.append(acc)
        entry = {
            f"heldout_{k}": {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v)}
            for k, v in held.items()
        }
        if test:
            entry["test_acc"] = {
                "mean": float(np.mean(test)),
                "std": float(np.std(test)),
                "seeds": len(test),
            }
        if worst:
            entry["test_worst_group_acc"] = {
                "mean": float(np.mean(worst)),
                "std": float(np.std(worst)),
                "seeds": len(worst),
            }
        out[name] = entry
    return out
