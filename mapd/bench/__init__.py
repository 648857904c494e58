"""Speed benchmarks behind `mapd bench` (engine, k-NN): each writes one JSON file under
`results/bench/`. ("timings" are Snakemake's per-job files; "detection" is an experiment family.)"""

from __future__ import annotations

import os
from typing import Any


def run_all(
    *, out_dir: str | os.PathLike, quick: bool = False, cifar10_root: str | None = None
) -> dict[str, Any]:
    """The engine benchmark (engine.json), the k-NN benchmark (knn.json), the label-noise
    methods' per-epoch cost (noise.json) and online batch selection's per-step cost
    (selection.json).

    ``quick`` runs tiny sizes as a smoke test; the acceptance numbers need the defaults.
    """
    from mapd.bench.engine import run_engine_benchmark
    from mapd.bench.knn import run_knn_benchmark
    from mapd.bench.noise import run_noise_benchmark
    from mapd.bench.selection import run_selection_benchmark

    if quick:
        engine = run_engine_benchmark(
            out_dir=out_dir, n=512, epochs=1, warmup_epochs=1, settle_epochs=1
        )
        knn = run_knn_benchmark(
            out_dir=out_dir, n=2_000, t=20, m=300, imagenet_n=20_000, imagenet_t=20, repeats=1
        )
        noise = run_noise_benchmark(
            out_dir=out_dir, n=512, t=20, cifar_n=2_000, cifar_t=20, repeats=1
        )
        selection = run_selection_benchmark(out_dir=out_dir, n=1_000, epochs=5, repeats=1)
    else:
        engine = run_engine_benchmark(
            out_dir=out_dir,
            data="cifar10" if cifar10_root else "synthetic",
            cifar10_root=cifar10_root,
        )
        knn = run_knn_benchmark(out_dir=out_dir)
        noise = run_noise_benchmark(
            out_dir=out_dir,
            data="cifar10" if cifar10_root else "synthetic",
            cifar10_root=cifar10_root,
        )
        selection = run_selection_benchmark(out_dir=out_dir)
    return {"engine": engine, "knn": knn, "noise": noise, "selection": selection}
