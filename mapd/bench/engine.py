"""Throughput of the training engine vs a conventional PyTorch loop (``mapd bench``).

Measured configurations, all on the same model, data, batch size and optimiser:

- ``engine_none`` / ``engine_online`` / ``engine_eval``: the engine (:func:`train_trajectories`)
  with trajectory recording off, from the training forward pass, and by an eval-mode pass over
  the (plain) training set after every epoch; ``engine_eval_augment`` records with the
  training augmentation applied in that pass, as the authors' code did.
- ``conventional_w<k>``: a torchvision ``Dataset`` + ``DataLoader`` (``k`` worker processes)
  with PIL transforms (reflect-padded random crop, horizontal flip, ``ToTensor``,
  ``Normalize``) and, after every epoch, an eval pass over the training set through a second
  ``DataLoader`` that stores every example's loss and correctness (the authors' code also
  recorded through a DataLoader). ``conventional_w<k>_eval_augment`` is the same with the
  training transforms in the recording pass, ``conventional_w<k>_noeval`` the training
  passes alone (for reference); all three come from the same epochs, each pass timed alone.

Both loops use the same precision (fp32; bf16 autocast on CUDA when ``amp``). Memory layout
differs on purpose: the engine runs channels_last (its ``train.channels_last`` default) and
folds BatchNorm into the convs for its recording pass (:func:`mapd.models.fold_batchnorm`); the
conventional loop keeps PyTorch's default contiguous layout and the plain eval-mode model, as
textbook code (and the authors') does. ``conventional_channels_last=True`` gives it channels_last
too, to separate the layout's share of the speed-up from the data pipeline's.

First ``settle_epochs`` untimed engine epochs let the process settle: on the 2-core test machine
an epoch got ~10 % faster over the first ~40 s of a process, which would otherwise favour
whichever configuration runs last. Then each configuration runs ``warmup_epochs + epochs``
epochs; only the last ``epochs`` are timed
(``time.perf_counter``, CUDA synchronised). An epoch's time is its training pass plus its
recording pass; checkpointing (engine) is excluded on both sides. Throughput is
``n / median epoch seconds``; every epoch's time is kept in the JSON. The targets compare
like with like: ``engine_eval`` against the fastest ``conventional_w<k>``.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from mapd.config import section
from mapd.engine.augment import channel_stats
from mapd.engine.run import train_trajectories
from mapd.engine.trainer import TrainSettings, pick_device
from mapd.errors import ConfigError
from mapd.io import save_json
from mapd.models import build_model

TARGETS = {"online_overhead_max": 0.05, "eval_overhead_max": 0.35, "speedup_min": 1.5}
CROP_PADDING = 4
SPREAD_LIMIT = 1.25  # slowest / fastest timed epoch of one configuration on a quiet machine
NUM_CLASSES = 10
# Optimiser settings shared by both loops (the values do not affect speed).
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


def run_engine_benchmark(
    *,
    out_dir: str | os.PathLike,
    n: int = 10_000,
    epochs: int = 3,
    warmup_epochs: int = 1,
    settle_epochs: int = 8,
    model: str = "small_cnn",
    batch_size: int = 128,
    image_size: int = 32,
    seed: int = 0,
    data: str = "synthetic",
    cifar10_root: str | os.PathLike | None = None,
    num_workers: Sequence[int] = (0, 2),
    eval_batch_size: int | None = None,
    repeats: int = 1,
    threads: int | None = None,
    device: str = "auto",
    conventional_channels_last: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time the engine (each recording mode) and a conventional loop; write ``engine.json``.

    Args:
        out_dir: where ``engine.json`` is written (atomically).
        n: training examples.
        epochs: timed epochs per configuration and repeat (after the warm-up).
        warmup_epochs: untimed epochs first (allocator, worker start-up, caches).
        settle_epochs: untimed engine epochs (no recording) before any configuration.
        model: a :func:`mapd.models.build_model` name.
        batch_size: training batch size.
        image_size: side of the square images (synthetic data only; CIFAR-10 is 32).
        seed: data, model initialisation and shuffling seed.
        data: ``"synthetic"`` (uniform random uint8 (n, S, S, 3) images, 10 random labels;
            timing does not depend on content) or ``"cifar10"`` (the first n training images).
        cifar10_root: directory holding ``cifar-10-batches-py/`` (needed for ``"cifar10"``;
            re-encoded copies are accepted).
        num_workers: ``DataLoader`` worker counts tried for the conventional loop; the fastest
            is the baseline.
        eval_batch_size: batch size of both loops' recording passes (None = the engine's
            default, :attr:`TrainSettings.eval_batch_size`).
        repeats: run every configuration this many times, in turn (spreads drifting machine
            load over all of them); the timed epochs of all repeats are pooled.
        threads: torch intra-op threads while measuring (None = torch's default). On a
            machine shared with other jobs, 1 avoids OpenMP barrier stalls that slow
            multi-threaded runs down many times and unevenly.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        conventional_channels_last: run the conventional loop in channels_last as well
            (an ablation; default: PyTorch's contiguous layout).
        log: progress sink (default: stderr).

    Returns:
        The dict written to ``out_dir/engine.json``: ``configs`` (per configuration the
        per-epoch seconds and images/s), ``overheads`` {online, eval, eval_augment}
        (recording seconds over training seconds of the same run),
        ``overheads_vs_engine_none`` (all three against ``engine_none``),
        ``speedup_vs_conventional`` (``engine_eval`` over the fastest ``conventional_w<k>``)
        and the other ``speedups``, ``targets``, ``passed``, ``timing_quality`` (flags a busy
        machine), ``machine`` and ``settings``.

    Raises:
        ConfigError: an out-of-range option, or ``data="cifar10"`` without a root.
    """
    eval_bs = (
        TrainSettings.from_config().eval_batch_size if eval_batch_size is None else eval_batch_size
    )
    _validate(
        n=n,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        settle_epochs=settle_epochs,
        batch_size=batch_size,
        image_size=image_size,
        eval_batch_size=eval_bs,
        repeats=repeats,
        threads=1 if threads is None else threads,
        data=data,
        root=cifar10_root,
        num_workers=num_workers,
    )
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    dev = pick_device(device)
    images, labels = _load_data(data, n=n, image_size=image_size, seed=seed, root=cifar10_root)
    train = {
        "model": model,
        "epochs": warmup_epochs + epochs,
        "batch_size": batch_size,
        "lr": LR,
        "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY,
        "crop_padding": CROP_PADDING,
        "flip": True,
        "eval_batch_size": eval_bs,
        "channels_last": True,
    }
    engine_modes = {
        "engine_none": {"record": "none"},
        "engine_online": {"record": "online"},
        "engine_eval": {"record": "eval", "record_augment": False},
        "engine_eval_augment": {"record": "eval", "record_augment": True},
    }
    load_start = _loadavg()
    configs: dict[str, dict[str, Any]] = {}
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        machine = _machine_info(dev, model, image_size)
        if settle_epochs:
            say(f"bench engine: settling ({settle_epochs} untimed epochs)")
            _time_engine(
                images,
                labels,
                train=train | {"epochs": settle_epochs, "record": "none"},
                seed=seed,
                device=dev,
                warmup_epochs=settle_epochs,
            )
        for rep in range(repeats):
            for name, mode in engine_modes.items():
                say(f"bench engine: {name} (repeat {rep + 1}/{repeats})")
                timing = _time_engine(
                    images,
                    labels,
                    train=train | mode,
                    seed=seed,
                    device=dev,
                    warmup_epochs=warmup_epochs,
                )
                _pool(configs, name, timing)
            for workers in num_workers:
                say(f"bench engine: conventional loop, num_workers={workers} (repeat {rep + 1})")
                timings = _time_conventional(
                    images,
                    labels,
                    train=train,
                    seed=seed,
                    device=dev,
                    num_workers=workers,
                    warmup_epochs=warmup_epochs,
                    channels_last=conventional_channels_last,
                )
                for suffix, timing in timings.items():
                    _pool(configs, f"conventional_w{workers}{suffix}", timing)
    finally:
        torch.set_num_threads(threads_before)
    load_end = _loadavg()

    for cfg in configs.values():
        cfg["images_per_s"] = n / statistics.median(cfg["epoch_s"])
        cfg["images_per_s_best"] = n / min(cfg["epoch_s"])
        cfg["images_per_s_mean"] = n * len(cfg["epoch_s"]) / sum(cfg["epoch_s"])
        cfg["spread"] = max(cfg["epoch_s"]) / min(cfg["epoch_s"])
    # Other jobs on the machine show up as uneven epochs; flag them rather than trust them.
    max_spread = max(cfg["spread"] for cfg in configs.values())

    def seconds(name: str) -> float:
        return statistics.median(configs[name]["epoch_s"])

    def ips(name: str) -> float:
        return configs[name]["images_per_s"]

    def best_conventional(suffix: str) -> str:
        return max((f"conventional_w{w}{suffix}" for w in num_workers), key=ips)

    baselines = {
        "eval": best_conventional(""),
        "noeval": best_conventional("_noeval"),
        "eval_augment": best_conventional("_eval_augment"),
    }
    # Against the run without recording; runs differ by a few percent on a quiet machine too.
    vs_none = {
        mode: (seconds(f"engine_{mode}") - seconds("engine_none")) / seconds("engine_none")
        for mode in ("online", "eval", "eval_augment")
    }

    def record_share(name: str) -> float:
        # recording time over training time of the same epochs: no drift between runs
        return statistics.median(configs[name]["record_s"]) / statistics.median(
            configs[name]["train_s"]
        )

    overheads = {
        mode: record_share(f"engine_{mode}") for mode in ("online", "eval", "eval_augment")
    }
    speedup = ips("engine_eval") / ips(baselines["eval"])
    passed = {
        "online_overhead": overheads["online"] <= TARGETS["online_overhead_max"],
        "eval_overhead": overheads["eval"] <= TARGETS["eval_overhead_max"],
        "speedup": speedup >= TARGETS["speedup_min"],
    }
    passed["all"] = all(passed.values())
    result = {
        "benchmark": "engine",
        "statistic": "images_per_s = n / median of the timed epochs' seconds (training pass + "
        "recording pass, checkpointing excluded); warm-up epochs excluded",
        "settings": {
            "n": n,
            "epochs": epochs,
            "warmup_epochs": warmup_epochs,
            "settle_epochs": settle_epochs,
            "repeats": repeats,
            "threads": threads,
            "model": model,
            "batch_size": batch_size,
            "eval_batch_size": eval_bs,
            "image_size": image_size,
            "seed": seed,
            "data": data,
            "cifar10_root": None if cifar10_root is None else str(cifar10_root),
            "num_workers": list(num_workers),
            "engine_layout": "channels_last; recording pass with BatchNorm folded into the convs",
            "conventional_channels_last": conventional_channels_last,
            "augmentation": f"random crop {image_size} after reflect padding {CROP_PADDING}, "
            "horizontal flip, per-channel normalisation",
            "recording_pass": "eval-mode pass over the training set: plain images "
            "('eval' configs) or with the training augmentation ('eval_augment' configs, "
            "the authors' protocol)",
            "optimizer": {
                "name": "sgd",
                "lr": LR,
                "momentum": MOMENTUM,
                "weight_decay": WEIGHT_DECAY,
                "schedule": "cosine",
            },
        },
        "machine": machine | {"loadavg_start": load_start, "loadavg_end": load_end},
        "configs": configs,
        "baseline": baselines["eval"],
        "baselines": baselines,
        "overheads": overheads,
        "overheads_definition": "median recording seconds over median training seconds of the "
        "same run's epochs (online: the recording ops inside the training pass, timed by the "
        "engine; eval: the recording pass); overheads_vs_engine_none compares whole epochs "
        "with the run without recording instead, which includes drift between runs",
        "overheads_vs_engine_none": vs_none,
        "speedup_vs_conventional": speedup,
        "speedups": {
            "eval": speedup,
            "eval_augment": ips("engine_eval_augment") / ips(baselines["eval_augment"]),
            "online_vs_conventional_eval": ips("engine_online") / ips(baselines["eval"]),
            "train_only": ips("engine_none") / ips(baselines["noeval"]),
        },
        "targets": dict(TARGETS),
        "passed": passed,
        "timing_quality": {
            "max_spread": max_spread,
            "spread_limit": SPREAD_LIMIT,
            "noisy": max_spread > SPREAD_LIMIT,
            "note": "spread = slowest / fastest timed epoch of a configuration; above the "
            "limit the machine was busy with other work and the numbers are unreliable",
        },
    }
    save_json(Path(out_dir) / "engine.json", result)
    say(
        f"bench engine: recording overhead online {overheads['online']:+.1%}, "
        f"eval {overheads['eval']:+.1%}; engine {speedup:.2f}x the conventional loop "
        f"({baselines['eval']})"
        + (
            f"; NOISY timings (an epoch spread of {max_spread:.2f}x: the machine was busy)"
            if max_spread > SPREAD_LIMIT
            else ""
        )
    )
    return result


def _pool(configs: dict[str, dict[str, Any]], name: str, timing: dict[str, Any]) -> None:
    """Add one run's timing to ``configs[name]``, appending the per-epoch lists of repeats."""
    if name not in configs:
        configs[name] = timing
        return
    for key, value in timing.items():
        if isinstance(value, list):
            configs[name][key] = configs[name][key] + value


# --- inputs ---------------------------------------------------------------------------------


def _validate(
    *,
    n: int,
    epochs: int,
    warmup_epochs: int,
    settle_epochs: int,
    batch_size: int,
    image_size: int,
    eval_batch_size: int,
    repeats: int,
    threads: int,
    data: str,
    root: str | os.PathLike | None,
    num_workers: Sequence[int],
) -> None:
    for name, value, low in (
        ("n", n, 1),
        ("epochs", epochs, 1),
        ("warmup_epochs", warmup_epochs, 0),
        ("settle_epochs", settle_epochs, 0),
        ("batch_size", batch_size, 1),
        ("image_size", image_size, 8),
        ("eval_batch_size", eval_batch_size, 1),
        ("repeats", repeats, 1),
        ("threads", threads, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"bench engine: {name} must be an int >= {low}, got {value!r}")
    if data not in ("synthetic", "cifar10"):
        raise ConfigError(f"bench engine: data must be 'synthetic' or 'cifar10', got {data!r}")
    if data == "cifar10":
        if root is None:
            raise ConfigError("bench engine: data='cifar10' needs cifar10_root")
        if image_size != 32:
            raise ConfigError(
                f"bench engine: CIFAR-10 images are 32x32, got image_size {image_size}"
            )
        if n > 50_000:
            raise ConfigError(f"bench engine: CIFAR-10 has 50000 training images, got n={n}")
    if not num_workers or any(
        isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in num_workers
    ):
        raise ConfigError(
            f"bench engine: num_workers must be a non-empty list of ints >= 0, got {num_workers!r}"
        )


def _load_data(
    data: str, *, n: int, image_size: int, seed: int, root: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, S, S, 3) images and int64 (n,) labels."""
    if data == "cifar10":
        from mapd.data import load_dataset

        ds = load_dataset("cifar10", "train", root=root, reencoded_ok=True)
        return np.ascontiguousarray(ds.images[:n]), ds.labels[:n]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, image_size, image_size, 3), dtype=np.uint8)
    return images, rng.integers(0, NUM_CLASSES, size=n).astype(np.int64)


# --- the engine -----------------------------------------------------------------------------


def _time_engine(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    train: dict[str, Any],
    seed: int,
    device: torch.device,
    warmup_epochs: int,
) -> dict[str, Any]:
    """Per-epoch seconds of one engine run, from the trainer's own synchronised timers."""
    stamps: list[float] = []

    def on_log(msg: str) -> None:
        if msg.startswith("epoch "):  # one line per finished epoch, after its checkpoint
            stamps.append(time.perf_counter())

    train = section("train", train)  # the schema fills what the benchmark leaves out
    with tempfile.TemporaryDirectory(prefix="mapd-bench-") as workdir:
        result = train_trajectories(
            images,
            labels,
            num_classes=NUM_CLASSES,
            train=train,
            seed=seed,
            workdir=workdir,
            device=device.type,
            log=on_log,
        )
    rows = result.metrics["epochs"][warmup_epochs:]
    train_s = [float(r["train_s"]) for r in rows]
    record_s = [float(r["record_s"]) for r in rows]
    return {
        "kind": "engine",
        "record": train["record"],
        "record_augment": bool(train["record_augment"]),
        "epoch_s": [a + b for a, b in zip(train_s, record_s, strict=True)],
        "train_s": train_s,
        "record_s": record_s,
        # Wall time between consecutive epoch ends: adds checkpointing and hooks.
        "epoch_wall_s": [b - a for a, b in itertools.pairwise(stamps)][max(warmup_epochs - 1, 0) :],
    }


# --- the conventional loop ------------------------------------------------------------------


class _PILDataset(Dataset):
    """uint8 (N, H, W, C) images served one PIL image at a time through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        img = self.images[i]
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(pil), int(self.labels[i]), i


def _time_conventional(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    train: dict[str, Any],
    seed: int,
    device: torch.device,
    num_workers: int,
    warmup_epochs: int,
    channels_last: bool,
) -> dict[str, dict[str, Any]]:
    """A textbook loop: PIL transforms in a DataLoader, then eval passes over the train set.

    Every epoch is a training pass, a plain eval pass and an eval pass with the training
    augmentation (the authors' recording), each timed on its own. Returns three timings keyed
    by configuration suffix: ``""`` (training + plain pass), ``"_noeval"`` (training alone)
    and ``"_eval_augment"`` (training + augmented pass).
    """
    settings = TrainSettings.from_config(train)
    n, size = len(images), images.shape[1]
    mean, std = (tuple(float(v) for v in s) for s in channel_stats(images))
    normalise = [T.ToTensor(), T.Normalize(mean, std)]
    augment = [T.RandomCrop(size, padding=CROP_PADDING, padding_mode="reflect")]
    augment.append(T.RandomHorizontalFlip())
    cuda = device.type == "cuda"
    loader_opts = {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": cuda,  # pinning only helps host-to-GPU copies
    }
    shuffle_gen = torch.Generator()
    shuffle_gen.manual_seed(seed)
    train_loader = DataLoader(
        _PILDataset(images, labels, T.Compose(augment + normalise)),
        batch_size=settings.batch_size,
        shuffle=True,
        generator=shuffle_gen,
        **loader_opts,
    )
    record_loaders = {
        name: DataLoader(
            _PILDataset(images, labels, T.Compose(tf)),
            batch_size=settings.eval_batch_size,
            shuffle=False,
            **loader_opts,
        )
        for name, tf in (("plain", normalise), ("augment", augment + normalise))
    }
    torch.manual_seed(seed)
    net = build_model(
        str(train["model"]), num_classes=NUM_CLASSES, in_channels=images.shape[-1], image_size=size
    ).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    amp = settings.amp and cuda
    loss_hist = np.full((n, settings.epochs), np.nan, dtype=np.float32)
    correct_hist = np.zeros((n, settings.epochs), dtype=bool)

    def to_dev(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, non_blocking=cuda).contiguous(memory_format=memory_format)

    def record_pass(loader: DataLoader, epoch: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        net.eval()
        with torch.inference_mode():
            for x, y, idx in loader:
                x, y = to_dev(x), y.to(device, non_blocking=cuda)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = net(x).float()
                rows = idx.numpy()
                loss_hist[rows, epoch] = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
                correct_hist[rows, epoch] = (logits.argmax(1) == y).cpu().numpy()
        _sync(device)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"train": [], "plain": [], "augment": []}
    for epoch in range(settings.epochs):
        _sync(device)
        t0 = time.perf_counter()
        net.train()
        steps = len(train_loader)
        for i, (x, y, _) in enumerate(train_loader):
            for group in opt.param_groups:
                group["lr"] = settings.lr * settings.lr_factor(epoch + i / steps)
            x, y = to_dev(x), y.to(device, non_blocking=cuda)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        train_s = time.perf_counter() - t0
        plain_s = record_pass(record_loaders["plain"], epoch)
        augment_s = record_pass(record_loaders["augment"], epoch)
        if epoch >= warmup_epochs:
            times["train"].append(train_s)
            times["plain"].append(plain_s)
            times["augment"].append(augment_s)
    del train_loader, record_loaders  # shuts persistent workers down
    common = {
        "kind": "conventional",
        "num_workers": num_workers,
        "pin_memory": cuda,
        "persistent_workers": num_workers > 0,
        "channels_last": channels_last,
    }

    def with_record(augmented: bool, pass_s: list[float]) -> dict[str, Any]:
        return common | {
            "record": "eval",
            "record_augment": augmented,
            "epoch_s": [a + b for a, b in zip(times["train"], pass_s, strict=True)],
            "train_s": list(times["train"]),
            "record_s": list(pass_s),
        }

    return {
        "": with_record(False, times["plain"]),
        "_noeval": common | {"record": "none", "epoch_s": list(times["train"])},
        "_eval_augment": with_record(True, times["augment"]),
    }


# --- helpers --------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on every platform
        return None


def _machine_info(device: torch.device, model: str, image_size: int) -> dict[str, Any]:
    net = build_model(model, num_classes=NUM_CLASSES, in_channels=3, image_size=image_size)
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "model": model,
        "model_parameters": sum(p.numel() for p in net.parameters()),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info
