"""``mapd plan``: the compute budget of a config's whole grid, estimated from measurements.

Two measurements, both named in the output:

- **A measured run** (a finished results folder, e.g. the default config's): Snakemake's timing
  file of every job (``timings/<step>/<job>.tsv``) and the job's log. A training job's log says
  its rows and epochs and, per epoch, its training and recording seconds; so a job's time splits
  into start-up (job seconds minus its epochs), training, and recording (as a ratio to training).
- **A calibration** on this host's device: for each model and input size of the target grid,
  the seconds of one training step per image (forward and backward of a small random batch).

A training job of the target is then: calibrated seconds per image x images x epochs, plus the
measured recording ratio and start-up of the same step. Other jobs: their measured start-up
plus the rest scaled by the images ratio. GPU-hours count the training jobs (x their GPUs); the
wall time packs them on G GPUs longest first (dependencies ignored: the training jobs dominate
and are independent across seeds and cells).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapd.config import dataset_settings
from mapd.errors import ConfigError, MapdError
from mapd.experiments import active, family
from mapd.experiments.report import shared_jobs
from mapd.io import load_json, save_json
from mapd.paths import Layout

TRAINED = re.compile(r"training (\S+) \(\S+\) on \S+ seed \d+: (\d+) rows .*?, (\d+) epochs")
EPOCH = re.compile(r"epoch \d+/\d+ .*\(train ([\d.]+)s, record ([\d.]+)s\)")
# steps that train models (fit_run or the engine): estimated from the calibration
TRAINING_STEP = re.compile(r"(^|_)(train|erm|retrain|aum|fold|cscores)$")
# a family's steps are prefixed with its short name; its train section overrides the data set's
FAMILY_OF_STEP = {
    "noise_": "noise",
    "det_": "detection",
    "prio_": "prioritized",
    "groups_": "groups",
}


@dataclass
class Measured:
    step: str
    job: str
    seconds: float
    model: str | None = None  # training jobs: what the log says
    rows: int | None = None
    epochs: int | None = None
    train_s: float = 0.0  # the epochs' training and recording seconds
    record_s: float = 0.0


@dataclass
class Estimate:
    family: str
    step: str
    job: str
    seconds: float | None
    gpus: int
    how: str


def read_timing(path: str | Path) -> float:
    """Wall seconds of a Snakemake benchmark file (its ``s`` column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ConfigError(f"{path}: not a Snakemake timing file (no 's' column)")
    return float(rows[-1]["s"])


def measurements(measured: dict[str, Any]) -> dict[str, list[Measured]]:
    """Every timed job of the measured config that ran, per step."""
    lay = Layout.of(measured)
    out: dict[str, list[Measured]] = {}
    for _, step, job in _jobs(measured):
        timing = Path(lay.timing(step, job))
        if not timing.is_file():
            continue
        m = Measured(step, job, read_timing(timing))
        log = Path(lay.log(step, job))
        text = log.read_text(errors="replace") if log.is_file() else ""
        hit = TRAINED.search(text)
        if hit:
            m.model, m.rows, m.epochs = hit.group(1), int(hit.group(2)), int(hit.group(3))
        for e in EPOCH.finditer(text):
            m.train_s += float(e.group(1))
            m.record_s += float(e.group(2))
        out.setdefault(step, []).append(m)
    if not out:
        raise ConfigError(f"no timing files under {lay.folder('timing')}: run the measured config")
    return out


def _jobs(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(family, step, job) of every job of a config ('data' for the shared ones)."""
    jobs = [("data", s, j) for s, j in shared_jobs(config)]
    for name in active(config):
        jobs += [(name, s, j) for s, j in family(name).jobs(config)]
    return jobs


def _train_section(config: dict[str, Any], step: str, dataset: str) -> dict[str, Any]:
    train = dict(dataset_settings(config, dataset)["train"])
    for prefix, fam in FAMILY_OF_STEP.items():
        if step.startswith(prefix) and isinstance(config.get(fam, {}).get("train"), dict):
            train.update(config[fam]["train"])
    return train


def train_rows(config: dict[str, Any], dataset: str) -> int | None:
    """Training examples of a data set: its subset, else the official size of its split, else
    a count of its files (None when neither is known, e.g. the data are not on this host)."""
    from mapd.data import get_spec

    s = dataset_settings(config, dataset)
    if s.get("subset"):
        return int(s["subset"])
    spec = get_spec(s["loader"])
    if spec.sizes and "train" in spec.sizes:
        return int(spec.sizes["train"])
    if spec.count is not None:
        try:
            return int(spec.count("train", **s.get("options", {})))
        except (MapdError, OSError):
            return None
    return None


def _shape(config: dict[str, Any], dataset: str) -> tuple[int, int]:
    """(side, channels) of a data set's inputs: train/image_size, else the loader's native
    shape (in-memory data sets)."""
    import sys

    from mapd.data import get_spec

    s = dataset_settings(config, dataset)
    spec = get_spec(s["loader"])
    native = getattr(sys.modules[spec.loader.__module__], "IMAGE_SHAPE", None)
    side = s["train"]["image_size"] or (native[0] if native else None)
    if side is None:  # e.g. scikit-learn's digits: only loading them tells
        from mapd.data import load_dataset

        images = load_dataset(s["loader"], "train", **s.get("options", {})).images
        return int(images.shape[1]), int(images.shape[-1])
    return int(side), int(native[-1]) if native else 3


_CALIBRATED: dict[str, float] = {}  # key -> seconds per image; kept in Layout.calibration()


def calibrate(train: dict[str, Any], dataset: str, config: dict[str, Any], device: str) -> float:
    """Seconds of one training step per image for the data set's model on ``device``: forward
    and backward of a random batch (4 images, 1 at 128 px and up), timed after a warm-up step."""
    import time

    import torch

    from mapd.engine.trainer import pick_device
    from mapd.models import build_model

    side, channels = _shape(config, dataset)
    options = {k: v for k, v in train["model_options"].items() if k != "weights_file"}
    options.pop("pretrained", None)  # the arithmetic does not depend on the weights
    dev = pick_device(device)
    key = f"{train['model']}|{options}|{side}|{channels}|{dev}"
    if key not in _CALIBRATED:
        torch.manual_seed(0)
        model = build_model(
            train["model"], num_classes=10, in_channels=channels, image_size=side, **options
        ).to(dev)
        batch = 1 if side >= 128 else 4  # small: the report computes it on CPU hosts too
        x = torch.rand(batch, channels, side, side, device=dev)
        y = torch.zeros(batch, dtype=torch.int64, device=dev)
        times = []
        for _ in range(2):  # the first step pays one-off costs (allocation, kernel choice)
            t0 = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        _CALIBRATED[key] = times[-1] / batch
    return _CALIBRATED[key]


def plan(
    target: dict[str, Any], measured: dict[str, Any], *, device: str
) -> tuple[list[Estimate], list[str]]:
    """Estimates of every job of ``target`` and the notes on what was measured."""
    meas = measurements(measured)
    cache = Path(Layout.of(measured).calibration())
    if cache.is_file():  # an earlier calibration of this host (the models do not change)
        _CALIBRATED.update(load_json(cache))
    try:
        return _plan(target, measured, meas, device)
    finally:
        save_json(cache, _CALIBRATED)


def _plan(
    target: dict[str, Any], measured: dict[str, Any], meas: dict[str, list[Measured]], device: str
) -> tuple[list[Estimate], list[str]]:
    startup = min(m.seconds - m.train_s - m.record_s for ms in meas.values() for m in ms)
    notes = [f"start-up of a job: {startup:.1f} s (the quickest measured job)"]
    for step, ms in sorted(meas.items()):
        total = sum(m.seconds for m in ms)
        kind = f", {ms[0].model}: {ms[0].rows} rows x {ms[0].epochs} epochs" if ms[0].model else ""
        notes.append(f"{step}: {len(ms)} measured job(s), {total:.1f} s in all{kind}")
    out = []
    for fam, step, job in _jobs(target):
        dataset = job.split("/")[0]
        ms = meas.get(step, [])
        n = train_rows(target, dataset) if dataset in target["datasets"] else None
        if n is None and dataset in target["datasets"]:
            why = f"{dataset}: training-set size unknown here (no official size, no data)"
            out.append(Estimate(fam, step, job, None, 0, why))
            continue
        if TRAINING_STEP.search(step) and n is not None:
            out.append(_training(target, fam, step, job, n, ms, device))
            continue
        base = [m for m in ms if m.job.split("/")[0] in measured["datasets"]]
        if not ms:
            out.append(Estimate(fam, step, job, None, 0, "no measured job of this step"))
        elif n is None or not base:  # not per data set (tables, the report): as measured
            sec = sum(m.seconds for m in ms) / len(ms)
            out.append(Estimate(fam, step, job, sec, 0, f"as measured ({len(ms)} job(s))"))
        else:
            m = base[0]
            ratio = n / (train_rows(measured, m.job.split("/")[0]) or n)
            sec = startup + max(m.seconds - startup, 0.0) * ratio
            how = (
                f"start-up {startup:.1f} s + (measured {m.seconds:.1f} s of {m.job} - start-up) "
                f"x images ratio {ratio:.3g}"
            )
            out.append(Estimate(fam, step, job, sec, 0, how))
    return out, notes


def _training(
    target: dict[str, Any],
    fam: str,
    step: str,
    job: str,
    n: int,
    ms: list[Measured],
    device: str,
) -> Estimate:
    dataset = job.split("/")[0]
    train = _train_section(target, step, dataset)
    cs = dataset_settings(target, dataset)["cscores"]
    epochs = train["epochs"]
    if step == "cscores":
        if cs["method"] == "file":
            how = "C-scores read from a file: as measured"
            return Estimate(fam, step, job, _measured_mean(ms), 0, how)
        epochs = cs["epochs"] * cs["runs_per_ratio"] * sum(cs["ratios"])  # subset trainings
    per = calibrate(train, dataset, target, device)
    sec = per * n * epochs
    how = f"calibrated {per * 1e3:.3g} ms/image ({train['model']}) x {n} images x {epochs:g} epochs"
    timed = [m for m in ms if m.train_s > 0]
    if timed:
        m = timed[0]
        ratio = m.record_s / m.train_s
        overhead = max(m.seconds - m.train_s - m.record_s, 0.0)
        sec = sec * (1 + ratio) + overhead
        how += f" x (1 + recording {ratio:.2f} measured in {m.job}) + start-up {overhead:.0f} s"
    else:
        how += " (no measured job of this step: training only)"
    gpus = 0 if target["device"] == "cpu" else train["processes"]
    return Estimate(fam, step, job, sec, gpus, how)


def _measured_mean(ms: list[Measured]) -> float | None:
    return sum(m.seconds for m in ms) / len(ms) if ms else None


def wall_seconds(estimates: list[Estimate], gpus: int) -> float:
    """GPU jobs packed on ``gpus`` devices longest first (a k-GPU job takes k of them)."""
    load = [0.0] * max(gpus, 1)
    for e in sorted(
        (e for e in estimates if e.gpus and e.seconds), key=lambda e: -(e.seconds or 0)
    ):
        k = min(e.gpus, len(load))
        idle = sorted(range(len(load)), key=load.__getitem__)[:k]
        start = max(load[i] for i in idle)
        for i in idle:
            load[i] = start + (e.seconds or 0)
    return max(load)


def tables(
    target: dict[str, Any], measured: dict[str, Any], gpus: int, device: str = "auto"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Per family (and all) jobs, GPU-hours, CPU-hours, wall hours on ``gpus`` GPUs and the
    steps left unestimated; per step its first job's estimate and how it was scaled; notes."""
    import torch

    estimates, notes = plan(target, measured, device=device)
    cuda = torch.cuda.is_available() and device != "cpu"
    where = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} threads"
    notes.append(
        f"calibrated on this host ({where}): the hours are hours of that device; "
        "run `mapd plan` on the GPU host for GPU figures"
    )
    summary = []
    for fam in [*sorted({e.family for e in estimates}), "all"]:
        es = [e for e in estimates if fam in ("all", e.family)]
        summary.append(
            {
                "family": fam,
                "jobs": len(es),
                "GPU-h": round(sum((e.seconds or 0) * e.gpus for e in es) / 3600, 1),
                "CPU-h": round(sum(e.seconds or 0 for e in es if not e.gpus) / 3600, 2),
                f"wall h on {gpus} GPUs": round(wall_seconds(es, gpus) / 3600, 1),
                "unestimated": ", ".join(sorted({e.step for e in es if e.seconds is None})),
            }
        )
    steps, seen = [], set()
    for e in estimates:
        if e.step not in seen:
            seen.add(e.step)
            hours = None if e.seconds is None else float(f"{e.seconds / 3600:.3g}")
            steps.append({"step": e.step, "job": e.job, "hours": hours, "how": e.how})
    return summary, steps, notes


def render(
    target_path: str,
    target: dict[str, Any],
    measured_path: str,
    measured: dict[str, Any],
    gpus: int,
    device: str = "auto",
) -> str:
    """The plan as text (``mapd plan``)."""
    summary, steps, notes = tables(target, measured, gpus, device)
    lines = [
        f"Compute budget of {target_path} on {gpus} GPU(s)",
        f"measured run: {measured_path} ({Layout.of(measured).folder('timing')} and its logs)",
        *[f"  {n}" for n in notes],
        "",
    ]
    cols = list(summary[0])
    lines.append("  ".join(f"{c:>10s}" if i else f"{c:12s}" for i, c in enumerate(cols)))
    for row in summary:
        cells = [f"{row[c]!s:>10s}" if i else f"{row[c]!s:12s}" for i, c in enumerate(cols)]
        lines.append("  ".join(cells).rstrip())
    lines += ["", "How each step was scaled (its first job):"]
    for r in steps:
        t = "-" if r["hours"] is None else f"{r['hours']} h"
        lines.append(f"  {r['step']:14s} {r['job']:36s} {t:>10s}  {r['how']}")
    return "\n".join(lines)


def report_section(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's compute-budget section: ``report/plan/config`` planned from this run."""
    target = config["report"]["plan"]["config"]
    if target is None:
        return []
    heading = "Compute budget (mapd plan)"
    if not Path(target).is_file():
        text = f"{target} not found in {Path.cwd()}: run the workflow from the repository root"
        return [{"heading": heading, "text": text}]
    import pandas as pd

    from mapd.config import load_config

    try:
        summary, steps, notes = tables(
            load_config(target), config, config["report"]["plan"]["gpus"]
        )
    except MapdError as e:
        return [{"heading": heading, "text": f"no plan: {e}"}]
    a, b = pd.DataFrame(summary), pd.DataFrame(steps)
    a.attrs["caption"] = f"{target}: expected compute per experiment family"
    b.attrs["caption"] = "Which measurement each estimate comes from and how it was scaled"
    text = f"The grid of {target}, estimated from this run's timings. " + "; ".join(notes) + "."
    return [{"heading": heading, "text": text, "tables": [a, b]}]
