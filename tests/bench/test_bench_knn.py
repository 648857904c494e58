"""The k-NN benchmark at a tiny size: JSON structure, identical output, consistent numbers.

No timing thresholds: the numbers depend on the machine and its load, only their shape and
internal consistency are checked here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mapd.bench.knn import CATEGORIES, QUERY_MIX, TARGETS, make_trajectories, run_knn_benchmark
from mapd.io import load_json


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    result = run_knn_benchmark(
        out_dir=out, n=1_500, t=20, m=300, imagenet_n=6_000, imagenet_t=12, repeats=1
    )
    return result, out


def _seconds(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_json_on_disk_is_the_returned_result(bench: tuple[dict[str, Any], Path]) -> None:
    result, out = bench
    assert sorted(p.name for p in out.iterdir()) == ["knn.json"]  # no temporary left over
    assert load_json(out / "knn.json") == result


def test_output_identical_to_sklearn_and_derived_numbers(
    bench: tuple[dict[str, Any], Path],
) -> None:
    r = bench[0]
    assert (r["n"], r["t"], r["m"], r["k"]) == (1_500, 20, 300, 20)
    assert r["differing_rows"] == 0 and r["identical_rows"] == 1_500
    assert r["sklearn_s"] == min(r["sklearn_default_n_jobs_s"], r["sklearn_n_jobs_-1_s"])
    assert r["speedup"] == pytest.approx(r["sklearn_s"] / r["ours_s"])
    assert all(_seconds(s) for s in (r["ours_s"], r["sklearn_s"], r["sklearn_1_thread_s"]))
    assert r["passed"] == {
        "speedup": r["speedup"] >= TARGETS["speedup_min"],
        "identical": True,
        "imagenet": r["imagenet"]["ours_s"] <= TARGETS["imagenet_max_s"],
    }
    assert 0 <= r["argmax_matches_generating_category"] <= 1


def test_product_floor_bounds_brute_force(bench: tuple[dict[str, Any], Path]) -> None:
    r = bench[0]
    threads = max(1, torch.get_num_threads())
    floor = r["product_floor"]
    assert set(floor) == {"bfloat16", "float32"}
    for times in floor.values():
        assert set(times) == {"1_thread_s", f"{threads}_threads_s"}
        assert all(_seconds(s) for s in times.values())
    fastest = min(s for times in floor.values() for s in times.values())
    assert r["speedup_if_only_the_product_counted"] == pytest.approx(r["sklearn_s"] / fastest)


def test_imagenet_size_entry(bench: tuple[dict[str, Any], Path]) -> None:
    im = bench[0]["imagenet"]
    assert (im["n"], im["t"], im["m"]) == (6_000, 12, 300)
    assert _seconds(im["ours_s"]) and im["peak_rss_mb"] >= im["rss_before_mb"] > 0


def test_make_trajectories_shapes_and_mix() -> None:
    queries, refs, labels, truth = make_trajectories(6_000, 30, 120, seed=3)
    assert queries.shape == (6_000, 30) and refs.shape == (120, 30)
    assert queries.dtype == refs.dtype == np.float32 and (queries >= 0).all()
    assert (np.bincount(labels, minlength=len(CATEGORIES)) == 120 // len(CATEGORIES)).all()
    share = np.bincount(truth, minlength=len(CATEGORIES)) / len(truth)
    assert np.allclose(share, QUERY_MIX, atol=0.03)
    again = make_trajectories(6_000, 30, 120, seed=3)
    assert all((a == b).all() for a, b in zip((queries, refs, labels, truth), again, strict=True))
