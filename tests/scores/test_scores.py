"""Per-example scores: the registry, validation at the entry, and each score by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mapd.config import schema
from mapd.errors import ConfigError, DataError
from mapd.scores import SCORES, Inputs, compute_score


def test_every_score_of_the_schema_is_registered_and_back() -> None:
    assert set(schema()["definitions"]["scores"]["properties"]) == set(SCORES)
    assert next(iter(SCORES)) == "mapd"  # the MAP-D probability is the first entry
    assert SCORES["mapd"].threshold == 0.5
    assert all(s.description for s in SCORES.values())


def test_mapd_score_is_the_share_of_suspect_neighbours_by_hand() -> None:
    # probes on a line at 0, 1, 2, 10, 11, 12; the last three are suspect
    probe = np.array([[0.0, 0.0], [1, 1], [2, 2], [10, 10], [11, 11], [12, 12]], np.float32)
    suspect = np.array([False, False, False, True, True, True])
    loss = np.array([[0.4, 0.4], [11.2, 11.2], [6.4, 6.4]], np.float32)
    got = compute_score(
        "mapd", Inputs(loss=loss, probe_loss=probe, probe_suspect=suspect), k=3, suspect=["x"]
    )
    # row 0: nearest 0, 1, 2 -> 0/3; row 1: 11, 12, 10 -> 3/3; row 2 at (6.4, 6.4): 10 at 5.09,
    # 2 at 6.22, 11 at 6.51 (then 1 at 7.64, 12 at 7.92) -> 2/3
    np.testing.assert_allclose(got, [0.0, 1.0, 2 / 3])


def test_loss_score_is_the_mean_loss() -> None:
    loss = np.array([[1.0, 3.0], [0.5, 0.5]], np.float32)
    np.testing.assert_allclose(compute_score("loss", Inputs(loss=loss)), [2.0, 0.5])


def test_inputs_are_validated_once_with_one_clear_message() -> None:
    loss = np.ones((4, 3), np.float32)
    with pytest.raises(DataError, match=r"score 'mapd' needs \['probe_loss', 'probe_suspect'\]"):
        compute_score("mapd", Inputs(loss=loss), k=3)
    with pytest.raises(DataError, match="probe_loss must be"):
        compute_score(
            "mapd",
            Inputs(
                loss=loss, probe_loss=np.ones((5, 2), np.float32), probe_suspect=np.ones(5, bool)
            ),
            k=3,
        )
    bad = loss.copy()
    bad[1, 1] = np.nan
    with pytest.raises(DataError, match="loss contains NaN"):
        compute_score("loss", Inputs(loss=bad))
    with pytest.raises(DataError, match="correct must be bool"):
        compute_score("loss", Inputs(loss=loss, correct=np.ones((4, 3))))
    with pytest.raises(DataError, match="must be \\(N, T\\)"):
        compute_score("loss", Inputs(loss=np.ones(4, np.float32)))
    with pytest.raises(ConfigError, match="unknown score 'nope'"):
        compute_score("nope", Inputs(loss=loss))
