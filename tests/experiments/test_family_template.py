"""The house for experiment families: a toy method and a toy score registered with test-only
config sections run through the engine and the step layer; the audit's numbers are those of main
before the house was built; the registry of families and the generated dvc.yaml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.nn.functional as F

import mapd.config as config_mod
from mapd.config import load_config, validate_config
from mapd.engine.method import Method
from mapd.experiments import FAMILIES, active, family
from mapd.experiments.audit import steps
from mapd.experiments.report import all_jobs, dvc_yaml
from mapd.methods import METHODS, register_method
from mapd.outputs import Assignment, Run
from mapd.paths import Layout
from mapd.scores import SCORES, register_score

TINY = {
    "seeds": [0],
    "device": "cpu",
    "defaults": {
        "cscores": {"method": "learning_speed", "epochs": 2},
        "probes": {"train_size": 10, "heldout_size": 10, "ood_blur_kernel": 3},
        "train": {
            "model": "small_cnn",
            "model_options": {"width": 8},
            "epochs": 4,
            "batch_size": 64,
            "lr": 0.05,
            "crop_padding": 1,
            "flip": False,
        },
    },
    "datasets": {"digits": {"subset": 600}},
}


pytestmark = pytest.mark.usefixtures("one_thread")


class ToyScaledCE(Method):
    """Cross-entropy times a configured factor; counts its calls and epochs."""

    name = "toy_scaled"
    calls: list[float] = []  # noqa: RUF012 (the test reads it back)

    def __init__(self, *, factor: float) -> None:
        super().__init__(factor=factor)
        self.factor = factor
        self.epochs_seen = 0

    def training_loss(self, trainer, idx, x, y):
        logits = trainer.forward_model(x)
        ToyScaledCE.calls.append(self.factor)
        return self.factor * F.cross_entropy(logits.float(), y, reduction="none"), logits

    def on_epoch_end(self, trainer, epoch) -> None:
        self.epochs_seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_seen = int(state["epochs_seen"])


def _toy_last_loss(*, loss: np.ndarray, power: float) -> np.ndarray:
    return loss[:, -1].astype(np.float64) ** power


@pytest.fixture
def toys() -> Iterator[None]:
    register_method(
        ToyScaledCE,
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {"factor": {"type": "number", "exclusiveMinimum": 0, "default": 1.0}},
        },
    )
    register_score(
        "toy_last",
        needs=("loss",),
        description="last-epoch loss to a power",
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {"power": {"type": "number", "default": 1.0}},
        },
    )(_toy_last_loss)
    yield
    METHODS.pop("toy_scaled")
    SCORES.pop("toy_last")
    config_mod._EXTRA["methods"].pop("toy_scaled")
    config_mod._EXTRA["scores"].pop("toy_last")


def test_toy_method_and_score_run_through_the_engine_and_the_steps(
    toys: None, tmp_path: Path
) -> None:
    raw = json.loads(json.dumps(TINY))
    raw["defaults"]["train"]["method"] = "toy_scaled"
    raw["defaults"]["methods"] = {"toy_scaled": {"factor": 0.5}}
    raw["defaults"]["scores"] = {"toy_last": {"power": 2.0}}
    raw["defaults"]["assign"] = {"scores": ["toy_last", "mapd_knn", "mapd"]}
    cfg = validate_config({**raw, "results": str(tmp_path / "res")})
    # the schema filled the test-only sections, with their own defaults where not given
    assert cfg["defaults"]["methods"]["toy_scaled"] == {"factor": 0.5}
    assert validate_config(TINY)["defaults"]["methods"]["toy_scaled"] == {"factor": 1.0}
    with pytest.raises(config_mod.ConfigError, match="toy_scaled/factor"):
        validate_config({**raw, "defaults": {"methods": {"toy_scaled": {"factor": -1}}}})

    lay = Layout.of(cfg)
    ToyScaledCE.calls.clear()
    steps.cscores(cfg, "digits", lay.cscores("digits"))
    steps.probes(cfg, "digits", 0, lay.cscores("digits"), lay.probes("digits", 0))
    steps.train(
        cfg,
        "digits",
        0,
        lay.probes("digits", 0),
        lay.run("digits", 0),
        lay.partial(lay.run("digits", 0)),
    )
    steps.assign(
        cfg, "digits", lay.probes("digits", 0), lay.run("digits", 0), lay.assign("digits", 0)
    )

    run = Run.load(lay.run("digits", 0))
    assert ToyScaledCE.calls and set(ToyScaledCE.calls) == {0.5}  # the configured setting
    assert run.metrics["method"] == {"name": "toy_scaled", "settings": {"factor": 0.5}}
    # the training loss is the scaled CE: half of what plain CE would report at the same point
    assert run.epoch_rows[0]["train_loss"] < 1.5  # CE starts near log(10) = 2.3
    md = Assignment.load(lay.assign("digits", 0)).metadata
    np.testing.assert_allclose(
        md["score_toy_last"], np.asarray(run.loss[:, -1], np.float64) ** 2, rtol=1e-12
    )
    np.testing.assert_array_equal(md["score_mapd_knn"], md["p_random_labels"])


def test_audit_numbers_equal_those_recorded_on_main_before_the_house(tmp_path: Path) -> None:
    """The same tiny audit as tests/golden/audit_digits_tiny.json, recorded from main at
    6f7b08a with the same call sequence on one thread: structure changed, science did not."""
    gold = json.loads(
        (Path(__file__).parent.parent / "golden" / "audit_digits_tiny.json").read_text()
    )
    cfg = validate_config({**TINY, "results": str(tmp_path)})
    steps.cscores(cfg, "digits", tmp_path / "c.npz")
    steps.probes(cfg, "digits", 0, tmp_path / "c.npz", tmp_path / "p")
    steps.train(cfg, "digits", 0, tmp_path / "p", tmp_path / "r", tmp_path / "partial")
    held = steps.assign(cfg, "digits", tmp_path / "p", tmp_path / "r", tmp_path / "a")
    run = Run.load(tmp_path / "r")
    assert {k: v["accuracy"] for k, v in held["settings"].items()} == gold["heldout"]
    assert run.final_test_acc == pytest.approx(gold["final_test_acc"], abs=1e-6)
    np.testing.assert_allclose(run.loss[:3], gold["loss_first_rows"], rtol=0, atol=1e-5)
    assert float(np.asarray(run.loss, np.float64).sum()) == pytest.approx(
        gold["loss_sum"], rel=1e-6
    )


def test_the_audit_is_the_first_family_and_can_be_switched_off() -> None:
    assert next(iter(FAMILIES)) == "audit"
    cfg = validate_config(TINY)
    assert active(cfg) == ["audit"]
    assert family("audit").title == "MAP-D audit"
    off = validate_config({**TINY, "audit": {"activate": False}})
    assert active(off) == []
    assert all_jobs(off) == [("data", "digits")]
    steps_of = {s for s, _ in all_jobs(cfg)}
    assert steps_of == {"data", "cscores", "probes", "train", "assign", "figures", "issues"}


def test_dvc_yaml_is_the_generated_one(repo_root: Path) -> None:
    cfg = load_config(repo_root / "config" / "config.yaml")
    text = dvc_yaml(cfg, config_file="config/config.yaml")
    assert (repo_root / "dvc.yaml").read_text() == text, (
        "run: mapd dvc --config config/config.yaml --out dvc.yaml"
    )
    assert "results/metrics/audit.json" in text and "results/partial" not in text
