"""Label-noise detectors from training dynamics: each score by hand, its decision, its options."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from mapd.config import schema
from mapd.errors import ConfigError, DataError
from mapd.scores import SCORES, Inputs, compute_score, describe, flag_issues
from mapd.scores.detectors import (
    aum_cutoff,
    confident_learning_flag,
    confident_learning_score,
    datamap_statistics,
    forgetting_events,
)
from mapd.scores.mixture import loss_posterior

DETECTORS = ("loss_last", "aum", "forgetting", "datamap", "el2n", "bmm", "confident_learning")


def _margins_by_loop(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, T) logit of the label minus the largest other logit, one example/epoch at a time."""
    n, t, _ = logits.shape
    out = np.empty((n, t))
    for i in range(n):
        for e in range(t):
            others = [v for c, v in enumerate(logits[i, e]) if c != labels[i]]
            out[i, e] = logits[i, e, labels[i]] - max(others)
    return out


# three examples, four epochs, three classes
LOGITS = np.array(
    [
        [[2, 1, 0], [3, 0, 1], [1, 2, 0], [4, 1, 1]],  # label 0: margins 1, 2, -1, 3
        [[0, 1, 2], [1, 1, 0], [0, 3, 1], [2, 0, 1]],  # label 1: margins -1, 0, 2, -2
        [[5, 0, 1], [4, 0, 0], [3, 1, 0], [2, 2, 1]],  # label 2: margins -4, -4, -3, -1
    ],
    dtype=np.float64,
)
LOGIT_LABELS = np.array([0, 1, 2])
# threshold samples: epochs 1-2 at x, epochs 3-4 at y
THR_X = np.array([-5.0, -4, -3, -2, -1])
THR_Y = np.array([-3.0, -2, -1, 0, 1])
THRESHOLD_MARGIN = np.stack([THR_X, THR_X, THR_Y, THR_Y], axis=1)


def test_aum_is_minus_the_mean_margin_of_hand_made_logits() -> None:
    margin = _margins_by_loop(LOGITS, LOGIT_LABELS)
    np.testing.assert_array_equal(margin, [[1, 2, -1, 3], [-1, 0, 2, -2], [-4, -4, -3, -1]])
    got = compute_score("aum", Inputs(margin=margin))
    np.testing.assert_allclose(got, [-5 / 4, 1 / 4, 12 / 4])  # AUM 1.25, -0.25, -3
    got2 = compute_score("aum", Inputs(margin=margin), upto=2)
    np.testing.assert_allclose(got2, [-1.5, 0.5, 4.0])  # first two epochs only
    np.testing.assert_allclose(compute_score("aum", Inputs(margin=margin), upto=4), got)


def test_aum_cutoff_is_the_percentile_of_the_threshold_samples_aum() -> None:
    # AUMs of the threshold samples: all epochs (x + y) / 2 = -4, -3, -2, -1, 0; upto=2: x
    # 99th percentile of 5 sorted values: position 0.99 * 4 = 3.96, between the 4th and 5th
    assert aum_cutoff(THRESHOLD_MARGIN) == pytest.approx(-1 + 0.96 * 1)
    assert aum_cutoff(THRESHOLD_MARGIN, upto=2) == pytest.approx(-2 + 0.96 * 1)
    assert aum_cutoff(THRESHOLD_MARGIN, percentile=50) == pytest.approx(-2.0)
    assert aum_cutoff(THRESHOLD_MARGIN, percentile=100) == pytest.approx(0.0)
    assert aum_cutoff(THRESHOLD_MARGIN, percentile=0, upto=2) == pytest.approx(-5.0)
    assert aum_cutoff(THRESHOLD_MARGIN, percentile=25) == pytest.approx(-3.0)  # position 1.0


def test_aum_flags_examples_below_the_cutoff() -> None:
    inputs = Inputs(margin=_margins_by_loop(LOGITS, LOGIT_LABELS))  # AUM 1.25, -0.25, -3
    flags = flag_issues("aum", inputs, threshold_margin=THRESHOLD_MARGIN)  # cut-off -0.04
    np.testing.assert_array_equal(flags, [False, True, True])
    flags = flag_issues("aum", inputs, threshold_margin=THRESHOLD_MARGIN, percentile=50)
    np.testing.assert_array_equal(flags, [False, False, True])  # cut-off -2
    # upto=2: AUM 1.5, -0.5, -4 against the cut-off -1.04
    flags = flag_issues("aum", inputs, threshold_margin=THRESHOLD_MARGIN, upto=2)
    np.testing.assert_array_equal(flags, [False, False, True])
    # an AUM equal to the cut-off is not below it
    equal = Inputs(margin=np.full((1, 4), -2.0))
    assert not flag_issues("aum", equal, threshold_margin=THRESHOLD_MARGIN, percentile=50)[0]
    # the score's own options reach it through compute_score as well
    np.testing.assert_allclose(
        compute_score("aum", inputs, threshold_margin=THRESHOLD_MARGIN, percentile=50),
        [-1.25, 0.25, 3.0],
    )


def test_aum_flag_without_the_threshold_run_is_a_clear_error() -> None:
    inputs = Inputs(margin=_margins_by_loop(LOGITS, LOGIT_LABELS))
    with pytest.raises(DataError, match="threshold run is missing"):
        flag_issues("aum", inputs)
    # the ranking itself does not need it
    assert compute_score("aum", inputs).shape == (3,)


def test_aum_options_are_checked() -> None:
    inputs = Inputs(margin=np.zeros((3, 4)))
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ConfigError, match="upto"):
            compute_score("aum", inputs, upto=bad)
    with pytest.raises(ConfigError, match="percentile"):
        compute_score("aum", inputs, percentile=101)
    with pytest.raises(DataError, match="threshold_margin has 3 epochs and margin 4"):
        flag_issues("aum", inputs, threshold_margin=np.zeros((5, 3)))
    # with upto <= both horizons the runs may differ in length
    assert flag_issues("aum", inputs, threshold_margin=np.zeros((5, 3)), upto=3).shape == (3,)
    with pytest.raises(ConfigError, match=r"upto must be in 1\.\.3"):
        flag_issues("aum", inputs, threshold_margin=np.zeros((5, 3)), upto=4)
    with pytest.raises(DataError, match="NaN"):
        flag_issues("aum", inputs, threshold_margin=np.full((5, 4), np.nan))


def test_forgetting_events_by_hand() -> None:
    correct = np.array(
        [
            [1, 1, 1, 1, 1, 1],  # learned, never forgotten: 0
            [0, 0, 0, 0, 0, 0],  # never learned: T = 6, above any learned example
            [0, 1, 0, 1, 1, 1],  # learned, forgotten, relearned: 1
            [1, 0, 1, 0, 1, 0],  # the most a learned example can have: T / 2 = 3
            [0, 0, 0, 0, 0, 1],  # learned at the end: 0
            [1, 1, 1, 1, 1, 0],  # forgotten at the end: 1
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(forgetting_events(correct), [0, 0, 1, 3, 0, 1])
    got = compute_score("forgetting", Inputs(correct=correct))
    np.testing.assert_array_equal(got, [0, 6, 1, 3, 0, 1])
    assert flag_issues("forgetting", Inputs(correct=correct)) is None  # ranking only
    # one epoch: no event is possible, a never-correct example still ranks first
    one = np.array([[True], [False]])
    np.testing.assert_array_equal(compute_score("forgetting", Inputs(correct=one)), [0, 1])


def test_datamap_statistics_by_hand() -> None:
    ln = np.log
    loss = np.array([[0.0, ln(2), ln(4)], [ln(2), ln(2), ln(2)], [ln(4), 0.0, ln(4)]])
    # p(label) = exp(-loss): [1, 1/2, 1/4], [1/2, 1/2, 1/2], [1/4, 1, 1/4]
    confidence, variability = datamap_statistics(loss)
    np.testing.assert_allclose(confidence, [7 / 12, 1 / 2, 1 / 2])
    m = 7 / 12
    row0 = np.sqrt(((1 - m) ** 2 + (1 / 2 - m) ** 2 + (1 / 4 - m) ** 2) / 3)  # ddof 0
    row2 = np.sqrt(((1 / 4 - 1 / 2) ** 2 * 2 + (1 - 1 / 2) ** 2) / 3)
    np.testing.assert_allclose(variability, [row0, 0.0, row2], atol=1e-15)
    got = compute_score("datamap", Inputs(loss=loss))
    np.testing.assert_allclose(got, [5 / 12, 1 / 2, 1 / 2])


def test_el2n_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.0, 1.0, 0.0]])
    labels = np.array([0, 0, 1])
    got = compute_score("el2n", Inputs(labels=labels, probs=probs))
    # [-0.3, 0.2, 0.1] ; [-0.9, 0.1, 0.8] ; [0, 0, 0]
    np.testing.assert_allclose(got, [np.sqrt(0.14), np.sqrt(1.46), 0.0], atol=1e-15)
    with pytest.raises(DataError, match="rows must sum to 1"):
        compute_score("el2n", Inputs(labels=labels, probs=probs * 2 / 3))
    with pytest.raises(DataError, match="labels must be integers"):
        compute_score("el2n", Inputs(labels=labels.astype(float), probs=probs))


def test_loss_last_is_the_last_column() -> None:
    loss = np.array([[3.0, 2.0, 1.5], [0.1, 0.2, 4.0]], np.float32)
    np.testing.assert_array_equal(compute_score("loss_last", Inputs(loss=loss)), [1.5, 4.0])
    assert flag_issues("loss_last", Inputs(loss=loss)) is None


def test_bmm_is_the_mixture_posterior_of_the_chosen_epoch() -> None:
    rng = np.random.default_rng(0)
    loss = np.concatenate([rng.gamma(1.0, 0.1, (80, 4)), rng.gamma(9.0, 0.4, (20, 4))])
    got = compute_score("bmm", Inputs(loss=loss))
    np.testing.assert_array_equal(got, loss_posterior(loss[:, 3]))
    got1 = compute_score("bmm", Inputs(loss=loss), epoch=1)
    np.testing.assert_array_equal(got1, loss_posterior(loss[:, 1]))
    assert not np.array_equal(got, got1)
    np.testing.assert_array_equal(flag_issues("bmm", Inputs(loss=loss)), got >= 0.5)
    assert SCORES["bmm"].threshold == 0.5
    for bad in (4, -5, 1.0):
        with pytest.raises(ConfigError, match="epoch"):
            compute_score("bmm", Inputs(loss=loss), epoch=bad)


def _noisy_probs(
    seed: int = 0, *, belief: float = 0.9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (60,), probs (60, 3), is_noisy (60,)): every tenth label is wrong; the model puts
    ``belief`` on the true class plus a random share of the rest."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), 20)
    is_noisy = np.arange(60) % 10 == 0
    labels = np.where(is_noisy, (truth + 1) % 3, truth)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=60) * (1.0 - belief)
    probs[np.arange(60), truth] += belief
    return labels, probs, is_noisy


def test_confident_learning_equals_cleanlab() -> None:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, probs, is_noisy = _noisy_probs()
    inputs = Inputs(labels=labels, probs=probs)
    np.testing.assert_allclose(
        compute_score("confident_learning", inputs), 1 - get_label_quality_scores(labels, probs)
    )
    flags = flag_issues("confident_learning", inputs)  # all of cleanlab's defaults
    np.testing.assert_array_equal(flags, find_label_issues(labels, probs))
    np.testing.assert_array_equal(flags, is_noisy)  # the clearly wrong labels, and only them
    opts = {"method": "normalized_margin", "filter_by": "confident_learning", "n_jobs": 1}
    np.testing.assert_allclose(
        compute_score("confident_learning", inputs, **opts),
        1 - get_label_quality_scores(labels, probs, method="normalized_margin"),
    )
    np.testing.assert_array_equal(
        flag_issues("confident_learning", inputs, **opts),
        find_label_issues(labels, probs, filter_by="confident_learning", n_jobs=1),
    )
    with pytest.raises(ConfigError, match="filter_by must be one of"):
        flag_issues("confident_learning", inputs, filter_by="nope")


def test_confident_learning_options_reach_cleanlab() -> None:
    from cleanlab.filter import find_label_issues

    # ambiguous predictions, on which cleanlab's filters disagree
    labels, probs, _ = _noisy_probs(belief=0.4)
    inputs = Inputs(labels=labels, probs=probs)
    outs = {}
    for filter_by in ("prune_by_noise_rate", "both", "confident_learning"):
        outs[filter_by] = find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1)
        got = flag_issues("confident_learning", inputs, filter_by=filter_by, n_jobs=1)
        np.testing.assert_array_equal(got, outs[filter_by])
    assert len({tuple(v) for v in outs.values()}) == 3  # the three differ here
    np.testing.assert_array_equal(
        flag_issues("confident_learning", inputs), outs["prune_by_noise_rate"]
    )


def test_confident_learning_defaults_are_cleanlabs() -> None:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    theirs = {
        **inspect.signature(get_label_quality_scores).parameters,
        **inspect.signature(find_label_issues).parameters,
    }
    props = schema()["definitions"]["scores"]["properties"]["confident_learning"]["properties"]
    for fn in (confident_learning_score, confident_learning_flag):
        ours = inspect.signature(fn).parameters
        for name, prop in props.items():
            assert prop["default"] == theirs[name].default == ours[name].default, name


def _dynamics(seed: int = 0) -> tuple[Inputs, np.ndarray]:
    """Recorded arrays of 30 clean examples, learned early, and 10 mislabeled ones, whose
    logits favour their true class throughout; and the true noisy flags."""
    rng = np.random.default_rng(seed)
    n, t, c = 40, 6, 3
    truth = rng.integers(0, c, n)
    is_noisy = np.arange(n) >= 30
    labels = np.where(is_noisy, (truth + 1) % c, truth)
    logits = rng.normal(0.0, 0.3, (n, t, c))
    logits[np.arange(n), :, truth] += 1.0 + np.arange(t)
    logp = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    loss = -logp[np.arange(n), :, labels]
    inputs = Inputs(
        loss=loss,
        correct=logits.argmax(axis=2) == labels[:, None],
        labels=labels,
        margin=_margins_by_loop(logits, labels),
        probs=np.exp(logp[:, 1]),  # an early epoch's predictions (EL2N; CL wants held-out)
    )
    return inputs, is_noisy


@pytest.mark.parametrize("name", DETECTORS)
def test_higher_is_more_suspect(name: str) -> None:
    inputs, is_noisy = _dynamics()
    score = compute_score(name, inputs)
    assert score.dtype == np.float64 and score.shape == is_noisy.shape
    assert score[is_noisy].min() > score[~is_noisy].max(), name


def test_decisions_flag_the_mislabeled_examples() -> None:
    inputs, is_noisy = _dynamics()
    np.testing.assert_array_equal(flag_issues("bmm", inputs), is_noisy)
    np.testing.assert_array_equal(flag_issues("confident_learning", inputs, n_jobs=1), is_noisy)
    # threshold samples behave like the mislabeled: their margins are those of the noisy rows
    flags = flag_issues("aum", inputs, threshold_margin=inputs.margin[is_noisy], percentile=99)
    assert flags[~is_noisy].sum() == 0 and flags[is_noisy].sum() >= 9  # the top one is not below


def test_detectors_are_registered_with_their_options() -> None:
    sections = schema()["definitions"]["scores"]["properties"]
    for name in DETECTORS:
        assert name in SCORES and name in sections and describe(name)
        params = inspect.signature(SCORES[name].fn).parameters
        for option, prop in sections[name]["properties"].items():
            assert params[option].default == prop["default"], (name, option)
        if SCORES[name].flag is not None:
            flag_params = inspect.signature(SCORES[name].flag).parameters
            assert set(flag_params) == set(params), name  # called with the same options
    assert SCORES["aum"].needs == ("margin",) and SCORES["aum"].flag is not None
    assert SCORES["confident_learning"].flag is not None
