"""The detection experiment: its cells and checks, and the whole family in one process on a tiny
digits grid (training sets, main / AUM / fold runs, every detector, table, curves, report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapd.config import validate_config
from mapd.errors import ConfigError
from mapd.experiments import active, family, preflight
from mapd.experiments.detection import grid, steps
from mapd.paths import Layout
from mapd.probes import ProbeSuite

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "seeds": [0],
    "device": "cpu",
    "defaults": {
        "cscores": {"method": "learning_speed", "epochs": 2},
        "train": {
            "model": "small_cnn",
            "model_options": {"width": 8},
            "epochs": 5,
            "batch_size": 64,
            "lr": 0.05,
            "crop_padding": 1,
            "flip": False,
        },
        "probes": {"ood_blur_kernel": 3},
        "assign": {"k": 10},
    },
    "datasets": {"digits": {"subset": 600}},
    "audit": {"activate": False},
    "detection": {
        "activate": True,
        "probes": {"size": 20},
        "folds": 2,
        "sources": [{"kind": "symmetric", "rate": 0.3}, {"kind": "asymmetric", "rate": 0.3}],
    },
}


def _cfg(tmp: Path | None = None, **detection) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["detection"].update(detection)
    if tmp is not None:
        raw["results"] = str(tmp)
    return validate_config(raw)


def test_cells_and_costs() -> None:
    cfg = _cfg()
    assert active(cfg) == ["detection"]
    assert grid.cells(cfg) == [
        grid.Cell("digits", "symmetric30", 0), grid.Cell("digits", "asymmetric30", 0)
    ]  # fmt: skip
    assert steps.extra_trainings(cfg, "confident_learning") == 1.0  # 2 folds of half the data
    assert steps.extra_trainings(cfg, "aum") == 1.0
    assert steps.extra_trainings(cfg, "mapd") == 0.0
    assert grid.early_epoch(cfg, "digits", 5) == 1 and grid.early_epoch(cfg, "digits", 40) == 4


@pytest.mark.parametrize(
    ("detection", "msg"),
    [
        ({"sources": [{"kind": "symmetric"}]}, "needs its rate"),
        ({"sources": [{"kind": "file"}]}, "needs its path"),
        ({"sources": [{"kind": "symmetric", "rate": 0.2}] * 2}, "same name"),
        ({"probes": {"categories": ["typical", "atypical"]}}, "mapd needs the probe categories"),
        ({"scores": ["nope"]}, "detection/scores"),
        ({"probes": {"size": 200}}, "source examples, but digits has only 600"),
    ],
)
def test_bad_settings_stop_before_any_training(detection: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        preflight(_cfg(**detection))


def test_the_family_in_one_process(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    lay = Layout.of(cfg)
    family("detection").run(cfg)
    table = pd.read_csv(lay.det_table())
    names = cfg["detection"]["scores"]
    assert sorted(table["score"].unique()) == sorted(names) and len(table) == 2 * len(names)
    assert table["auroc"].between(0, 1).all()
    # every detector scored every training example of the cell, with the true noisy flags
    c = grid.Cell("digits", "asymmetric30", 0)
    scored = pd.read_parquet(Path(lay.det("scores", *c.__dict__.values())) / "scores.parquet")
    suite = ProbeSuite.load(lay.det("suite", *c.__dict__.values()))
    data = suite.table[suite.table["role"] == "data"]
    assert len(scored) == len(data) == 600
    # asymmetric noise flips only half of the classes: about 0.3 * 600 / 2
    assert scored["is_noisy"].sum() == (data["label"] != data["orig_label"]).sum() > 60
    for name in names:
        assert np.isfinite(scored[f"score_{name}"]).all(), name
    assert {"flag_aum", "flag_confident_learning", "flag_bmm"} <= set(scored.columns)
    # the table's AUROC is the AUROC of the stored scores
    from sklearn.metrics import roc_auc_score

    row = table[(table["source"] == "asymmetric30") & (table["score"] == "loss")].iloc[0]
    assert row["auroc"] == pytest.approx(roc_auc_score(scored["is_noisy"], scored["score_loss"]))
    assert Path(lay.figure("digits", "detection.png")).is_file()
    from mapd.experiments.report import report
    from mapd.pipeline import data_summary

    data_summary(cfg, "digits", lay.summary("digits"))
    (tmp_path / "c.yaml").write_text("x: 1\n")
    report(cfg, tmp_path / "c.yaml", lay.report())
    html = Path(lay.report()).read_text()
    assert "Finding the mislabeled examples" in html and "asymmetric30" in html
    metrics = json.loads(Path(lay.metrics("detection")).read_text())
    assert set(metrics["digits"]["symmetric30"]) == set(names)
