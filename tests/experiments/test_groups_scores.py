"""The minority-group detectors (mapd.scores.groups via the family's ``detect``) against hand
computations: MAP-D's k-NN share of minority validation curves and JTT's error set."""

from __future__ import annotations

import numpy as np
import pytest

from mapd.config import validate_config
from mapd.errors import ConfigError
from mapd.experiments.groups.steps import detect
from mapd.scores import SCORES, Inputs, compute_score, flag_issues
from mapd.scores.metrics import detection_metrics


def _cfg(k: int, threshold: float = 0.8, epoch: int = 1, sweep: list[int] | None = None) -> dict:
    return validate_config(
        {
            "seeds": [0],
            "defaults": {
                "assign": {"k": k},
                "scores": {"jtt": {"epoch": epoch}, "mapd_minority": {"threshold": threshold}},
            },
            "datasets": {"spurious_digits": {}},
            "audit": {"activate": False},
            "groups": {"activate": True, "jtt_sweep": sweep or []},
        }
    )


# one-epoch curves: validation minority near 1.2, majority near 0.3
VAL_MINORITY = [1.0, 1.1, 1.2, 1.3, 1.4]
VAL_MAJORITY = [0.0, 0.1, 0.2, 0.3, 0.45, 0.6]
TRAIN = [1.2, 0.92, 0.72, 0.05]
TRAIN_MINORITY = [True, True, False, False]


def _rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    loss = np.array(TRAIN + VAL_MINORITY + VAL_MAJORITY, dtype=np.float32)[:, None]
    is_val = np.arange(len(loss)) >= len(TRAIN)
    minority = np.array(TRAIN_MINORITY + [True] * 5 + [False] * 6)
    return loss, is_val, minority


def test_mapd_minority_equals_the_hand_computed_neighbour_shares() -> None:
    loss, is_val, minority = _rows()
    correct = np.ones_like(loss, dtype=bool)
    scores, flags = detect(_cfg(k=5), "spurious_digits", loss, correct, is_val, minority)
    # 1.2: its 5 nearest are the 5 minority curves (the next, 0.6, is 0.6 away)
    # 0.92: 1.0 (.08), 1.1 (.18), 1.2 (.28), 0.6 (.32), 1.3 (.38) -> 4 of 5
    # 0.72: 0.6 (.12), 0.45 (.27), 1.0 (.28), 1.1 (.38), 0.3 (.42) -> 2 of 5
    # 0.05: the 5 nearest majority curves
    np.testing.assert_allclose(scores["mapd_minority"], [1.0, 0.8, 0.4, 0.0])
    # the authors' decision is p > 0.8: exactly 0.8 is not flagged
    np.testing.assert_array_equal(flags["mapd_minority"], [True, False, False, False])
    m = detection_metrics(
        np.array(TRAIN_MINORITY), scores["mapd_minority"], flags=flags["mapd_minority"]
    )
    assert (m["precision"], m["recall"]) == (1.0, 0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auroc"] == 1.0


def test_threshold_is_a_setting() -> None:
    loss, is_val, minority = _rows()
    correct = np.ones_like(loss, dtype=bool)
    _, flags = detect(_cfg(k=5, threshold=0.3), "spurious_digits", loss, correct, is_val, minority)
    np.testing.assert_array_equal(flags["mapd_minority"], [True, True, True, False])


def test_jtt_error_set_is_the_misclassified_examples_at_epoch_t() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((50, 6)) < 0.7
    loss = rng.random((50, 6)).astype(np.float32)
    is_val = np.arange(50) >= 30
    minority = rng.random(50) < 0.3
    cfg = _cfg(k=5, epoch=4, sweep=[1, 6])
    scores, flags = detect(cfg, "spurious_digits", loss, correct, is_val, minority)
    for t in (1, 4, 6):
        np.testing.assert_array_equal(flags[f"jtt_T{t}"], ~correct[:30, t - 1])
        np.testing.assert_array_equal(scores[f"jtt_T{t}"], (~correct[:30, t - 1]).astype(float))
    # the second stage's set: T = scores/jtt/epoch
    np.testing.assert_array_equal(flags["jtt"], ~correct[:30, 3])
    assert set(scores) == {"jtt_T1", "jtt_T4", "jtt_T6", "jtt", "mapd_minority"}


def test_jtt_epoch_beyond_the_recorded_ones_is_a_config_error() -> None:
    inputs = Inputs(correct=np.ones((4, 3), dtype=bool))
    with pytest.raises(ConfigError, match=r"1\.\.3"):
        compute_score("jtt", inputs, epoch=4)
    with pytest.raises(ConfigError, match=r"1\.\.3"):
        flag_issues("jtt", inputs, epoch=0)


def test_mapd_minority_needs_k_validation_curves() -> None:
    inputs = Inputs(
        loss=np.zeros((3, 2)),
        probe_loss=np.zeros((4, 2)),
        probe_suspect=np.array([True, False, True, False]),
    )
    with pytest.raises(ConfigError, match="exceeds the 4 validation curves"):
        compute_score("mapd_minority", inputs, k=5, threshold=0.8)


def test_both_detectors_are_registered_scores() -> None:
    assert SCORES["jtt"].needs == ("correct",)
    assert SCORES["mapd_minority"].needs == ("loss", "probe_loss", "probe_suspect")
