"""Detectors of minority-group examples (paper Sec. 3.5, Fig. 9): higher = more likely minority.

- ``jtt``: JTT's error set (Liu et al. 2021): 1 for a training example the ERM model
  misclassifies after epoch ``epoch`` (T), else 0. T is JTT's hyper-parameter (Waterbirds 60,
  CelebA 1); the experiment sweeps it.
- ``mapd_minority``: MAP-D's p(minority): the share of minority examples among the k nearest
  loss trajectories of the validation split (recorded in the same run, never trained on),
  labelled minority / majority by their group annotation; flags p > ``threshold`` (authors 0.8).
"""

from __future__ import annotations

import numpy as np

from mapd.errors import ConfigError
from mapd.scores import register_score
from mapd.scores.dynamics import mapd_probability


def _jtt_flag(*, correct: np.ndarray, epoch: int) -> np.ndarray:
    t = correct.shape[1]
    if not 1 <= epoch <= t:
        raise ConfigError(f"jtt: epoch (T) must be in 1..{t} (the recorded epochs), got {epoch}")
    return ~correct[:, epoch - 1]


@register_score(
    "jtt",
    needs=("correct",),
    flag=_jtt_flag,
    description="JTT's error set: misclassified by the ERM model after epoch T (1), else 0",
)
def jtt_error_set(*, correct: np.ndarray, epoch: int) -> np.ndarray:
    """1.0 where ``correct`` (N, T) is False at epoch ``epoch`` (1-based), else 0.0."""
    return _jtt_flag(correct=correct, epoch=epoch).astype(np.float64)


def _mapd_minority_flag(
    *,
    loss: np.ndarray,
    probe_loss: np.ndarray,
    probe_suspect: np.ndarray,
    k: int,
    threshold: float,
) -> np.ndarray:
    p = mapd_minority(
        loss=loss, probe_loss=probe_loss, probe_suspect=probe_suspect, k=k, threshold=threshold
    )
    return p > threshold


@register_score(
    "mapd_minority",
    needs=("loss", "probe_loss", "probe_suspect"),
    flag=_mapd_minority_flag,
    description="MAP-D: share of minority examples among the k nearest validation loss "
    "trajectories (k-NN fit on the whole validation split); flags p > threshold",
)
def mapd_minority(
    *,
    loss: np.ndarray,
    probe_loss: np.ndarray,
    probe_suspect: np.ndarray,
    k: int,
    threshold: float,
) -> np.ndarray:
    """p(minority) (N,) of the training curves ``loss`` against the validation curves
    ``probe_loss`` (M, T) whose minority flags are ``probe_suspect`` (M,) bool."""
    del threshold  # the decision's, not the score's
    if k > len(probe_loss):
        raise ConfigError(f"mapd_minority: k = {k} exceeds the {len(probe_loss)} validation curves")
    return mapd_probability(loss=loss, probe_loss=probe_loss, probe_suspect=probe_suspect, k=k)
