"""Online batch selection's per-step cost benchmark at tiny sizes: its JSON and derived numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapd.bench.selection import TARGETS, run_selection_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def test_selection_benchmark_json(tmp_path: Path) -> None:
    res = run_selection_benchmark(
        out_dir=tmp_path, n=400, batch=64, keep=16, probes=40, epochs=3, num_classes=4, repeats=1
    )
    on_disk = json.loads((tmp_path / "selection.json").read_text())
    assert on_disk["kind"] == "selection" and on_disk["step_s"] == res["step_s"]
    assert set(res["overhead_s"]) == {"first_epoch", "last_epoch"}
    assert res["step_s"] > 0 and all(v > 0 for v in res["overhead_s"].values())
    for name, share in res["overhead_share"].items():
        assert share == pytest.approx(res["overhead_s"][name] / res["step_s"])
    assert res["passed"] == all(
        v <= TARGETS["overhead_max"] for v in res["overhead_share"].values()
    )
    assert res["threads"] == 1
