"""Cost of the label-noise methods' per-epoch work against a CPU training epoch (``mapd bench``).

Every epoch after the warm-up, ``mapd`` refits its k-NN on the probes' curves and assigns every
training row (N + probes rows, T epochs so far), and ``mdyr_h`` fits its Beta mixture by EM on
the N losses. Measured (wall clock, best of ``repeats`` after a warm-up call):

- ``epoch_s``: one training epoch of the small CNN at 32 x 32 on ``n`` rows, online recording
  (the authors' protocol), the second of two epochs (the first warms up);
- ``mapd_s``: MAP-D's assignment of ``n + 500`` rows against 2 x 250 probes with ``t`` epochs of
  curves (synthetic curves, see :mod:`mapd.bench.knn`), k = 20;
- ``bmm_s``: the Beta mixture's fit (10 EM iterations) and posterior of ``n`` losses;
- the same at CIFAR size (N = 50,000, 300 epochs of curves) against an epoch scaled from
  ``epoch_s`` by N (an epoch costs the same per example).

Target: both at most 5 % of an epoch at N = 10,000 (``passed``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapd.bench.engine import _load_data
from mapd.bench.knn import _curves, _machine
from mapd.engine.run import train_trajectories
from mapd.io import save_json
from mapd.scores import Inputs, compute_score
from mapd.scores.mixture import fit_beta_mixture

TARGETS = {"overhead_max": 0.05}
PROBES, K = 250, 20


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: thread pools, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _epoch_seconds(n: int, *, data: str, root: str | None, seed: int) -> float:
    images, labels = _load_data(data, n=n, image_size=32, seed=seed, root=root)
    train = {"model": "small_cnn", "epochs": 2, "batch_size": 128, "lr": 0.05, "record": "online"}
    with tempfile.TemporaryDirectory(prefix="mapd-bench-") as workdir:
        res = train_trajectories(
            images, labels, num_classes=10, train=train, seed=seed, workdir=workdir,
            device="cpu", log=lambda _: None,
        )  # fmt: skip
    second = res.metrics["epochs"][1]
    return float(second["train_s"] + second["record_s"])


def _correction_seconds(n: int, t: int, *, repeats: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    probes = np.concatenate(
        [_curves(rng, "typical", PROBES, t, 0.15), _curves(rng, "random_labels", PROBES, t, 0.15)]
    )
    suspect = np.repeat([False, True], PROBES)
    rows = np.concatenate([_curves(rng, "typical", n, t, 0.15), probes])
    inputs = Inputs(loss=rows, probe_loss=probes, probe_suspect=suspect)
    losses = rows[:n, -1].astype(np.float64)
    return {
        "mapd_s": _best(lambda: compute_score("mapd_knn", inputs, k=K), repeats),
        "bmm_s": _best(lambda: fit_beta_mixture(losses).posterior(losses), repeats),
    }


def run_noise_benchmark(
    *,
    out_dir: str | os.PathLike,
    n: int = 10_000,
    t: int = 300,
    cifar_n: int = 50_000,
    cifar_t: int = 300,
    data: str = "synthetic",
    cifar10_root: str | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the correction work per epoch; writes ``out_dir/noise.json`` and returns it."""
    threads = torch.get_num_threads()
    epoch_s = _epoch_seconds(n, data=data, root=cifar10_root, seed=seed)
    small = _correction_seconds(n, t, repeats=repeats, seed=seed)
    large = _correction_seconds(cifar_n, cifar_t, repeats=1, seed=seed)
    large_epoch = epoch_s * cifar_n / n
    result: dict[str, Any] = {
        "kind": "noise",
        "n": n,
        "t": t,
        "data": data,
        "threads": threads,
        "epoch_s": epoch_s,
        **small,
        "mapd_share": small["mapd_s"] / epoch_s,
        "bmm_share": small["bmm_s"] / epoch_s,
        "cifar": {
            "n": cifar_n,
            "t": cifar_t,
            "epoch_s_scaled": large_epoch,
            **large,
            "mapd_share": large["mapd_s"] / large_epoch,
            "bmm_share": large["bmm_s"] / large_epoch,
        },
        "targets": dict(TARGETS),
        "machine": _machine(),
    }
    result["passed"] = {
        "mapd": result["mapd_share"] <= TARGETS["overhead_max"],
        "bmm": result["bmm_share"] <= TARGETS["overhead_max"],
    }
    save_json(Path(out_dir) / "noise.json", result)
    return result
