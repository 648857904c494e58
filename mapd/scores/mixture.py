"""Two-component Beta mixture on per-example losses (Arazo et al. 2019).

Arazo, Ortego, Albert, O'Connor and McGuinness, "Unsupervised label noise modeling and loss
correction", ICML 2019: clean examples have low losses, mislabeled ones high losses, so a
two-component mixture fitted to the losses gives p(noisy | loss), the posterior of the
high-loss component. This module follows their ``BetaMixture1D``:

- Scaling: losses are clipped to their 5th..95th percentile ``[lo, hi]``, scaled to [0, 1] by
  ``(l - lo) / (hi - lo + 1e-6)`` and clamped to ``[eps, 1 - eps]`` (``eps = 1e-4``), since the
  Beta density is 0 or infinite at the end points.
- Initialisation: ``alphas = [1, 2]``, ``betas = [2, 1]``, ``weights = [0.5, 0.5]``; component 0
  (density falling with x) is the low-loss "clean" one, component 1 the high-loss "noisy" one.
- EM, 10 iterations: E-step responsibilities
  ``r_k(x) = w_k Beta(x; a_k, b_k) / sum_j w_j Beta(x; a_j, b_j)``, with each ``w_k Beta(...)``
  floored at 1e-12 first (their guard against 0/0); M-step by the weighted method of moments:
  ``m = sum(r x) / sum(r)``, ``s2 = sum(r (x - m)^2) / sum(r)``, ``a = m (m (1 - m) / s2 - 1)``,
  ``b = a (1 - m) / m``, ``w_k = mean(r_k)``.
- Posterior: a lookup table of the component-1 posterior
  ``w_1 B_1(x) / (w_0 B_0(x) + w_1 B_1(x) + 1e-12)`` at 100 points evenly spaced over
  ``[eps, 1 - eps]``; from the table's maximum onwards it is held at that maximum, so p(noisy)
  never falls for larger losses beyond the peak. A loss is clipped/scaled as in the fit (with the
  fit's ``lo``, ``hi``) and read from bin ``floor(100 x)`` clamped to ``[0, 99]``.

Guards beyond the paper, so that every fit is finite (all equal losses, a single loss, a
component without responsibility): the weighted variance is floored at 1e-8 (a standard
deviation of 1e-4, the scale of ``eps``), the shapes ``a``, ``b`` are clamped below at 1e-3, and
a component whose total responsibility is 0 keeps its previous parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaln

LOOKUP_BINS = 100
_INIT_ALPHAS = (1.0, 2.0)
_INIT_BETAS = (2.0, 1.0)
_INIT_WEIGHTS = (0.5, 0.5)
_SCALE_EPS = 1e-6  # Arazo et al.'s denominator guard: (l - lo) / (hi - lo + 1e-6)
_LIKELIHOOD_FLOOR = 1e-12  # their eps_nan: floor of w_k Beta(x) and guard of the posterior
_MIN_VARIANCE = 1e-8  # s2 = 0 (all equal inputs) would give infinite shapes
_MIN_SHAPE = 1e-3  # a, b <= 0 when s2 >= m (1 - m); Beta needs a, b > 0
_MAX_LOG_PDF = 700.0  # exp(709) overflows float64; unreachable with the guards above


@dataclass(frozen=True, eq=False)  # eq=False: dataclass __eq__ on arrays is ambiguous
class BetaMixture:
    """A fitted two-component Beta mixture and its posterior lookup table.

    Attributes:
        alphas: (2,) float64 shape ``a`` of component 0 (clean) and 1 (noisy).
        betas: (2,) float64 shape ``b`` of both components.
        weights: (2,) float64 mixing weights (sum to 1).
        lo: lower clip bound of the losses (their 5th percentile by default).
        hi: upper clip bound of the losses (their 95th percentile by default).
        lookup: (100,) float64 p(noisy) of bin ``floor(100 x)`` of a scaled loss ``x``.
        eps: the scaled losses were clamped to ``[eps, 1 - eps]``; the table's points are
            ``linspace(eps, 1 - eps, 100)``.
    """

    alphas: np.ndarray
    betas: np.ndarray
    weights: np.ndarray
    lo: float
    hi: float
    lookup: np.ndarray
    eps: float = 1e-4

    def __post_init__(self) -> None:
        # read-only float64 copies: the object is frozen, so are its arrays
        for name, size in (("alphas", 2), ("betas", 2), ("weights", 2), ("lookup", LOOKUP_BINS)):
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != (size,):
                raise ValueError(f"BetaMixture.{name} must have shape ({size},), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"BetaMixture.{name} must be finite, got {arr.tolist()}")
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        for name in ("lo", "hi", "eps"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"BetaMixture.{name} must be finite, got {value}")
            object.__setattr__(self, name, value)

    def scale(self, losses: np.ndarray) -> np.ndarray:
        """Losses (any shape) clipped to ``[lo, hi]``, scaled to [0, 1] and clamped to
        ``[eps, 1 - eps]``, as in the fit; float64, same shape."""
        return _scale(np.asarray(losses, dtype=np.float64), self.lo, self.hi, self.eps)

    def posterior(self, losses: np.ndarray) -> np.ndarray:
        """p(noisy | loss) of every loss (any shape) read from the lookup table; float64."""
        losses = np.asarray(losses, dtype=np.float64)
        if not np.all(np.isfinite(losses)):
            raise ValueError("posterior: losses must be finite (found NaN or inf)")
        x = self.scale(losses)
        bins = np.clip(np.floor(x * LOOKUP_BINS).astype(np.int64), 0, LOOKUP_BINS - 1)
        return self.lookup[bins]

    def to_dict(self) -> dict[str, Any]:
        """Plain floats and lists (checkpoints are loaded as plain data)."""
        return {
            "alphas": [float(v) for v in self.alphas],
            "betas": [float(v) for v in self.betas],
            "weights": [float(v) for v in self.weights],
            "lo": self.lo,
            "hi": self.hi,
            "lookup": [float(v) for v in self.lookup],
            "eps": self.eps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BetaMixture:
        """Inverse of :meth:`to_dict` (``eps`` may be absent: the default 1e-4)."""
        required = {"alphas", "betas", "weights", "lo", "hi", "lookup"}
        if not required <= set(data) <= required | {"eps"}:
            raise ValueError(
                f"BetaMixture.from_dict: expected keys {sorted(required)} and optionally "
                f"'eps', got {sorted(data)}"
            )
        return cls(**data)


def _scale(losses: np.ndarray, lo: float, hi: float, eps: float) -> np.ndarray:
    x = (np.clip(losses, lo, hi) - lo) / (hi - lo + _SCALE_EPS)
    return np.clip(x, eps, 1.0 - eps)


def _beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """Beta(a, b) density at x (N,) in (0, 1), through the log to stay finite for large a, b."""
    log_pdf = (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - betaln(a, b)
    return np.exp(np.minimum(log_pdf, _MAX_LOG_PDF))


def _weighted_likelihoods(
    x: np.ndarray, alphas: np.ndarray, betas: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``w_k Beta(x; a_k, b_k)`` (2, N)."""
    return np.stack([weights[k] * _beta_pdf(x, alphas[k], betas[k]) for k in range(2)])


def _moments_fit(x: np.ndarray, r: np.ndarray) -> tuple[float, float] | None:
    """Weighted method of moments: Beta shapes (a, b) from x (N,) and weights r (N,); None when
    the weights sum to 0 (the caller keeps the previous shapes)."""
    total = float(r.sum())
    if not total > 0.0 or not np.isfinite(total):
        return None
    m = float((r * x).sum() / total)
    s2 = max(float((r * (x - m) ** 2).sum() / total), _MIN_VARIANCE)
    a = m * (m * (1.0 - m) / s2 - 1.0)
    b = a * (1.0 - m) / m  # m >= eps > 0: the inputs are clamped to [eps, 1 - eps]
    return max(a, _MIN_SHAPE), max(b, _MIN_SHAPE)


def _component1_posterior(
    x: np.ndarray, alphas: np.ndarray, betas: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """p(component 1 | x) (N,) as in Arazo et al.'s ``posterior`` (no floor on the numerator)."""
    wl = _weighted_likelihoods(x, alphas, betas, weights)
    return wl[1] / (wl.sum(axis=0) + _LIKELIHOOD_FLOOR)


def _lookup_table(
    alphas: np.ndarray, betas: np.ndarray, weights: np.ndarray, eps: float
) -> np.ndarray:
    """(100,) component-1 posterior on ``linspace(eps, 1 - eps, 100)``, held at its maximum
    from the maximum's bin onwards."""
    grid = np.linspace(eps, 1.0 - eps, LOOKUP_BINS)
    table = _component1_posterior(grid, alphas, betas, weights)
    table[int(np.argmax(table)) :] = table.max()
    return table


def fit_beta_mixture(
    losses: np.ndarray,
    *,
    iterations: int = 10,
    percentiles: tuple[float, float] = (5.0, 95.0),
    eps: float = 1e-4,
) -> BetaMixture:
    """Fit the two-component Beta mixture to ``losses`` (N,) by EM (see the module docstring).

    Raises:
        ValueError: ``losses`` is not 1-D, empty or not finite, or an option is out of range.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"fit_beta_mixture: losses must be 1-D (N,), got shape {losses.shape}")
    if losses.size == 0:
        raise ValueError("fit_beta_mixture: losses is empty, need at least one value")
    if not np.all(np.isfinite(losses)):
        bad = int(np.count_nonzero(~np.isfinite(losses)))
        raise ValueError(f"fit_beta_mixture: losses must be finite, {bad} are NaN or inf")
    if iterations < 0:
        raise ValueError(f"fit_beta_mixture: iterations must be >= 0, got {iterations}")
    p_lo, p_hi = percentiles
    if not 0.0 <= p_lo <= p_hi <= 100.0:
        raise ValueError(
            f"fit_beta_mixture: percentiles must satisfy 0 <= lo <= hi <= 100, got {percentiles}"
        )
    if not 0.0 < eps < 0.5:
        raise ValueError(f"fit_beta_mixture: eps must be in (0, 0.5), got {eps}")

    lo, hi = (float(v) for v in np.percentile(losses, [p_lo, p_hi]))
    x = _scale(losses, lo, hi, eps)
    alphas = np.array(_INIT_ALPHAS)
    betas = np.array(_INIT_BETAS)
    weights = np.array(_INIT_WEIGHTS)
    for _ in range(iterations):
        # E-step; the floor keeps r finite where both densities underflow
        wl = np.maximum(_weighted_likelihoods(x, alphas, betas, weights), _LIKELIHOOD_FLOOR)
        r = wl / wl.sum(axis=0)
        # M-step
        for k in range(2):
            shapes = _moments_fit(x, r[k])
            if shapes is not None:
                alphas[k], betas[k] = shapes
        weights = r.mean(axis=1)
        weights /= weights.sum()
    return BetaMixture(
        alphas=alphas,
        betas=betas,
        weights=weights,
        lo=lo,
        hi=hi,
        lookup=_lookup_table(alphas, betas, weights, eps),
        eps=eps,
    )


def loss_posterior(losses: np.ndarray, **kwargs: Any) -> np.ndarray:
    """p(mislabeled) (N,) float64 of every loss in ``losses`` (N,), from a mixture fitted on them.

    ``kwargs`` go to :func:`fit_beta_mixture`.
    """
    losses = np.asarray(losses, dtype=np.float64)
    return fit_beta_mixture(losses, **kwargs).posterior(losses)
