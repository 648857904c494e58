"""The label-noise experiment: its grid, its noisy training sets, start-up checks, and the whole
family in one process on a tiny digits grid (runs, table, Figs. 6, 7, 11, report, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapd.config import validate_config
from mapd.errors import ConfigError
from mapd.experiments import active, preflight
from mapd.experiments.noise import grid, steps
from mapd.outputs import Run
from mapd.paths import Layout
from mapd.probes import ProbeSuite

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "seeds": [0],
    "device": "cpu",
    "defaults": {
        "train": {
            "model": "small_cnn",
            "model_options": {"width": 8},
            "epochs": 4,
            "batch_size": 64,
            "lr": 0.05,
            "crop_padding": 1,
            "flip": False,
        },
        "methods": {"mdyr_h": {"warmup": 2, "posterior": "epoch"}, "mapd": {"warmup": 2}},
        "assign": {"k": 10},
    },
    "datasets": {"digits": {"subset": 400}},
    "audit": {"activate": False},
    "noise": {
        "activate": True,
        "levels": [0.0, 0.5],
        "methods": ["mixup", "forward", "mdyr_h", "mapd"],
        "fig7": {"methods": ["mapd"], "warmups": [1, 2]},
        "probes": {"size": 20},
    },
}


def _cfg(tmp: Path | None = None, **noise) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["noise"].update(noise)
    if tmp is not None:
        raw["results"] = str(tmp)
    return validate_config(raw)


def test_the_grid() -> None:
    cfg = _cfg()
    assert active(cfg) == ["noise"]
    cells = grid.cells(cfg)
    # ce joins for forward's transition matrix; mapd also at Fig. 7's short warm-up
    assert sorted({(c.method, c.warmup) for c in cells}) == [
        ("ce", 0), ("forward", 0), ("mapd", 1), ("mapd", 2), ("mdyr_h", 2), ("mixup", 0)
    ]  # fmt: skip
    assert len(cells) == 2 * 6 and {c.level for c in cells} == {0, 50}
    fwd = next(c for c in cells if c.method == "forward")
    assert grid.reference(fwd) == grid.Cell("digits", fwd.level, "ce", 0, 0)
    assert grid.figures_of(cfg) == ["fig6", "fig7"]  # no mapd_binary: no Fig. 11
    assert grid.suites(cfg) == [("digits", 0, 0), ("digits", 50, 0)]


@pytest.mark.parametrize(
    ("noise", "defaults", "msg"),
    [
        ({"methods": ["mapd", "nope"]}, {}, "noise/methods"),
        ({"levels": [0.2, 1.0]}, {}, "noise/levels"),
        (
            {},
            {"methods": {"mapd": {"warmup": 4}}},
            "mapd warms up for 4 epochs but digits trains for 4",
        ),
        ({"probes": {"size": 0}}, {}, "MAP-D needs its clean and noisy probes, got 0"),
        ({"probes": {"size": 4}}, {}, "needs k = 10 .* got 2 x 4"),
        ({"fig7": {"methods": ["ce"]}}, {}, r"fig7/methods: \['ce'\] are not in noise/methods"),
        ({"probes": {"size": 300}}, {}, "need 600 source examples, but digits has only 400"),
    ],
)
def test_bad_settings_stop_before_any_training(noise: dict, defaults: dict, msg: str) -> None:
    raw = json.loads(json.dumps(TINY))
    raw["noise"].update(noise)
    for k, v in defaults.items():
        raw["defaults"][k] = {**raw["defaults"][k], **v}
    with pytest.raises(ConfigError, match=msg):
        preflight(validate_config(raw))


def test_a_noisy_training_set(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    steps.suite(cfg, "digits", 50, 0, tmp_path / "s")
    suite = ProbeSuite.load(tmp_path / "s")
    t = suite.table
    data = t[t["role"] == "data"]
    assert len(data) == 400  # every example keeps its row: the probes are copies
    assert sorted(data["orig_index"]) == sorted(set(data["orig_index"]))
    changed = (data["label"] != data["orig_label"]).sum()
    # Arazo's injection: 200 redrawn over all 10 classes, about a tenth keep their label
    assert 150 <= changed < 200
    probes = t[t["role"] != "data"]
    assert sorted(probes["category"].unique()) == ["random_labels", "random_sample"]
    clean = probes[probes["category"] == "random_sample"]
    assert (clean["label"] == clean["orig_label"]).all() and len(clean) == 20
    assert suite.meta["noise"]["changed"] == changed


def test_the_family_in_one_process(tmp_path: Path) -> None:
    from mapd.experiments import family
    from mapd.experiments.report import report

    cfg = _cfg(tmp_path)
    lay = Layout.of(cfg)
    family("noise").run(cfg)
    table = pd.read_csv(lay.noise_table())
    assert len(table) == 12 and table["best_acc"].between(0, 1).all()
    assert (table["best_acc"] >= table["last_acc"]).all()
    det = table.dropna(subset=["auroc_p_noisy"])
    assert set(det["method"]) == {"mdyr_h", "mapd"} and (det["level"] == 50).all()
    # the forward run read the ce run's model: its matrix is recorded, rows sum to 1
    run = Run.load(lay.noise_run("digits", 50, "forward", 0, 0))
    t = np.asarray(run.metrics["transition"])
    assert t.shape == (10, 10) and np.allclose(t.sum(1), 1)
    assert Run.load(lay.noise_run("digits", 50, "mapd", 2, 0)).array("p_noisy").shape == (440,)
    for stem in ("fig6", "fig7"):
        for ext in ("png", "svg", "csv"):
            assert Path(lay.figure("digits", f"{stem}.{ext}")).is_file()
    fig6 = pd.read_csv(lay.figure("digits", "fig6.csv"))
    assert "paper_acc" not in fig6  # the paper's numbers are for CIFAR only
    config_file = tmp_path / "config.yaml"
    config_file.write_text("x: 1\n")
    from mapd.pipeline import data_summary

    data_summary(cfg, "digits", lay.summary("digits"))
    report(cfg, config_file, lay.report())
    html = Path(lay.report()).read_text()
    assert "Label-noise correction (Figs. 6, 7, 11)" in html and "Arazo&#x27;s injection" in html
    metrics = json.loads(Path(lay.metrics("noise")).read_text())
    assert set(metrics["digits"]) >= {"mixup", "mapd", "mapd@w1"}
    assert metrics["digits"]["mapd"]["noise50"]["seeds"] == 1


def test_fig6_puts_the_papers_numbers_beside_ours(tmp_path: Path) -> None:
    from mapd.experiments.noise.figures import write_fig6

    rows = [
        {
            "dataset": "c10",
            "level": lv,
            "method": m,
            "warmup": 0,
            "seed": s,
            "best_acc": a,
            "last_acc": a,
        }
        for lv in (0, 20)
        for m in ("mixup", "ce")
        for s, a in ((0, 0.9 - lv / 100), (1, 0.8 - lv / 100))
    ]
    paths = write_fig6(
        pd.DataFrame(rows), "c10", "cifar10", ["ce", "mixup"], {"ce": 0, "mixup": 0}, tmp_path
    )
    data = pd.read_csv(paths["csv"])
    ours = data.dropna(subset=["best_acc_mean"])
    mix0 = ours[(ours["method"] == "mixup") & (ours["level"] == 0)].iloc[0]
    assert mix0["best_acc_mean"] == pytest.approx(85.0) and mix0["best_acc_std"] == pytest.approx(
        7.0711, abs=1e-3
    )
    paper = data.dropna(subset=["paper_acc"])
    assert paper[(paper["method"] == "mixup") & (paper["level"] == 20)]["paper_acc"].item() == 95.6
