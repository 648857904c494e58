"""Per-example scores: the registry, validation at the entry, and each score by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mapd.config import schema
from mapd.errors import ConfigError, DataError
from mapd.scores import SCORES, Inputs, compute_score


def test_every_score_of_the_schema_is_registered_and_back() -> None:
    assert set(schema()["definitions"]["scores"]["properties"]) == set(SCORES)
    assert list(SCORES)[:2] == ["mapd_knn", "mapd"]  # MAP-D's scores come first
    assert SCORES["mapd"].threshold == SCORES["mapd_knn"].threshold == 0.5
    from mapd.scores import describe

    assert all(describe(name) for name in SCORES)


def test_mapd_knn_score_is_the_share_of_suspect_neighbours_by_hand() -> None:
    # probes on a line at 0, 1, 2, 10, 11, 12; the last three are suspect
    probe = np.array([[0.0, 0.0], [1, 1], [2, 2], [10, 10], [11, 11], [12, 12]], np.float32)
    suspect = np.array([False, False, False, True, True, True])
    loss = np.array([[0.4, 0.4], [11.2, 11.2], [6.4, 6.4]], np.float32)
    got = compute_score(
        "mapd_knn", Inputs(loss=loss, probe_loss=probe, probe_suspect=suspect), k=3, suspect=["x"]
    )
    # row 0: nearest 0, 1, 2 -> 0/3; row 1: 11, 12, 10 -> 3/3; row 2 at (6.4, 6.4): 10 at 5.09,
    # 2 at 6.22, 11 at 6.51 (then 1 at 7.64, 12 at 7.92) -> 2/3
    np.testing.assert_allclose(got, [0.0, 1.0, 2 / 3])


def _readout_inputs(rng: np.random.Generator) -> tuple[Inputs, np.ndarray]:
    """Probes: clean curves fall to 0 with a growing margin, suspect ones stay high with a
    negative margin; examples: clean, suspect, and "plausible confusions" halfway between."""
    t = np.linspace(0, 1, 6)
    clean_loss, noisy_loss = 2.0 * (1 - t), 2.0 - 0.3 * t
    clean_margin, noisy_margin = 4.0 * t - 1, -1.0 - 0.2 * t

    def curves(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = frac[:, None]
        noise = 0.1 * rng.standard_normal((len(frac), 2, len(t)))
        loss = (1 - f) * clean_loss + f * noisy_loss + noise[:, 0]
        margin = (1 - f) * clean_margin + f * noisy_margin + noise[:, 1]
        return loss.astype(np.float32), margin.astype(np.float32)

    suspect = np.repeat([False, True], 30)
    probe_loss, probe_margin = curves(suspect.astype(float))
    frac = np.r_[np.zeros(20), np.ones(20), np.full(20, 0.35), np.full(20, 0.2)]
    loss, margin = curves(frac)
    inputs = Inputs(
        loss=loss,
        margin=margin,
        probe_loss=probe_loss,
        probe_margin=probe_margin,
        probe_suspect=suspect,
    )
    return inputs, frac


def test_mapd_readout_is_a_logistic_regression_on_standardised_probe_curves() -> None:
    from sklearn.linear_model import LogisticRegression

    inputs, _ = _readout_inputs(np.random.default_rng(0))
    got = compute_score("mapd", inputs, k=20, suspect=["random_labels"], clean=["x"], c=0.3)
    ref = np.concatenate([inputs.probe_loss, -inputs.probe_margin], 1).astype(np.float64)
    x = np.concatenate([inputs.loss, -inputs.margin], 1).astype(np.float64)
    mean, std = ref.mean(0), ref.std(0)
    model = LogisticRegression(C=0.3, class_weight="balanced", max_iter=5000)
    model.fit((ref - mean) / std, inputs.probe_suspect)
    np.testing.assert_allclose(got, model.predict_proba((x - mean) / std)[:, 1], rtol=1e-6)


def test_mapd_readout_ranks_curves_between_the_probes_where_the_share_cannot() -> None:
    inputs, frac = _readout_inputs(np.random.default_rng(1))
    readout = compute_score("mapd", inputs, k=20, suspect=["random_labels"], c=0.1)
    share = compute_score("mapd_knn", inputs, k=20)
    # clean < 0.2 of the way < 0.35 of the way < suspect, on average and by rank
    means = [readout[frac == f].mean() for f in (0.0, 0.2, 0.35, 1.0)]
    assert means == sorted(means) and means[0] < 0.5 < means[-1]
    # the k-NN share calls almost every in-between curve clean: it cannot rank them
    between = (frac > 0) & (frac < 1)
    assert (share[between] == 0).mean() > 0.9
    assert np.unique(readout[between]).size == between.sum()


def test_mapd_readout_needs_both_probe_classes() -> None:
    inputs, _ = _readout_inputs(np.random.default_rng(0))
    one_class = Inputs(**{**inputs.__dict__, "probe_suspect": np.ones(60, bool)})
    with pytest.raises(DataError, match="both suspect and clean"):
        compute_score("mapd", one_class, k=20, c=0.1)
    with pytest.raises(DataError, match=r"needs \['margin'"):
        compute_score("mapd", Inputs(**{**inputs.__dict__, "margin": None}), k=20, c=0.1)


def test_probe_references_pick_the_score_categories() -> None:
    from mapd.scores import probe_references

    category = np.array(["", "typical", "random_labels", "ood", "random_sample", "atypical"])
    rows, suspect = probe_references(
        category, np.arange(1, 6), {"suspect": ["random_labels"], "clean": ["typical", "atypical"]}
    )
    assert rows.tolist() == [1, 2, 5] and suspect.tolist() == [False, True, False]
    rows, suspect = probe_references(category, np.array([2, 3]), {"suspect": ["random_labels"]})
    assert rows.tolist() == [2, 3] and suspect.tolist() == [True, False]


def test_loss_score_is_the_mean_loss() -> None:
    loss = np.array([[1.0, 3.0], [0.5, 0.5]], np.float32)
    np.testing.assert_allclose(compute_score("loss", Inputs(loss=loss)), [2.0, 0.5])


def test_inputs_are_validated_once_with_one_clear_message() -> None:
    loss = np.ones((4, 3), np.float32)
    with pytest.raises(DataError, match=r"score 'mapd_knn' needs \['probe_loss', 'probe_suspe"):
        compute_score("mapd_knn", Inputs(loss=loss), k=3)
    with pytest.raises(DataError, match="probe_loss must be"):
        compute_score(
            "mapd_knn",
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
