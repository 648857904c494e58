"""The minority-group family: its jobs and start-up checks, the group metrics by hand, and the
whole family in one process on the spurious digits (ERM, scores, second stage, tables, Fig. 9,
report section, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapd.config import validate_config
from mapd.errors import ConfigError, DataError
from mapd.experiments import active, family, preflight
from mapd.experiments.groups import grid
from mapd.io import load_json
from mapd.outputs import Run
from mapd.paths import Layout
from mapd.pipeline import group_accuracy
from mapd.scores.metrics import detection_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "seeds": [0],
    "device": "cpu",
    "defaults": {
        "train": {
            "model": "small_cnn",
            "model_options": {"width": 8},
            "epochs": 3,
            "batch_size": 64,
            "lr": 0.05,
            "crop_padding": 1,
            "flip": False,
        },
        "methods": {"upweight": {"lambda_up": 4}},
        "scores": {"jtt": {"epoch": 2}},
    },
    "datasets": {"spurious_digits": {"subset": 500}},
    "audit": {"activate": False},
    "groups": {"activate": True, "jtt_sweep": [1, 3]},
}


def _cfg(tmp: Path | None = None, **over: dict) -> dict:
    raw = json.loads(json.dumps(TINY))
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value}
    if tmp is not None:
        raw["results"] = str(tmp)
    return validate_config(raw)


def test_group_metrics_equal_a_hand_computation() -> None:
    groups = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    correct = np.array([1, 0, 1, 1, 0, 1, 0, 0], dtype=bool)
    g = group_accuracy(correct, groups)
    assert g["per_group"] == {"0": 0.5, "1": 2 / 3, "2": 1.0, "3": 0.0}
    assert g["worst_group"] == 0.0
    assert g["average"] == 4 / 8
    assert g["counts"] == {"0": 2, "1": 3, "2": 1, "3": 2}


def test_jobs_and_targets() -> None:
    cfg = _cfg()
    assert active(cfg) == ["groups"]
    jobs = family("groups").jobs(cfg)
    assert ("groups_erm", "spurious_digits/seed0") in jobs
    assert ("groups_retrain", "spurious_digits/seed0/mapd_minority") in jobs
    assert grid.jtt_epochs(cfg, "spurious_digits") == [1, 2, 3]
    lay = Layout("results")
    assert lay.groups("retrain", "w", 1, "jtt") == "results/groups/retrain/w/jtt/seed1"


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"groups": {"jtt_sweep": [4]}}, ConfigError, r"T \[4\] .* exceeds its 3 ERM epochs"),
        ({"defaults": {"scores": {"jtt": {"epoch": 9}}}}, ConfigError, "exceeds its 3"),
        ({"groups": {"datasets": ["cifar10"]}}, ConfigError, "not keys of datasets"),
        (
            {"defaults": {"methods": {"upweight": {"lambda_up": 2.5}}}},
            ConfigError,
            "must be an integer with mode upsample",
        ),
        (
            {"datasets": {"digits": {}}, "groups": {"datasets": ["digits"]}},
            DataError,
            "no val and test splits",
        ),
        (
            {"defaults": {"assign": {"k": 500}}},
            DataError,
            "fewer than k = 500",
        ),
        (
            {
                "defaults": {
                    "train": {
                        "model": "resnet50",
                        "model_options": {
                            "pretrained": True,
                            "weights_file": "/nonexistent/r50.pth",
                        },
                    }
                }
            },
            ConfigError,
            "weights_file /nonexistent/r50.pth does not exist",
        ),
    ],
)
def test_bad_settings_stop_at_start_up(over: dict, error: type, match: str) -> None:
    raw = json.loads(json.dumps(TINY))
    for key, value in over.items():
        if key == "defaults":
            for sec, v in value.items():
                raw["defaults"][sec] = {**raw["defaults"].get(sec, {}), **v}
        else:
            raw[key] = {**raw[key], **value}
    with pytest.raises(error, match=match):
        preflight(validate_config(raw))


def test_a_data_set_without_group_annotations_is_a_data_error(monkeypatch) -> None:
    from mapd.data import ImageDataset
    from mapd.experiments.groups import grid as g

    def no_groups(config, name, split):
        return ImageDataset(
            name=name,
            split=split,
            labels=np.zeros(30, dtype=np.int64),
            classes=("a", "b"),
            index=np.arange(30),
            images=np.zeros((30, 8, 8, 3), dtype=np.uint8),
        )

    monkeypatch.setattr("mapd.pipeline.load_split", no_groups)
    with pytest.raises(DataError, match=r"no group annotations \(\['group', 'minority'\]"):
        g.check_data(_cfg(), "spurious_digits")


def test_the_family_in_one_process(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    fam = family("groups")
    fam.run(cfg)
    lay = Layout.of(cfg)
    erm = Run.load(lay.groups("erm", "spurious_digits", 0))
    n_train, n_val = erm.metrics["n_train"], erm.metrics["n_val"]
    assert (n_train, n_val) == (500, 178) and erm.n == 678
    scores = pd.read_parquet(Path(lay.groups("scores", "spurious_digits", 0)) / "scores.parquet")
    assert len(scores) == n_train
    # JTT's set: the ERM run's training rows wrong after epoch 2
    np.testing.assert_array_equal(scores["flag_jtt"], ~np.asarray(erm.correct)[:n_train, 1])
    det = pd.read_csv(lay.groups_table("detection"))
    acc = pd.read_csv(lay.groups_table("accuracy"))
    row = det[det["detector"] == "mapd_minority"].iloc[0]
    m = detection_metrics(
        scores["minority"].to_numpy(bool),
        scores["score_mapd_minority"].to_numpy(float),
        flags=scores["flag_mapd_minority"].to_numpy(bool),
    )
    assert row["precision"] == pytest.approx(m["precision"], nan_ok=True)
    assert row["auroc"] == pytest.approx(m["auroc"])
    assert set(det["detector"]) == {"jtt_T1", "jtt_T2", "jtt_T3", "jtt", "mapd_minority"}
    assert list(acc["method"]) == ["erm", "jtt", "mapd_minority"]
    erm_groups = erm.metrics["test_groups"]
    assert acc.iloc[0]["worst_group"] == pytest.approx(erm_groups["worst_group"])
    assert acc.iloc[0]["worst_group"] == pytest.approx(min(erm_groups["per_group"].values()))
    # the second stage: JTT's set repeated lambda_up = 4 times (upsample)
    jtt = load_json(Path(lay.groups("retrain", "spurious_digits", 0, "jtt")) / "metrics.json")
    assert jtt["n"] == n_train + 3 * int(scores["flag_jtt"].sum())
    assert jtt["upweighted"] == int(scores["flag_jtt"].sum())
    assert Path(lay.figure("spurious_digits", "fig9.png")).is_file()
    metrics = fam.metrics(cfg)
    assert set(metrics["spurious_digits"]["accuracy"]) == {"erm", "jtt", "mapd_minority"}
    parts = fam.sections(cfg, tmp_path / "scratch")
    assert parts[1]["heading"] == "Minority groups: spurious_digits"
    counts = parts[1]["tables"][0]
    assert counts["train"].sum() == n_train and counts["val"].sum() == n_val
    assert set(counts.loc[counts["role"] == "minority", "group"]) == {"1", "2"}
