"""Arazo et al.'s two-component Beta mixture on losses: scaling, one EM step and the lookup table
by hand, recovery of two known modes, degenerate inputs, validation and the plain-data round
trip."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from mapd.scores.mixture import BetaMixture, fit_beta_mixture, loss_posterior

EPS = 1e-4


def _two_modes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2000 draws of Beta(2, 8) (label 0) then 1000 of Beta(8, 2) (label 1)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.beta(2.0, 8.0, 2000), rng.beta(8.0, 2.0, 1000)])
    return x, np.r_[np.zeros(2000, bool), np.ones(1000, bool)]


def _grid(j: int) -> float:
    """The table's j-th point: linspace(eps, 1 - eps, 100)[j]."""
    return EPS + j * (1.0 - 2.0 * EPS) / 99.0


def _hand_posterior(m: BetaMixture, x: float) -> float:
    """w_1 B_1(x) / (w_0 B_0(x) + w_1 B_1(x) + 1e-12) with scipy's Beta density."""
    p0 = m.weights[0] * stats.beta.pdf(x, m.alphas[0], m.betas[0])
    p1 = m.weights[1] * stats.beta.pdf(x, m.alphas[1], m.betas[1])
    return p1 / (p0 + p1 + 1e-12)


def test_losses_are_clipped_to_the_5th_and_95th_percentile_and_scaled() -> None:
    losses = np.random.default_rng(3).permutation(np.arange(101.0))
    m = fit_beta_mixture(losses)
    # 101 values 0..100: the p-th percentile (linear) is exactly p
    assert (m.lo, m.hi) == (5.0, 95.0)
    got = m.scale(np.array([-3.0, 5.0, 50.0, 95.0, 1e9]))
    np.testing.assert_allclose(got, [EPS, EPS, 45.0 / 90.000001, 1 - EPS, 1 - EPS], rtol=1e-12)


def test_one_em_iteration_by_hand() -> None:
    losses = np.array([0.1, 0.15, 0.2, 0.3, 0.7, 0.8, 0.85, 0.9])
    m = fit_beta_mixture(losses, iterations=1, percentiles=(0.0, 100.0))
    x = np.clip((losses - 0.1) / (0.8 + 1e-6), EPS, 1 - EPS)
    # E-step from the initial mixture 0.5 Beta(1, 2) + 0.5 Beta(2, 1)
    wl = np.stack([0.5 * stats.beta.pdf(x, 1, 2), 0.5 * stats.beta.pdf(x, 2, 1)])
    r = np.maximum(wl, 1e-12)
    r = r / r.sum(0)
    for k in range(2):
        mean = np.average(x, weights=r[k])
        var = np.average((x - mean) ** 2, weights=r[k])
        a = mean * (mean * (1 - mean) / var - 1)
        assert m.alphas[k] == pytest.approx(a, rel=1e-9)
        assert m.betas[k] == pytest.approx(a * (1 - mean) / mean, rel=1e-9)
    np.testing.assert_allclose(m.weights, r.mean(1), rtol=1e-9)
    assert m.alphas[1] / (m.alphas[1] + m.betas[1]) > m.alphas[0] / (m.alphas[0] + m.betas[0])


def test_two_separated_modes_with_the_default_fit() -> None:
    x, noisy = _two_modes()
    m = fit_beta_mixture(x)
    # 10 EM steps from the fixed start do not converge fully (the weights are ~(0.59, 0.41)
    # here, (2/3, 1/3) after ~100 steps), so the weights get a wide tolerance
    np.testing.assert_allclose(m.weights, [2 / 3, 1 / 3], atol=0.1)
    assert m.weights.sum() == pytest.approx(1.0)
    mean0, mean1 = m.alphas / (m.alphas + m.betas)
    assert mean0 < 0.3 < 0.7 < mean1
    p = m.posterior(x)
    assert p.shape == x.shape and p.dtype == np.float64
    assert np.mean((p > 0.5) == noisy) > 0.9
    np.testing.assert_array_equal(loss_posterior(x), p)


def test_two_separated_modes_converge_to_the_true_components_without_clipping() -> None:
    x, noisy = _two_modes()
    m = fit_beta_mixture(x, iterations=200, percentiles=(0.0, 100.0))
    # min-max scaling of draws spanning ~(0.003, 0.997) changes the shapes only slightly
    np.testing.assert_allclose(m.weights, [2 / 3, 1 / 3], atol=0.02)
    np.testing.assert_allclose(m.alphas, [2.0, 8.0], rtol=0.1)
    np.testing.assert_allclose(m.betas, [8.0, 2.0], rtol=0.1)
    assert np.mean((m.posterior(x) > 0.5) == noisy) > 0.97


def test_posterior_never_decreases_with_the_loss() -> None:
    x, _ = _two_modes(seed=1)
    m = fit_beta_mixture(x)
    grid = np.linspace(-0.5, 1.5, 4001)  # also beyond the clip bounds
    p = m.posterior(grid)
    assert np.all(np.diff(p) >= 0.0)
    assert 0.0 <= p[0] < 0.05 and 0.95 < p[-1] <= 1.0


def test_lookup_table_is_the_component1_posterior_held_after_its_peak() -> None:
    # a narrow high-loss bump at 0.5 next to Beta(2, 8): the fitted noisy component falls off
    # faster than the clean one near 1, so the raw posterior peaks before the last bin
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.beta(2.0, 8.0, 2000), rng.beta(30.0, 30.0, 1000)])
    m = fit_beta_mixture(x, iterations=100, percentiles=(0.0, 100.0))
    raw = np.array([_hand_posterior(m, _grid(j)) for j in range(100)])
    peak = int(np.argmax(raw))
    assert peak < 99 and raw[99] < 0.01 < 0.9 < raw[peak]  # the hold matters here
    np.testing.assert_allclose(m.lookup[: peak + 1], raw[: peak + 1], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(m.lookup[peak:], raw[peak], rtol=1e-12)
    # a loss is read from bin floor(100 (l - lo) / (hi - lo + 1e-6))
    loss = 0.37
    j = math.floor(100 * (loss - m.lo) / (m.hi - m.lo + 1e-6))
    assert m.posterior(np.array([loss]))[0] == pytest.approx(raw[j], rel=1e-9)


def test_without_em_the_table_is_the_initial_posterior() -> None:
    # 0.5 Beta(x; 1, 2) = 1 - x and 0.5 Beta(x; 2, 1) = x: the posterior of component 1 is x
    losses = np.arange(101.0)
    got = loss_posterior(np.array([0.0, 50.0, 80.0, 100.0]), iterations=0)
    # fitted on 4 losses: lo, hi = 7.5, 97 (linear percentiles of 0, 50, 80, 100)
    # scaled: eps, 42.5 / 89.5, 72.5 / 89.5, 1 - eps -> bins 0, 47, 81, 99
    np.testing.assert_allclose(got, [_grid(j) for j in (0, 47, 81, 99)], rtol=1e-9)
    m = fit_beta_mixture(losses, iterations=0)
    assert m.posterior(np.array([50.0]))[0] == pytest.approx(_grid(49), rel=1e-9)


@pytest.mark.parametrize(
    "losses",
    [
        np.full(10, 0.7),
        np.array([3.0]),
        np.array([0.1, 5.0]),
        np.r_[np.linspace(0.0, 2.0, 99), 1e300],
        np.zeros(50),
    ],
    ids=["all-equal", "single", "two", "huge-outlier", "zeros"],
)
def test_degenerate_inputs_give_a_finite_fit(losses: np.ndarray) -> None:
    m = fit_beta_mixture(losses)
    for arr in (m.alphas, m.betas, m.weights, m.lookup):
        assert np.all(np.isfinite(arr))
    assert np.all(m.alphas > 0) and np.all(m.betas > 0) and np.all(m.weights >= 0)
    assert m.weights.sum() == pytest.approx(1.0)
    p = m.posterior(losses)
    assert np.all((p >= 0.0) & (p <= 1.0))
    assert np.all(np.diff(p[np.argsort(losses, kind="stable")]) >= 0.0)


def test_losses_where_both_densities_underflow_stay_finite() -> None:
    # 1000 equal losses between two isolated ones: both components become narrow around 0.5
    # and their densities underflow to 0 at the ends; the E-step's floor avoids 0 / 0
    losses = np.r_[0.0, np.full(1000, 0.5), 1.0]
    m = fit_beta_mixture(losses, percentiles=(0.0, 100.0))
    for arr in (m.alphas, m.betas, m.weights, m.lookup):
        assert np.all(np.isfinite(arr))
    assert m.weights.sum() == pytest.approx(1.0)
    p = m.posterior(losses)
    assert p[0] == 0.0 and 0.0 < p[1] <= p[-1] <= 1.0


def test_all_equal_losses_are_all_clean() -> None:
    # every loss scales to eps: one component takes them all, the low-loss one
    p = loss_posterior(np.full(20, 2.5))
    assert np.all(p == p[0]) and p[0] < 0.01


@pytest.mark.parametrize(
    ("losses", "message"),
    [
        (np.array([0.1, np.nan, 0.3]), r"must be finite, 1 are NaN or inf"),
        (np.array([0.1, np.inf]), r"must be finite, 1 are NaN or inf"),
        (np.array([]), r"losses is empty"),
        (np.ones((3, 2)), r"must be 1-D \(N,\), got shape \(3, 2\)"),
    ],
)
def test_bad_losses_raise(losses: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_beta_mixture(losses)


def test_bad_options_raise() -> None:
    x = np.linspace(0.0, 1.0, 10)
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        fit_beta_mixture(x, iterations=-1)
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        fit_beta_mixture(x, percentiles=(95.0, 5.0))
    with pytest.raises(ValueError, match=r"eps must be in \(0, 0.5\)"):
        fit_beta_mixture(x, eps=0.0)
    with pytest.raises(ValueError, match="posterior: losses must be finite"):
        fit_beta_mixture(x).posterior(np.array([np.nan]))


def test_to_dict_from_dict_round_trip() -> None:
    x, _ = _two_modes(seed=2)
    m = fit_beta_mixture(x)
    data = json.loads(json.dumps(m.to_dict()))  # plain floats and lists only
    assert set(data) == {"alphas", "betas", "weights", "lo", "hi", "lookup", "eps"}
    assert len(data["lookup"]) == 100 and all(type(v) is float for v in data["alphas"])
    back = BetaMixture.from_dict(data)
    for name in ("alphas", "betas", "weights", "lookup"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert (back.lo, back.hi, back.eps) == (m.lo, m.hi, m.eps)
    np.testing.assert_array_equal(back.posterior(x), m.posterior(x))
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.lo = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        back.lookup[0] = 1.0
    with pytest.raises(ValueError, match="expected keys"):
        BetaMixture.from_dict({k: v for k, v in data.items() if k != "lookup"})
    with pytest.raises(ValueError, match=r"lookup must have shape \(100,\), got \(10,\)"):
        BetaMixture.from_dict({**data, "lookup": data["lookup"][:10]})
