"""Scores from the recorded learning curves: MAP-D's scores and the mean loss.

Two MAP-D scores read an example's curve against the curves of reference probes:

- ``mapd_knn`` is the paper's (Eq. 6): the share of suspect probes among the k nearest probe
  loss curves. The label-noise correction methods use it (as the authors did).
- ``mapd``, the default detector, reads the same probes with a finer instrument: a logistic
  regression fitted on the probes' loss and margin curves (suspect vs clean categories),
  p(suspect) for every example. On class-dependent noise the k-NN share ranks the wrong labels
  worse than the last-epoch loss of the same run: a plausible confusion is learned sooner than
  a uniformly random label, so its curve sits between the clean and the random-label probes,
  where the share of 20 neighbours is mostly 0. The read-out ranks along the direction that
  separates the two probe sets instead, and the margin curve (AUM's statistic) tells a hard but
  correct example (the margin grows) from a wrong label (the margin of the given label stays
  negative). Measured in the detection benchmark (README, "Finding the mislabeled examples").
"""

from __future__ import annotations

import numpy as np

from mapd.errors import DataError
from mapd.knn import knn_proba
from mapd.scores import register_score


@register_score(
    "mapd_knn",
    needs=("loss", "probe_loss", "probe_suspect"),
    threshold=0.5,
    description="MAP-D as in the paper (Eq. 6): share of suspect probes among the k nearest "
    "probe trajectories (Euclidean distance on the loss curves)",
)
def mapd_probability(
    *,
    loss: np.ndarray,
    probe_loss: np.ndarray,
    probe_suspect: np.ndarray,
    k: int,
    suspect: list[str] | None = None,
) -> np.ndarray:
    """p(suspect | s_i) for every row of ``loss`` (N, T) against the probes (M, T).

    ``suspect`` (the category names) only documents which probes ``probe_suspect`` marks.
    """
    del suspect
    proba = knn_proba(
        np.asarray(loss, dtype=np.float32),
        np.asarray(probe_loss, dtype=np.float32),
        probe_suspect.astype(np.int64),
        k=k,
        num_classes=2,
    )
    return proba[:, 1]


def _curves(loss: np.ndarray, margin: np.ndarray) -> np.ndarray:
    # the margin enters negated so that both halves grow with suspicion
    return np.concatenate([np.asarray(loss, np.float64), -np.asarray(margin, np.float64)], axis=1)


@register_score(
    "mapd",
    needs=("loss", "margin", "probe_loss", "probe_margin", "probe_suspect"),
    threshold=0.5,
    description="MAP-D read-out (the default detector): a logistic regression fitted on the "
    "reference probes' loss and margin curves (suspect vs clean categories), p(suspect)",
)
def mapd_readout(
    *,
    loss: np.ndarray,
    margin: np.ndarray,
    probe_loss: np.ndarray,
    probe_margin: np.ndarray,
    probe_suspect: np.ndarray,
    k: int | None = None,
    suspect: list[str] | None = None,
    clean: list[str] | None = None,
    c: float,
) -> np.ndarray:
    """p(suspect) (N,) of every example's curves (``loss``, ``margin``: (N, T)) under a
    logistic regression fitted on the probes' curves (``probe_loss``, ``probe_margin``: (M, T);
    ``probe_suspect`` (M,) bool the targets).

    Features are the 2T values of the loss and the negated margin after each epoch,
    standardised by the probes' mean and std; the two probe classes are weighted equally (so
    0.5 is the decision of equal priors, as the k-NN share of equal probe sets); ``c`` is the
    inverse L2 strength (scikit-learn's ``C``). ``k``, ``suspect`` and ``clean`` are the
    callers' (which probes are the references); the read-out does not use them.
    """
    del k, suspect, clean
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(probe_suspect, dtype=bool)
    if y.all() or not y.any():
        raise DataError("score 'mapd': the reference probes need both suspect and clean ones")
    ref = _curves(probe_loss, probe_margin)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std[std < 1e-8] = 1.0  # a constant feature (e.g. a saturated epoch) carries nothing
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit((ref - mean) / std, y)
    return model.predict_proba((_curves(loss, margin) - mean) / std)[:, 1]


@register_score(
    "loss",
    needs=("loss",),
    description="mean loss over the recorded epochs (the naive baseline)",
)
def mean_loss(*, loss: np.ndarray) -> np.ndarray:
    return np.asarray(loss, dtype=np.float64).mean(axis=1)
