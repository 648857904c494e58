"""The prioritized-training experiment: its grid and checks, the training pool (probes and holdout
from clean validation rows, nothing shared), RHO-Loss's irreducible-loss model, the speed-up
arithmetic, and the whole family in one process on a tiny digits grid."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mapd.config import validate_config
from mapd.engine.run import predict_loss
from mapd.errors import ConfigError, DataError
from mapd.experiments import active, family, preflight
from mapd.experiments.prioritized import grid, steps
from mapd.io import load_json, load_table
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
            "epochs": 3,
            "batch_size": 64,
            "lr": 0.05,
            "crop_padding": 1,
            "flip": False,
        },
        "methods": {"select": {"keep": 20, "min_per_class": 1}},
        "assign": {"k": 5},
    },
    "datasets": {"digits": {"subset": 600}},
    "audit": {"activate": False},
    "prioritized": {
        "activate": True,
        "scorers": ["uniform", "rho_loss", "mapd_balanced"],
        "validation": {"size": 150},
        "noise": [{"kind": "asymmetric", "rate": 0.2}, {"kind": "symmetric", "rate": 0.2}],
        "probes": {"size": 20},
        "train": {"batch_size": 80},
        "holdout": {"train": {"epochs": 2}},
    },
}


def _cfg(tmp: Path | None = None, **prio) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["prioritized"].update(prio)
    if tmp is not None:
        raw["results"] = str(tmp)
    return validate_config(raw)


def test_cells_scores_and_balance() -> None:
    cfg = _cfg()
    assert active(cfg) == ["prioritized"]
    cells = grid.cells(cfg)
    assert [c.scorer for c in cells] == ["uniform", "rho_loss", "mapd_balanced"]
    assert [(c.score, c.balanced) for c in cells] == [
        ("uniform", False), ("rho_loss", False), ("mapd", True)
    ]  # fmt: skip
    assert grid.needs_holdout(cfg)
    assert not grid.needs_holdout(_cfg(scorers=["uniform", "mapd"], reference="uniform"))


@pytest.mark.parametrize(
    ("prio", "msg"),
    [
        ({"reference": "loss"}, "'loss' is not one of prioritized/scorers"),
        ({"scorers": ["uniform", "nope"]}, "prioritized/scorers"),
        ({"train": {"batch_size": 16}}, "keep = 20 exceeds the large batch"),
        ({"probes": {"size": 2}}, "assign/k = 5 exceeds the 4 probes"),
        ({"datasets": ["mnist"]}, "not keys of datasets"),
    ],
)
def test_bad_settings_stop_before_any_job(prio: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        preflight(_cfg(**prio))


def test_the_pool_its_probes_and_the_holdout_share_no_example(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    suite = steps.data(cfg, "digits", 0, tmp_path / "data")
    again = ProbeSuite.load(tmp_path / "data")
    pd.testing.assert_frame_equal(again.table, suite.table)
    t, v = again.table, again.meta["validation"]
    data = t[t["role"] == "data"]
    train_index = set(data["orig_index"])
    probe_index, holdout_index = set(v["probe_index"]), set(v["holdout_index"])
    assert v["carved"] and v["split"] == "train"
    assert len(data) == 450 and len(probe_index) == 40 and len(holdout_index) == 110
    assert not train_index & probe_index and not train_index & holdout_index
    assert not probe_index & holdout_index
    # the probes: 20 with their true labels, 20 with another label, all trained on as copies
    clean, noisy = t[t["category"] == "random_sample"], t[t["category"] == "random_labels"]
    assert (clean["label"] == clean["orig_label"]).all()
    assert (noisy["label"] != noisy["orig_label"]).all()
    assert len(again.probe_images) == 40
    # asymmetric 20 % then symmetric 20 %: between 20 % and 40 % of the pool's labels changed
    changed = (data["label"] != data["orig_label"]).mean()
    assert again.meta["noise"]["changed"] == int((data["label"] != data["orig_label"]).sum())
    assert 0.2 <= changed <= 0.4
    # the carved rows are the same for every seed; probes and noise are the seed's
    other = steps.data(cfg, "digits", 1, tmp_path / "data1")
    v1 = other.meta["validation"]
    assert set(v1["probe_index"]) | set(v1["holdout_index"]) == probe_index | holdout_index
    assert set(v1["probe_index"]) != probe_index


def test_too_few_validation_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot give 2 x 80 probes"):
        steps.data(_cfg(tmp_path, probes={"size": 80}), "digits", 0, tmp_path / "d")


def test_rho_loss_reads_only_the_holdout_models_irreducible_loss(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, holdout={"train": {"epochs": 1}})
    lay = Layout.of(cfg)
    data_dir, held_dir = lay.prio("data", "digits", 0), lay.prio("holdout", "digits", 0)
    steps.data(cfg, "digits", 0, data_dir)
    loss = steps.holdout(cfg, "digits", 0, data_dir, held_dir, lay.partial(held_dir))
    suite = ProbeSuite.load(data_dir)
    held = steps.holdout_rows(cfg, "digits", suite)
    run = Run.load(held_dir)
    # the model was trained on the holdout rows only (its curves have one row per holdout row)
    assert run.n == len(held) == 110 and run.metrics["holdout_rows"] == 110
    # its loss of every pool row with the row's training label
    state = torch.load(Path(held_dir) / "model.pt", weights_only=True)
    pool, _ = steps.pool_and_validation(cfg, "digits")
    want = predict_loss(
        state, held.images, suite.images(pool), suite.labels, num_classes=10,
        train=steps.holdout_settings(cfg, "digits"), device="cpu",
    )  # fmt: skip
    np.testing.assert_array_equal(loss, want)
    np.testing.assert_array_equal(run.array("irreducible_loss", rows=len(suite)), want)
    assert not Path(lay.partial(held_dir)).exists()
    # the selecting run's resume signature names exactly that array
    cell = grid.Cell("digits", "rho_loss", 0)
    out = lay.prio("run", "digits", 0, "rho_loss")
    steps.train(cfg, cell, data_dir, out, lay.partial(out), held_dir)
    got = Run.load(out).metrics["method"]
    assert got["irreducible"] == hashlib.sha256(want.astype(np.float32).tobytes()).hexdigest()
    assert got["settings"]["score"] == "rho_loss" and got["settings"]["keep"] == 20
    with pytest.raises(DataError, match="needs the irreducible-loss model"):
        steps.train(cfg, cell, data_dir, tmp_path / "x", tmp_path / "xp", None)


def test_epochs_to_reach_and_the_speedup_by_hand(tmp_path: Path) -> None:
    assert steps.epochs_to_reach(np.array([0.1, 0.5, 0.4, 0.6]), 0.5) == 2.0
    assert math.isinf(steps.epochs_to_reach(np.array([0.1, 0.2]), 0.5))
    cfg = _cfg(tmp_path, scorers=["uniform", "mapd"], reference="uniform")
    rows = []
    curves = {"uniform": [[0.2, 0.4, 0.5, 0.6], [0.2, 0.4, 0.5, 0.6]],
              "mapd": [[0.5, 0.7, 0.6, 0.6], [0.3, 0.5, 0.6, 0.6]]}  # fmt: skip
    for scorer, per_seed in curves.items():
        for seed, accs in enumerate(per_seed):
            for e, acc in enumerate(accs, start=1):
                rows.append({"dataset": "digits", "scorer": scorer, "seed": seed, "epoch": e,
                             "step": 10 * e, "examples": 100 * e, "train_s": float(e),
                             "test_acc": acc, "wrong_label_share_selected": 0.25,
                             "wrong_label_share_pool": 0.3})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "curves.csv", index=False)
    table = steps.table(cfg, tmp_path / "curves.csv", tmp_path / "table.csv").set_index("scorer")
    # uniform's best mean accuracy 0.6 at epoch 4; MAP-D's mean (0.4, 0.6, ...) reaches it at 2
    assert table.loc["uniform", "target_acc"] == pytest.approx(0.6)
    assert table.loc["mapd", "epochs_to_target"] == 2.0
    assert table.loc["mapd", "speedup"] == pytest.approx(2.0)
    assert table.loc["uniform", "speedup"] == pytest.approx(1.0)
    assert table.loc["mapd", "best_acc"] == pytest.approx(0.65)
    assert table.loc["mapd", "best_acc_std"] == pytest.approx(np.std([0.7, 0.6], ddof=1))


def test_the_whole_family_in_one_process(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    fam = family("prioritized")
    fam.run(cfg)
    lay = Layout.of(cfg)
    for target in fam.targets(cfg):
        assert Path(target).is_file(), target
    curves = load_table(lay.prio_table("curves"))
    assert len(curves) == 3 * 3  # 3 scorers x 3 epochs
    # 490 rows in large batches of 80: 6 full (20 kept each) + 10 rows (3 kept) per epoch
    assert set(curves["examples"]) == {123, 246, 369}
    assert set(curves["step"]) == {7, 14, 21}
    for c in grid.cells(cfg):
        run = Run.load(lay.prio("run", c.dataset, c.seed, c.scorer))
        assert run.array("selected_count").sum() == 3 * 123
        assert run.n_epochs == 3
    metrics = fam.metrics(cfg)
    assert set(metrics["digits"]) == {"uniform", "rho_loss", "mapd_balanced"}
    assert metrics["digits"]["uniform"]["speedup"] == 1.0
    sections = fam.sections(cfg, tmp_path)
    assert sections[0]["heading"].startswith("Prioritized training")
    assert "Clothing1M" in sections[1]["text"] and sections[1]["tables"][0].shape[0] == 3
    assert load_json(Path(lay.prio("run", "digits", 0, "uniform")) / "metrics.json")["prio_cell"]
