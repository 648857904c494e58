"""Label-noise losses on hand-made batches: bootstrapping (Reed et al.), forward and backward
correction (Patrini et al.), the class-prior regulariser (Arazo et al.) and the anchor-point
estimate of the transition matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mapd.methods.losses import (
    backward_corrected_loss,
    bootstrap_loss,
    class_prior_regulariser,
    estimate_transition,
    forward_corrected_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LOGITS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]
LABELS = [1, 1, 0, 2]


def _softmax_rows(rows: list[list[float]]) -> list[list[float]]:
    out = []
    for row in rows:
        e = [math.exp(v) for v in row]
        out.append([v / sum(e) for v in e])
    return out


def _ce(row: list[float], c: int) -> float:
    """-log softmax(row)[c]."""
    return math.log(sum(math.exp(v) for v in row)) - row[c]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS), torch.tensor(LABELS)


# bootstrapping


@pytest.mark.parametrize("hard", [True, False])
def test_bootstrap_with_weight_0_is_ce_on_the_label(hard: bool) -> None:
    logits, y = _batch()
    got = bootstrap_loss(logits, y, 0.0, hard=hard)
    expected = [_ce(row, c) for row, c in zip(LOGITS, LABELS, strict=True)]
    assert got.dtype == torch.float32 and got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_hard_bootstrap_with_weight_1_is_ce_on_the_argmax() -> None:
    logits, y = _batch()
    # argmax of each row by hand: 0, 1, 2, and 0 for the tie (first index)
    expected = [_ce(LOGITS[0], 0), _ce(LOGITS[1], 1), _ce(LOGITS[2], 2), _ce(LOGITS[3], 0)]
    got = bootstrap_loss(logits, y, 1.0, hard=True)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_soft_bootstrap_with_weight_1_is_the_entropy_of_the_prediction() -> None:
    logits, y = _batch()
    entropy = [-sum(p * math.log(p) for p in row) for row in _softmax_rows(LOGITS)]
    got = bootstrap_loss(logits, y, 1.0, hard=False)
    np.testing.assert_allclose(got.numpy(), entropy, rtol=1e-6)
    assert got[3].item() == pytest.approx(math.log(3.0), rel=1e-6)  # uniform row


def test_bootstrap_target_from_other_logits_and_half_precision() -> None:
    logits, y = _batch()
    target = torch.tensor([[0.0, 0.0, 5.0]] * 4)  # argmax 2 for every row
    got = bootstrap_loss(logits.half(), y, 0.25, hard=True, target_logits=target)
    half = [[float(torch.tensor(v).half()) for v in row] for row in LOGITS]
    expected = [
        0.75 * _ce(row, c) + 0.25 * _ce(row, 2) for row, c in zip(half, LABELS, strict=True)
    ]
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("hard", [True, False])
def test_per_example_weight_mixes_each_row(hard: bool) -> None:
    logits, y = _batch()
    w = torch.tensor([0.0, 0.3, 0.8, 1.0])
    got = bootstrap_loss(logits, y, w, hard=hard)
    q = _softmax_rows(LOGITS)
    expected = []
    for row, c, wi, qi in zip(LOGITS, LABELS, w.tolist(), q, strict=True):
        if hard:
            target = _ce(row, max(range(3), key=lambda k, r=row: r[k]))
        else:
            target = sum(qk * _ce(row, k) for k, qk in enumerate(qi))
        expected.append((1 - wi) * _ce(row, c) + wi * target)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("hard", [True, False])
def test_bootstrap_gradient_flows_through_logits_only(hard: bool) -> None:
    logits, y = _batch()
    logits.requires_grad_(True)
    target = torch.tensor(LOGITS).mul(2.0).requires_grad_(True)
    w = torch.full((4,), 0.5, requires_grad=True)
    bootstrap_loss(logits, y, w, hard=hard, target_logits=target).sum().backward()
    assert target.grad is None and w.grad is None
    # with a detached target, the gradient of each row is softmax - (0.5 onehot(y) + 0.5 t)
    p = torch.softmax(torch.tensor(LOGITS), 1)
    t = torch.softmax(torch.tensor(LOGITS) * 2.0, 1)
    if hard:
        t = torch.nn.functional.one_hot(t.argmax(1), 3).float()
    expected = p - 0.5 * torch.nn.functional.one_hot(torch.tensor(LABELS), 3).float() - 0.5 * t
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-6)


def test_soft_bootstrap_self_target_gradient_excludes_the_target() -> None:
    # the default target is logits itself: detached, so weight 1 gives softmax - softmax = 0
    # per row, whereas the entropy's own gradient would not vanish
    logits, y = _batch()
    logits.requires_grad_(True)
    bootstrap_loss(logits, y, 1.0, hard=False).sum().backward()
    torch.testing.assert_close(logits.grad, torch.zeros(4, 3), atol=1e-7, rtol=0)


def test_bootstrap_validation() -> None:
    logits, y = _batch()
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\], got 1.5"):
        bootstrap_loss(logits, y, 1.5, hard=True)
    with pytest.raises(ValueError, match=r"weight must be a float or \(B,\) = \(4,\)"):
        bootstrap_loss(logits, y, torch.ones(3), hard=True)
    with pytest.raises(ValueError, match=r"labels must be \(B,\) = \(4,\), got shape \(3,\)"):
        bootstrap_loss(logits, y[:3], 0.5, hard=True)
    with pytest.raises(ValueError, match=r"logits must be \(B, C\)"):
        bootstrap_loss(logits[0], y, 0.5, hard=True)
    with pytest.raises(ValueError, match="target_logits must be"):
        bootstrap_loss(logits, y, 0.5, hard=True, target_logits=logits[:2])


# loss correction


def test_corrections_with_the_identity_are_ce() -> None:
    logits, y = _batch()
    ce = [_ce(row, c) for row, c in zip(LOGITS, LABELS, strict=True)]
    eye = torch.eye(3)
    np.testing.assert_allclose(forward_corrected_loss(logits, y, eye).numpy(), ce, rtol=1e-6)
    np.testing.assert_allclose(backward_corrected_loss(logits, y, eye).numpy(), ce, rtol=1e-6)
    np.testing.assert_allclose(forward_corrected_loss(logits, y, np.eye(3)).numpy(), ce, rtol=1e-6)


def test_forward_correction_with_a_known_t_by_hand() -> None:
    t = [[0.8, 0.2], [0.3, 0.7]]
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    y = torch.tensor([0, 0, 1])
    expected = []
    for row, c in zip(_softmax_rows(logits.tolist()), [0, 0, 1], strict=True):
        # p(observed c | x) = sum_i p(true i | x) T[i, c]
        expected.append(-math.log(row[0] * t[0][c] + row[1] * t[1][c]))
    got = forward_corrected_loss(logits, y, torch.tensor(t))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_forward_correction_clamps_a_zero_probability() -> None:
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # label 1 is never observed
    got = forward_corrected_loss(torch.zeros(1, 2), torch.tensor([1]), t)
    assert got.item() == pytest.approx(-math.log(1e-7), rel=1e-6)  # Patrini's Keras epsilon


def test_backward_correction_is_bounded_below() -> None:
    """With a T whose inverse has negative entries, pushing a class's probability to 0 would
    send the loss to -inf; the probabilities are clipped to [1e-7, 1 - 1e-7] as in Patrini's
    code, so the loss stays above a finite bound however large the logits get."""
    t = torch.tensor([[0.6, 0.4], [0.4, 0.6]])
    t_inv = torch.linalg.inv(t)
    bound = float(t_inv.clamp(max=0).sum(1).max()) * -math.log(1e-7)
    for scale in (1e2, 1e4, 1e8):
        got = backward_corrected_loss(torch.tensor([[scale, -scale]]), torch.tensor([1]), t)
        assert torch.isfinite(got).all() and got.item() >= bound - 1e-3


def test_backward_correction_with_a_known_t_by_hand() -> None:
    t = [[0.8, 0.2], [0.3, 0.7]]
    det = 0.8 * 0.7 - 0.2 * 0.3
    t_inv = [[0.7 / det, -0.2 / det], [-0.3 / det, 0.8 / det]]
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, -0.5]])
    labels = [0, 0, 1]
    expected = []
    for row, c in zip(logits.tolist(), labels, strict=True):
        expected.append(t_inv[c][0] * _ce(row, 0) + t_inv[c][1] * _ce(row, 1))
    got = backward_corrected_loss(logits, torch.tensor(labels), np.array(t))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_backward_correction_rejects_singular_or_misshapen_t() -> None:
    logits, y = _batch()
    singular = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="transition is singular"):
        backward_corrected_loss(logits, y, singular)
    with pytest.raises(ValueError, match=r"transition must be \(C, C\) = \(3, 3\)"):
        backward_corrected_loss(logits, y, torch.eye(2))
    with pytest.raises(ValueError, match=r"transition must be \(C, C\) = \(3, 3\)"):
        forward_corrected_loss(logits, y, torch.ones(3))


# class prior


def test_class_prior_regulariser() -> None:
    uniform_mean = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.3, 0.1, 0.6]])
    assert class_prior_regulariser(uniform_mean).item() == pytest.approx(0.0, abs=1e-7)
    skewed = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # mean (0.7, 0.3)
    expected = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    got = class_prior_regulariser(skewed)
    assert got.ndim == 0 and got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() > 0.0
    with pytest.raises(ValueError, match=r"probs must be \(B, C\)"):
        class_prior_regulariser(torch.ones(3))


def test_class_prior_regulariser_pushes_towards_balance() -> None:
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0]], requires_grad=True)
    class_prior_regulariser(torch.softmax(logits, 1)).backward()
    # class 0 is over-predicted: raising its logit would raise the term
    assert logits.grad is not None and torch.all(logits.grad[:, 0] > 0)


# transition estimate

T_TRUE = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.05, 0.15, 0.8]])


def _anchor_probs() -> np.ndarray:
    """100 rows: per class 3 outliers more confident than the anchor (the top 3% of its column,
    which the 0.97 quantile drops), the 3 rows of T_TRUE and 88 low-confidence fillers."""
    outliers = []
    for i in range(3):
        for top in (0.9, 0.95, 0.99):
            row = np.full(3, (1.0 - top) / 2)
            row[i] = top
            outliers.append(row)
    rng = np.random.default_rng(0)
    fillers = rng.dirichlet(np.full(3, 4.0), size=200)
    fillers = fillers[fillers.max(1) < 0.6][:88]  # below every anchor's p(i | x)
    assert len(fillers) == 88
    probs = np.concatenate([np.array(outliers), T_TRUE, fillers])
    return probs[rng.permutation(100)]


def test_estimate_transition_recovers_the_anchors() -> None:
    probs = _anchor_probs()
    # 100 values: the "higher" 97th percentile is sorted[ceil(0.97 * 99)] = sorted[97], so the
    # 3 largest of each column (the outliers) are dropped and the 4th, the anchor, remains
    for i in range(3):
        assert np.sort(probs[:, i])[96] == T_TRUE[i, i]
    got = estimate_transition(probs)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, T_TRUE, rtol=1e-12)


def test_estimate_transition_quantile_1_takes_the_most_confident_example() -> None:
    got = estimate_transition(_anchor_probs(), quantile=1.0)
    expected = np.full((3, 3), 0.005) + np.eye(3) * (0.99 - 0.005)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_estimate_transition_renormalises_rows() -> None:
    probs = np.array([[0.7, 0.3001], [0.2, 0.7999]])  # rows off by 1e-4, within tolerance
    got = estimate_transition(probs, quantile=1.0)
    np.testing.assert_allclose(got.sum(1), [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(got[0], [0.7 / 1.0001, 0.3001 / 1.0001], rtol=1e-12)


@pytest.mark.parametrize(
    ("probs", "quantile", "message"),
    [
        (np.ones(3) / 3, 0.97, r"probs must be \(N, C\), got shape \(3,\)"),
        (np.empty((0, 3)), 0.97, "needs at least one row and class"),
        (np.array([[0.5, 0.6]]), 0.97, "rows of probs must sum to 1"),
        (np.array([[np.nan, 1.0]]), 0.97, "must be finite and non-negative"),
        (np.array([[-0.5, 1.5]]), 0.97, "must be finite and non-negative"),
        (np.array([[0.5, 0.5]]), 0.0, r"quantile must be in \(0, 1\], got 0.0"),
        (np.array([[0.5, 0.5]]), 1.5, r"quantile must be in \(0, 1\], got 1.5"),
    ],
)
def test_estimate_transition_validation(probs: np.ndarray, quantile: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_transition(probs, quantile=quantile)
