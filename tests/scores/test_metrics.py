"""Detection metrics of a score against the true noisy flags: against scikit-learn and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mapd.errors import DataError
from mapd.scores.metrics import detection_metrics, top_k


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_ap_equal_scikit_learn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    is_noisy = rng.random(300) < 0.3
    score = rng.normal(size=300) + 1.0 * is_noisy
    if ties:  # few distinct values: ties within and across the classes
        score = np.round(score)
    got = detection_metrics(is_noisy, score)
    assert got["auroc"] == pytest.approx(roc_auc_score(is_noisy, score), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(is_noisy, score), abs=1e-12)


def test_at_k_by_hand_with_a_tie_at_the_boundary() -> None:
    is_noisy = np.array([True, False, False, True, False, True])  # k = 3
    score = np.array([0.9, 0.5, 0.1, 0.5, 0.2, 0.7])
    # order: 0 (0.9), 5 (0.7), then 1 and 3 tied at 0.5: the lower index, 1 (clean), is taken
    np.testing.assert_array_equal(top_k(score, 3), [True, True, False, False, False, True])
    got = detection_metrics(is_noisy, score)
    assert got["precision_at_k"] == got["recall_at_k"] == got["f1_at_k"] == pytest.approx(2 / 3)
    # the same ranking with the tie resolved towards the noisy example finds all three
    score[3] = 0.51
    got = detection_metrics(is_noisy, score)
    assert got["precision_at_k"] == got["recall_at_k"] == got["f1_at_k"] == 1.0
    assert set(got) == {"auroc", "ap", "precision_at_k", "recall_at_k", "f1_at_k"}


def test_at_flags_by_hand_and_against_scikit_learn() -> None:
    is_noisy = np.array([True, False, False, True, False, True])
    score = np.arange(6.0)
    flags = np.array([True, True, False, False, False, False])
    # TP = 1 (row 0), FP = 1 (row 1), FN = 2 (rows 3, 5)
    got = detection_metrics(is_noisy, score, flags=flags)
    assert got["precision"] == pytest.approx(1 / 2)
    assert got["recall"] == pytest.approx(1 / 3)
    assert got["f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
    assert got["flagged"] == 2.0
    rng = np.random.default_rng(3)
    is_noisy, flags = rng.random(200) < 0.2, rng.random(200) < 0.3
    got = detection_metrics(is_noisy, rng.normal(size=200), flags=flags)
    assert got["precision"] == pytest.approx(precision_score(is_noisy, flags))
    assert got["recall"] == pytest.approx(recall_score(is_noisy, flags))
    assert got["f1"] == pytest.approx(f1_score(is_noisy, flags))
    assert got["flagged"] == flags.sum()


def test_integer_zero_one_flags_are_accepted() -> None:
    is_noisy = np.array([1, 0, 1, 0])
    got = detection_metrics(is_noisy, np.array([3.0, 2, 1, 0]), flags=np.array([1, 1, 0, 0]))
    assert got["precision"] == 0.5 and got["recall"] == 0.5 and got["auroc"] == 0.75


@pytest.mark.filterwarnings("error")
def test_degenerate_cases_are_nan_without_warnings() -> None:
    score = np.array([0.3, 0.1, 0.2, 0.4])
    none = np.zeros(4, bool)
    every = np.ones(4, bool)

    got = detection_metrics(none, score, flags=np.array([True, False, False, True]))
    for key in ("auroc", "ap", "precision_at_k", "recall_at_k", "f1_at_k", "recall"):
        assert math.isnan(got[key]), key
    assert got["precision"] == 0.0 and got["f1"] == 0.0 and got["flagged"] == 2.0

    got = detection_metrics(none, score, flags=none)  # nothing noisy, nothing flagged
    assert math.isnan(got["precision"]) and math.isnan(got["recall"]) and math.isnan(got["f1"])
    assert got["flagged"] == 0.0

    got = detection_metrics(every, score, flags=none)  # all noisy, nothing flagged
    assert math.isnan(got["auroc"]) and math.isnan(got["precision"])
    assert got["ap"] == 1.0 and got["precision_at_k"] == got["recall_at_k"] == 1.0
    assert got["recall"] == 0.0 and got["f1"] == 0.0

    got = detection_metrics(np.array([True]), np.array([0.5]))  # one example
    assert math.isnan(got["auroc"]) and got["ap"] == 1.0


def test_inputs_are_validated() -> None:
    is_noisy = np.array([True, False, True])
    with pytest.raises(DataError, match=r"score must be \(3,\)"):
        detection_metrics(is_noisy, np.zeros(4))
    with pytest.raises(DataError, match="NaN or inf"):
        detection_metrics(is_noisy, np.array([0.1, np.nan, 0.3]))
    with pytest.raises(DataError, match=r"flags must be \(3,\)"):
        detection_metrics(is_noisy, np.zeros(3), flags=np.zeros(2, bool))
    with pytest.raises(DataError, match="flags must be bool"):
        detection_metrics(is_noisy, np.zeros(3), flags=np.array([0.0, 1.0, 0.5]))
    with pytest.raises(DataError, match="is_noisy must be bool"):
        detection_metrics(np.array([0, 2, 1]), np.zeros(3))
    with pytest.raises(DataError, match=r"is_noisy must be \(N,\)"):
        detection_metrics(np.zeros((3, 1), bool), np.zeros(3))
    with pytest.raises(DataError, match="N = 0"):
        detection_metrics(np.zeros(0, bool), np.zeros(0))
