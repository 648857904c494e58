"""The label-noise methods' per-epoch cost benchmark at tiny sizes: its JSON and derived numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapd.bench.noise import TARGETS, run_noise_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def test_noise_benchmark_json(tmp_path: Path) -> None:
    res = run_noise_benchmark(out_dir=tmp_path, n=256, t=12, cifar_n=1024, cifar_t=12, repeats=1)
    on_disk = json.loads((tmp_path / "noise.json").read_text())
    assert on_disk["mapd_s"] == res["mapd_s"] and on_disk["kind"] == "noise"
    assert res["epoch_s"] > 0 and res["mapd_s"] > 0 and res["bmm_s"] > 0
    assert res["mapd_share"] == pytest.approx(res["mapd_s"] / res["epoch_s"])
    c = res["cifar"]
    assert c["epoch_s_scaled"] == pytest.approx(res["epoch_s"] * 1024 / 256)
    assert c["bmm_share"] == pytest.approx(c["bmm_s"] / c["epoch_s_scaled"])
    assert res["passed"] == {
        "mapd": res["mapd_share"] <= TARGETS["overhead_max"],
        "bmm": res["bmm_share"] <= TARGETS["overhead_max"],
    }
    assert res["threads"] == 1
