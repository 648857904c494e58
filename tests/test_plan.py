"""``mapd plan``: estimates computed from measured timing files, logs and a calibration."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapd import plan as planner
from mapd.config import validate_config
from mapd.paths import Layout, dataset_job, seed_job


def _config(results: Path, *, epochs: int, subset: int, seeds: list[int]) -> dict:
    return validate_config(
        {
            "seeds": seeds,
            "device": "cpu",
            "results": str(results),
            "defaults": {"train": {"model": "small_cnn", "epochs": epochs}},
            "datasets": {"digits": {"subset": subset}},
        }
    )


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def _timing(seconds: float) -> str:
    return f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{int(seconds):02d}\t100\n"


@pytest.fixture
def measured(tmp_path: Path) -> dict:
    cfg = _config(tmp_path / "measured", epochs=2, subset=300, seeds=[0])
    lay = Layout.of(cfg)
    _write(lay.timing("data", dataset_job("digits")), _timing(20.0))
    _write(lay.timing("train", seed_job("digits", 0)), _timing(30.0))
    _write(
        lay.log("train", seed_job("digits", 0)),
        "[mapd] training small_cnn (ce) on digits seed 0: 310 rows (in memory), 2 epochs\n"
        "[mapd] epoch 1/2 loss 2.3 (train 5.0s, record 1.0s)\n"
        "[mapd] epoch 2/2 loss 2.1 (train 5.0s, record 1.0s)\n",
    )
    return cfg


def test_estimates_scale_the_measurements(
    measured: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "calibrate", lambda train, ds, cfg, device: 0.001)
    target = _config(tmp_path / "target", epochs=10, subset=600, seeds=[0, 1])
    estimates, notes = planner.plan(target, measured, device="cpu")
    by = {(e.step, e.job): e for e in estimates}
    train = by[("train", seed_job("digits", 1))]
    # calibrated 1 ms/image x 600 images x 10 epochs x (1 + record/train 2/10) + start-up 18 s
    assert train.seconds == pytest.approx(0.001 * 600 * 10 * 1.2 + 18.0)
    assert "600 images x 10 epochs" in train.how and "digits/seed0" in train.how
    # start-up (the quickest job without epochs: 30 - 12 = 18 s) + the rest x images ratio
    data = by[("data", dataset_job("digits"))]
    assert data.seconds == pytest.approx(18.0 + (20.0 - 18.0) * 600 / 300)
    assert by[("probes", seed_job("digits", 0))].seconds is None  # nothing measured
    assert any("start-up of a job: 18.0 s" in n for n in notes)
    summary, steps, _ = planner.tables(target, measured, gpus=1, device="cpu")
    assert [r["step"] for r in steps][:2] == ["data", "cscores"] and steps[0]["hours"] > 0
    everything = summary[-1]
    assert everything["family"] == "all" and everything["GPU-h"] == 0.0  # a CPU config
    cpu = sum(e.seconds or 0 for e in estimates) / 3600
    assert everything["CPU-h"] == pytest.approx(round(cpu, 2)) and cpu > 2 * train.seconds / 3600
    assert "probes" in everything["unestimated"]


def test_gpu_jobs_are_packed_on_the_gpus() -> None:
    jobs = [planner.Estimate("f", "train", str(i), s, 1, "") for i, s in enumerate([5, 4, 3, 3])]
    assert planner.wall_seconds(jobs, 2) == 8  # 5+3 | 4+3
    assert planner.wall_seconds(jobs, 4) == 5
    big = [planner.Estimate("f", "train", "x", 10, 2, ""), *jobs[:1]]
    assert planner.wall_seconds(big, 2) == 15  # the 2-GPU job takes both


def test_calibration_is_measured_and_kept(measured: dict) -> None:
    train = measured["defaults"]["train"]
    sec = planner.calibrate({**train, "model_options": {}}, "digits", measured, "cpu")
    assert 0 < sec < 10
    target = _config(Path(measured["results"]).parent / "t", epochs=3, subset=100, seeds=[0])
    planner.plan(target, measured, device="cpu")
    assert Path(Layout.of(measured).calibration()).is_file()


def test_missing_measurements_are_one_clear_error(tmp_path: Path) -> None:
    empty = _config(tmp_path / "none", epochs=2, subset=300, seeds=[0])
    with pytest.raises(planner.ConfigError, match="no timing files"):
        planner.plan(empty, empty, device="cpu")


def test_the_report_section_shows_the_plan(
    measured: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "calibrate", lambda train, ds, cfg, device: 0.01)
    target = tmp_path / "target.yaml"
    target.write_text(
        "seeds: [0, 1, 2]\ndevice: cuda\ndefaults: {train: {model: small_cnn, epochs: 200}}\n"
        "datasets: {digits: {subset: 1000}}\n"
    )
    measured["report"]["plan"] = {"config": str(target), "gpus": 2}
    (section,) = planner.report_section(measured)
    summary, steps = section["tables"]
    assert section["heading"] == "Compute budget (mapd plan)" and str(target) in section["text"]
    audit = summary.set_index("family").loc["audit"]
    # 3 training jobs on the GPU: 10 ms/image x 1000 images x 200 epochs x 1.2 + 18 s each,
    # and the learning-speed C-scores: 10 ms x 1000 images x 10 epochs x 2 runs x 1.5 (ratios)
    job, cscores = 0.01 * 1000 * 200 * 1.2 + 18, 0.01 * 1000 * 10 * 2 * 1.5
    assert audit["GPU-h"] == pytest.approx(round((3 * job + cscores) / 3600, 1))
    assert audit["wall h on 2 GPUs"] == pytest.approx(round(2 * job / 3600, 1))
    assert "calibrated" in steps.set_index("step").loc["train", "how"]
    measured["report"]["plan"]["config"] = str(tmp_path / "absent.yaml")
    assert "not found" in planner.report_section(measured)[0]["text"]
