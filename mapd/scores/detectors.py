"""Label-noise detectors from training dynamics: scores of "this label is wrong".

Every score is one float per example, higher = more likely mislabeled, registered in
:data:`mapd.scores.SCORES`:

- ``loss_last``: the loss after the last recorded epoch (ranking only).
- ``aum``: minus the Area Under the Margin (Pleiss et al., NeurIPS 2020), the mean over epochs
  of the margin (logit of the given label minus the largest other logit). Its own decision
  compares the AUM with a percentile of the AUMs of *threshold samples* (examples given a fake
  extra class in a run of their own): an AUM below it is flagged.
- ``forgetting``: forgetting events (Toneva et al., ICLR 2019), correct at epoch t and wrong at
  t + 1; never-learned examples rank above every learned one (ranking only).
- ``datamap``: 1 - confidence of the data maps (Swayamdipta et al., EMNLP 2020), the confidence
  being the mean over epochs of p(label) = exp(-loss) (ranking only).
- ``el2n``: EL2N (Paul et al., NeurIPS 2021), ``||softmax - onehot(label)||_2`` of early-epoch
  predicted probabilities (ranking only).
- ``bmm``: p(noisy | loss) of Arazo et al.'s two-component Beta mixture fitted to one epoch's
  losses (:mod:`mapd.scores.mixture`); flagged at >= 0.5.
- ``confident_learning``: 1 - cleanlab's label-quality score of out-of-sample predicted
  probabilities; its own decision is ``cleanlab.filter.find_label_issues``.

AUM's decision needs arrays that its score does not: the margins of the threshold samples. The
registry calls a score's ``flag`` with exactly the arrays the score ``needs``, and refuses to
score when a needed array is missing, so listing ``threshold_margin`` in ``needs`` would make
the threshold run compulsory for the ranking too. ``aum`` therefore needs only ``margin`` and
its flag takes the threshold samples' margins as the keyword option ``threshold_margin``::

    flag_issues("aum", inputs, threshold_margin=inputs.threshold_margin, **options)

(the score accepts and ignores that option, as it ignores ``percentile``: the registry passes a
score's options to both). Without it the flag raises a :class:`~mapd.errors.DataError`.

Each score's options, their defaults and its description are its section ``scores/<name>`` of
the config schema (``mapd/schemas/config.schema.yaml``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mapd.errors import ConfigError, DataError
from mapd.scores import register_score
from mapd.scores.mixture import loss_posterior

# cleanlab's choices (cleanlab 2.x: rank.get_label_quality_scores, filter.find_label_issues)
CLEANLAB_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
CLEANLAB_FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)
# rows of probs must sum to 1 up to this (float32 softmax sums are off by ~1e-7)
_PROBS_SUM_ATOL = 1e-3


# -- checks the registry's _validate does not make (these functions are also called directly)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _matrix(name: str, what: str, a: np.ndarray) -> np.ndarray:
    """``a`` as a finite float64 (N, T) array with T >= 1."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] < 1:
        raise DataError(f"score {name!r}: {what} must be (N, T) with T >= 1, got shape {a.shape}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise DataError(f"score {name!r}: {what} contains NaN or inf")
    return a


def _upto(name: str, upto: int | None, t: int) -> int:
    """The number of epochs averaged: ``upto`` checked against the T = ``t`` recorded."""
    if upto is None:
        return t
    if not _is_int(upto):
        raise ConfigError(f"score {name!r}: upto must be an integer or null, got {upto!r}")
    if not 1 <= upto <= t:
        raise ConfigError(
            f"score {name!r}: upto must be in 1..{t} (the epochs recorded), got {upto}"
        )
    return int(upto)


def _percentile(name: str, percentile: float) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, int | float | np.number):
        raise ConfigError(f"score {name!r}: percentile must be a number, got {percentile!r}")
    if not 0.0 <= float(percentile) <= 100.0:
        raise ConfigError(f"score {name!r}: percentile must be in [0, 100], got {percentile}")
    return float(percentile)


def _labels_probs(name: str, labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, ...]:
    """``labels`` (N,) int64 within the C classes of ``probs`` (N, C), whose rows are
    probability vectors."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise DataError(f"score {name!r}: probs must be (N, C) with C >= 2, got {probs.shape}")
    if labels.shape != (len(probs),):
        raise DataError(f"score {name!r}: labels must be ({len(probs)},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"score {name!r}: labels must be integers, got {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise DataError(f"score {name!r}: labels outside the {probs.shape[1]} classes of probs")
    probs = probs.astype(np.float64, copy=False)
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise DataError(f"score {name!r}: probs must be finite and within [0, 1]")
    sums = probs.sum(axis=1)
    if (bad := np.flatnonzero(np.abs(sums - 1.0) > _PROBS_SUM_ATOL)).size:
        raise DataError(
            f"score {name!r}: probs rows must sum to 1 (predicted probabilities, not logits); "
            f"{bad.size} rows do not, first row {bad[0]} sums to {sums[bad[0]]:.6g}"
        )
    return labels.astype(np.int64, copy=False), probs


# -- loss_last


@register_score(
    "loss_last",
    needs=("loss",),
)
def loss_last(*, loss: np.ndarray) -> np.ndarray:
    """``loss[:, -1]`` (N,) float64 of the per-example losses ``loss`` (N, T)."""
    return _matrix("loss_last", "loss", loss)[:, -1].copy()


# -- AUM


def area_under_margin(margin: np.ndarray, *, upto: int | None = None) -> np.ndarray:
    """AUM (N,) float64: the mean of ``margin`` (N, T) over its first ``upto`` epochs (None: all).

    The margin of an example at an epoch is the logit of its assigned label minus the largest
    other logit (Pleiss et al. 2020)."""
    margin = _matrix("aum", "margin", margin)
    return margin[:, : _upto("aum", upto, margin.shape[1])].mean(axis=1)


def aum_cutoff(
    threshold_margin: np.ndarray, *, upto: int | None = None, percentile: float = 99.0
) -> float:
    """AUM's decision cut-off: the ``percentile`` percentile (numpy's linear interpolation) of
    the AUMs of the threshold samples, from their margins ``threshold_margin`` (M, T), each
    averaged over the first ``upto`` epochs (None: all).

    Threshold samples are mislabeled by construction (a fake extra class), so an example whose
    AUM is below the 99th percentile of theirs is no more learnable than a surely mislabeled one.
    """
    thr = _matrix("aum", "threshold_margin", threshold_margin)
    if len(thr) == 0:
        raise DataError("score 'aum': threshold_margin has no threshold samples (M = 0)")
    aums = area_under_margin(thr, upto=upto)
    return float(np.percentile(aums, _percentile("aum", percentile)))


def aum_flag(
    *,
    margin: np.ndarray,
    threshold_margin: np.ndarray | None = None,
    upto: int | None = None,
    percentile: float = 99.0,
) -> np.ndarray:
    """AUM's own decision (N,) bool: AUM strictly below :func:`aum_cutoff` of the threshold
    samples' margins ``threshold_margin`` (M, T'), ``margin`` being (N, T).

    With ``upto`` None both runs must have recorded the same number of epochs (AUMs over
    different horizons are not comparable); with ``upto`` both need at least ``upto``.
    """
    if threshold_margin is None:
        raise DataError(
            "score 'aum': the threshold run is missing: its flag needs threshold_margin, the "
            "margins (M, T) of threshold samples (examples given a fake extra class in a run "
            "of their own); pass threshold_margin=... to flag_issues"
        )
    margin = _matrix("aum", "margin", margin)
    thr = _matrix("aum", "threshold_margin", threshold_margin)
    if upto is None and thr.shape[1] != margin.shape[1]:
        raise DataError(
            f"score 'aum': threshold_margin has {thr.shape[1]} epochs and margin "
            f"{margin.shape[1]}; give upto <= both to compare AUMs over the same epochs"
        )
    cutoff = aum_cutoff(thr, upto=upto, percentile=percentile)
    return area_under_margin(margin, upto=upto) < cutoff


@register_score(
    "aum",
    needs=("margin",),
    flag=aum_flag,
)
def aum_score(
    *,
    margin: np.ndarray,
    upto: int | None = None,
    percentile: float = 99.0,
    threshold_margin: np.ndarray | None = None,
) -> np.ndarray:
    """-AUM (N,) float64 of the margins ``margin`` (N, T), averaged over the first ``upto``
    epochs; ``percentile`` and ``threshold_margin`` belong to the flag (:func:`aum_flag`)."""
    del threshold_margin
    _percentile("aum", percentile)  # a bad setting fails here too, not only when flagging
    return -area_under_margin(margin, upto=upto)


# -- forgetting events


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Forgetting events (N,) int64 of ``correct`` (N, T) bool: the number of epochs t with
    ``correct[:, t]`` and not ``correct[:, t + 1]`` (Toneva et al. 2019)."""
    correct = np.asarray(correct)
    if correct.ndim != 2 or correct.dtype != np.bool_:
        raise DataError(
            f"score 'forgetting': correct must be (N, T) bool, got {correct.dtype} {correct.shape}"
        )
    return (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1).astype(np.int64)


@register_score(
    "forgetting",
    needs=("correct",),
)
def forgetting_score(*, correct: np.ndarray) -> np.ndarray:
    """Forgetting events (N,) float64 of ``correct`` (N, T) bool; an example never correct in
    any epoch scores T.

    Toneva et al. rank never-learned examples as the most forgotten (an infinite count). T
    stands for it while staying finite: a forgetting event needs a correct epoch followed by a
    wrong one, so T epochs hold at most floor(T / 2) < T of them.
    """
    correct = np.asarray(correct)
    events = forgetting_events(correct).astype(np.float64)
    events[~correct.any(axis=1)] = correct.shape[1]
    return events


# -- data maps


def datamap_statistics(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Data-map coordinates (Swayamdipta et al. 2020) of the losses ``loss`` (N, T).

    Returns:
        confidence (N,) float64: mean over epochs of p(label) = exp(-loss) (the cross-entropy
        loss is -log p(label)); variability (N,) float64: its population standard deviation
        over epochs (ddof 0, as in the authors' code).
    """
    p = np.exp(-_matrix("datamap", "loss", loss))
    return p.mean(axis=1), p.std(axis=1, ddof=0)


@register_score(
    "datamap",
    needs=("loss",),
)
def datamap_score(*, loss: np.ndarray) -> np.ndarray:
    """1 - data-map confidence (N,) float64 of the cross-entropy losses ``loss`` (N, T)."""
    confidence, _ = datamap_statistics(loss)
    return 1.0 - confidence


# -- EL2N


@register_score(
    "el2n",
    needs=("labels", "probs"),
)
def el2n_score(*, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """EL2N (N,) float64: ``||probs[i] - onehot(labels[i])||_2`` of the predicted probabilities
    ``probs`` (N, C) (those of an early epoch in Paul et al. 2021) and ``labels`` (N,)."""
    labels, probs = _labels_probs("el2n", labels, probs)
    error = probs.copy()
    error[np.arange(len(labels)), labels] -= 1.0
    return np.linalg.norm(error, axis=1)


# -- Beta mixture on the losses


@register_score(
    "bmm",
    needs=("loss",),
    threshold=0.5,
)
def bmm_score(*, loss: np.ndarray, epoch: int = -1) -> np.ndarray:
    """p(noisy | loss) (N,) float64 of a Beta mixture fitted to ``loss[:, epoch]`` of the
    losses ``loss`` (N, T) (:func:`mapd.scores.mixture.loss_posterior`)."""
    loss = _matrix("bmm", "loss", loss)
    t = loss.shape[1]
    if not _is_int(epoch):
        raise ConfigError(f"score 'bmm': epoch must be an integer, got {epoch!r}")
    if not -t <= epoch < t:
        raise ConfigError(f"score 'bmm': epoch must be in {-t}..{t - 1} ({t} epochs), got {epoch}")
    return loss_posterior(loss[:, int(epoch)])


# -- confident learning (cleanlab)


def _cleanlab_options(
    method: str, filter_by: str, frac_noise: float, min_examples_per_class: int, n_jobs: int | None
) -> None:
    name = "confident_learning"
    if method not in CLEANLAB_METHODS:
        raise ConfigError(
            f"score {name!r}: method must be one of {CLEANLAB_METHODS}, got {method!r}"
        )
    if filter_by not in CLEANLAB_FILTERS:
        raise ConfigError(
            f"score {name!r}: filter_by must be one of {CLEANLAB_FILTERS}, got {filter_by!r}"
        )
    if isinstance(frac_noise, bool) or not isinstance(frac_noise, int | float | np.number):
        raise ConfigError(f"score {name!r}: frac_noise must be a number, got {frac_noise!r}")
    if not 0.0 < frac_noise <= 1.0:
        raise ConfigError(f"score {name!r}: frac_noise must be in (0, 1], got {frac_noise!r}")
    if not _is_int(min_examples_per_class) or min_examples_per_class < 0:
        raise ConfigError(f"score {name!r}: min_examples_per_class must be an integer >= 0")
    if n_jobs is not None and (not _is_int(n_jobs) or n_jobs < 1):
        raise ConfigError(f"score {name!r}: n_jobs must be a positive integer or null")


def confident_learning_flag(
    *,
    labels: np.ndarray,
    probs: np.ndarray,
    method: str = "self_confidence",
    adjust_pred_probs: bool = False,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    min_examples_per_class: int = 1,
    n_jobs: int | None = None,
) -> np.ndarray:
    """``cleanlab.filter.find_label_issues(labels, probs, ...)`` (N,) bool of ``labels`` (N,)
    and out-of-sample ``probs`` (N, C); ``method`` and ``adjust_pred_probs`` belong to the
    score."""
    del adjust_pred_probs
    _cleanlab_options(method, filter_by, frac_noise, min_examples_per_class, n_jobs)
    labels, probs = _labels_probs("confident_learning", labels, probs)
    from cleanlab.filter import find_label_issues  # heavy: imported only when used

    try:
        issues = find_label_issues(
            labels,
            probs,
            filter_by=filter_by,
            frac_noise=frac_noise,
            min_examples_per_class=min_examples_per_class,
            n_jobs=n_jobs,
        )
    except (ValueError, TypeError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"score 'confident_learning': cleanlab refused the inputs: {msg}") from e
    return np.asarray(issues, dtype=bool)


@register_score(
    "confident_learning",
    needs=("labels", "probs"),
    flag=confident_learning_flag,
)
def confident_learning_score(
    *,
    labels: np.ndarray,
    probs: np.ndarray,
    method: str = "self_confidence",
    adjust_pred_probs: bool = False,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    min_examples_per_class: int = 1,
    n_jobs: int | None = None,
) -> np.ndarray:
    """1 - ``cleanlab.rank.get_label_quality_scores(labels, probs, method=...)`` (N,) float64 of
    ``labels`` (N,) and out-of-sample predicted probabilities ``probs`` (N, C); the
    ``find_label_issues`` options belong to the flag (:func:`confident_learning_flag`)."""
    _cleanlab_options(method, filter_by, frac_noise, min_examples_per_class, n_jobs)
    labels, probs = _labels_probs("confident_learning", labels, probs)
    from cleanlab.rank import get_label_quality_scores  # heavy: imported only when used

    try:
        quality = get_label_quality_scores(
            labels, probs, method=method, adjust_pred_probs=bool(adjust_pred_probs)
        )
    except (ValueError, TypeError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"score 'confident_learning': cleanlab refused the inputs: {msg}") from e
    return 1.0 - np.asarray(quality, dtype=np.float64)


__all__ = [
    "CLEANLAB_FILTERS",
    "CLEANLAB_METHODS",
    "area_under_margin",
    "aum_cutoff",
    "aum_flag",
    "aum_score",
    "bmm_score",
    "confident_learning_flag",
    "confident_learning_score",
    "datamap_score",
    "datamap_statistics",
    "el2n_score",
    "forgetting_events",
    "forgetting_score",
    "loss_last",
]
