"""How well a per-example score finds the truly mislabeled examples.

:func:`detection_metrics` compares a score (higher = more suspect) with the true noisy flags:
threshold-free ranking quality (AUROC, average precision), the top-k decision with k the number
of truly noisy examples, and, when given, the method's own decision (its flags).

Undefined values (AUROC without both classes, precision with nothing flagged, recall without a
noisy example, ...) are NaN; nothing here warns or divides by zero.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from mapd.errors import DataError

NAN = float("nan")


def _bool_vector(what: str, a: np.ndarray, n: int | None) -> np.ndarray:
    """``a`` as (n,) bool; bool arrays, or integer arrays of 0s and 1s."""
    a = np.asarray(a)
    if a.ndim != 1 or (n is not None and a.shape != (n,)):
        expected = "(N,)" if n is None else f"({n},)"
        raise DataError(f"detection_metrics: {what} must be {expected}, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind in "iu" and np.isin(a, (0, 1)).all():
        return a.astype(bool)
    raise DataError(f"detection_metrics: {what} must be bool (or 0/1 integers), got {a.dtype}")


def auroc(is_noisy: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (N,) against ``is_noisy`` (N,) bool: the chance that
    a random noisy example scores above a random clean one, ties counting one half
    (Mann-Whitney U with average ranks); NaN unless both classes are present."""
    pos = int(is_noisy.sum())
    neg = len(is_noisy) - pos
    if pos == 0 or neg == 0:
        return NAN
    ranks = rankdata(score, method="average")
    u = float(ranks[is_noisy].sum()) - pos * (pos + 1) / 2.0
    return u / (pos * neg)


def average_precision(is_noisy: np.ndarray, score: np.ndarray) -> float:
    """Average precision (N,) -> float: ``sum_j (R_j - R_{j-1}) P_j`` over the distinct score
    values taken as thresholds from the highest down (tied examples enter together), the
    step-wise area under the precision-recall curve without interpolation; NaN without a noisy
    example."""
    pos = int(is_noisy.sum())
    if pos == 0:
        return NAN
    order = np.argsort(-score, kind="stable")
    s, y = score[order], is_noisy[order]
    # the last position of every group of equal scores: thresholds between distinct values
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(y)[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _precision_recall_f1(tp: int, flagged: int, noisy: int) -> tuple[float, float, float]:
    """Precision, recall and F1 = 2 TP / (2 TP + FP + FN) from counts; NaN where the
    denominator is 0 (F1 is then NaN only when nothing is noisy and nothing flagged)."""
    precision = tp / flagged if flagged else NAN
    recall = tp / noisy if noisy else NAN
    denominator = flagged + noisy  # = 2 TP + FP + FN
    f1 = 2.0 * tp / denominator if denominator else NAN
    return precision, recall, f1


def top_k(score: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: the ``k`` highest of ``score`` (N,); among equal scores the lower index wins
    (a stable sort of ``-score``), so the choice is deterministic."""
    flags = np.zeros(len(score), dtype=bool)
    flags[np.argsort(-score, kind="stable")[:k]] = True
    return flags


def detection_metrics(
    is_noisy: np.ndarray, score: np.ndarray, *, flags: np.ndarray | None = None
) -> dict[str, float]:
    """Detection quality of ``score`` (N,) float (higher = more suspect) against the true flags
    ``is_noisy`` (N,) bool.

    Returns (all floats):
        auroc: area under the ROC curve (NaN unless both noisy and clean examples exist).
        ap: average precision (NaN without a noisy example).
        precision_at_k, recall_at_k, f1_at_k: with the k = ``is_noisy.sum()`` top-scored
            examples flagged (:func:`top_k`: ties broken by the lower index). As k is the number
            of noisy examples, the three are equal (R-precision); NaN when k = 0.
        precision, recall, f1, flagged: only when ``flags`` (N,) bool, the method's own
            decision, is given; ``flagged`` is the number flagged. Precision is NaN when
            nothing is flagged, recall when nothing is noisy, F1 = 2 TP / (2 TP + FP + FN)
            when both are zero.

    Raises:
        DataError: shapes differ, N = 0, ``score`` is not finite or the flags are not bool.
    """
    is_noisy = _bool_vector("is_noisy", is_noisy, None)
    n = len(is_noisy)
    if n == 0:
        raise DataError("detection_metrics: no examples (N = 0)")
    score = np.asarray(score)
    if score.shape != (n,):
        raise DataError(f"detection_metrics: score must be ({n},), got shape {score.shape}")
    if score.dtype.kind not in "iuf":
        raise DataError(f"detection_metrics: score must be numbers, got {score.dtype}")
    score = score.astype(np.float64)
    if not np.isfinite(score).all():
        bad = int(np.count_nonzero(~np.isfinite(score)))
        raise DataError(f"detection_metrics: score must be finite, {bad} values are NaN or inf")

    noisy = int(is_noisy.sum())
    at_k = _precision_recall_f1(int((top_k(score, noisy) & is_noisy).sum()), noisy, noisy)
    out = {
        "auroc": auroc(is_noisy, score),
        "ap": average_precision(is_noisy, score),
        "precision_at_k": at_k[0],
        "recall_at_k": at_k[1],
        "f1_at_k": at_k[2],
    }
    if flags is not None:
        flags = _bool_vector("flags", flags, n)
        flagged = int(flags.sum())
        precision, recall, f1 = _precision_recall_f1(int((flags & is_noisy).sum()), flagged, noisy)
        out |= {"precision": precision, "recall": recall, "f1": f1, "flagged": float(flagged)}
    return out


__all__ = ["auroc", "average_precision", "detection_metrics", "top_k"]
