"""Scores from the recorded learning curves: MAP-D's k-NN probability and the mean loss."""

from __future__ import annotations

import numpy as np

from mapd.knn import knn_proba
from mapd.scores import register_score


@register_score(
    "mapd",
    needs=("loss", "probe_loss", "probe_suspect"),
    threshold=0.5,
    description="MAP-D (paper Eq. 6): share of suspect probes among the k nearest probe "
    "trajectories (Euclidean distance on the loss curves)",
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


@register_score(
    "loss",
    needs=("loss",),
    description="mean loss over the recorded epochs (the naive baseline)",
)
def mean_loss(*, loss: np.ndarray) -> np.ndarray:
    return np.asarray(loss, dtype=np.float64).mean(axis=1)
