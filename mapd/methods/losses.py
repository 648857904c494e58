"""Per-example losses of the label-noise methods, and the noise transition matrix estimate.

- Bootstrapping (Reed et al. 2015, "Training deep neural networks on noisy labels with
  bootstrapping", ICLR workshop): the target is a mix of the given label and the model's own
  prediction, ``beta y + (1 - beta) q``; soft uses ``q = softmax`` (beta = 0.95), hard the
  one-hot argmax (beta = 0.8). :func:`bootstrap_loss` takes the prediction's share as a
  per-example weight ``w = 1 - beta``, which is how Arazo et al. (2019) make it dynamic, with
  ``w`` the Beta-mixture posterior p(noisy | loss) (:mod:`mapd.scores.mixture`).
- Loss correction (Patrini et al. 2017, "Making deep neural networks robust to label noise: a
  loss correction approach", CVPR): with ``T[i, j] = p(observed j | true i)``, forward correction
  scores ``softmax(logits) @ T`` against the label, backward correction weights the per-class
  losses by ``T^-1``; :func:`estimate_transition` is their anchor-point estimate of ``T``.
- :func:`class_prior_regulariser`: Arazo et al. (2019, "Unsupervised label noise modeling and
  loss correction", ICML)'s term that keeps the batch from drifting to one class when the model's
  own predictions are (part of) the target.

The losses compute in float32 whatever the dtype of ``logits`` (e.g. float16 under autocast) and
return one loss per example (B,); the caller reduces.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_PROB_FLOOR = 1e-12  # log of a probability that underflowed to 0
# Patrini et al.'s code (Keras) clips probabilities to [eps, 1 - eps] before the log, eps = 1e-7:
# without it the backward-corrected loss, whose weights T^-1 can be negative, is unbounded
# below and training diverges (seen on CIFAR-10: the loss ran to -2,000 and the logits to inf)
_KERAS_EPS = 1e-7


def _check_batch(logits: torch.Tensor, y: torch.Tensor, who: str) -> None:
    if logits.ndim != 2:
        raise ValueError(f"{who}: logits must be (B, C), got shape {tuple(logits.shape)}")
    if y.shape != logits.shape[:1]:
        raise ValueError(
            f"{who}: labels must be (B,) = ({logits.shape[0]},), got shape {tuple(y.shape)}"
        )


def _check_transition(
    transition: torch.Tensor | np.ndarray, num_classes: int, who: str
) -> torch.Tensor:
    t = torch.as_tensor(transition)
    if t.shape != (num_classes, num_classes):
        raise ValueError(
            f"{who}: transition must be (C, C) = ({num_classes}, {num_classes}), "
            f"got shape {tuple(t.shape)}"
        )
    return t


def bootstrap_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | float,
    *,
    hard: bool,
    target_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bootstrapping loss (B,) float32: ``(1 - w) CE(logits, y) + w CE(logits, target)``.

    Args:
        logits: (B, C) model outputs, any float dtype.
        y: (B,) int64 given (possibly noisy) labels.
        weight: ``w`` in [0, 1], the prediction's share of the target: a float or a (B,) tensor
            (one per example). Reed et al.'s soft bootstrapping is ``w = 0.05``, hard
            ``w = 0.2``. Only a float is range-checked (checking a tensor would synchronise the
            device every step).
        hard: target the argmax class ``z`` of the prediction (``CE(logits, z)``), else the
            predicted distribution ``q`` (``-(q * log_softmax(logits)).sum(1)``).
        target_logits: (B, C) outputs the prediction is taken from, e.g. of a clean forward
            pass; default ``logits``.

    The prediction target and the weight are detached: gradients flow through ``logits`` only,
    so the model is pulled towards its prediction, not the prediction towards the model (with
    a soft target that is not detached, the second term would add an entropy minimiser).
    """
    _check_batch(logits, y, "bootstrap_loss")
    if isinstance(weight, torch.Tensor):
        w = weight.detach().to(device=logits.device, dtype=torch.float32)
        if w.ndim > 0 and w.shape != y.shape:
            raise ValueError(
                f"bootstrap_loss: weight must be a float or (B,) = ({y.shape[0]},), "
                f"got shape {tuple(w.shape)}"
            )
    else:
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"bootstrap_loss: weight must be in [0, 1], got {weight}")
        w = torch.tensor(float(weight), device=logits.device)
    target = logits if target_logits is None else target_logits
    if target.shape != logits.shape:
        raise ValueError(
            f"bootstrap_loss: target_logits must be {tuple(logits.shape)} like logits, "
            f"got {tuple(target.shape)}"
        )
    target = target.detach().float()

    log_p = F.log_softmax(logits.float(), dim=1)
    ce_label = -log_p.gather(1, y.long().unsqueeze(1)).squeeze(1)
    if hard:
        z = target.argmax(dim=1)
        ce_target = -log_p.gather(1, z.unsqueeze(1)).squeeze(1)
    else:
        q = F.softmax(target, dim=1)
        ce_target = -(q * log_p).sum(dim=1)
    return (1.0 - w) * ce_label + w * ce_target


def forward_corrected_loss(
    logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Patrini et al.'s forward correction (B,) float32: ``-log((softmax(logits) @ T)[i, y_i])``.

    Args:
        logits: (B, C) model outputs, any float dtype.
        y: (B,) int64 observed labels.
        transition: (C, C) row-stochastic ``T[i, j] = p(observed j | true i)``.
    """
    _check_batch(logits, y, "forward_corrected_loss")
    t = _check_transition(transition, logits.shape[1], "forward_corrected_loss")
    t = t.to(device=logits.device, dtype=torch.float32)
    noisy = F.softmax(logits.float(), dim=1) @ t  # p(observed j | x)
    p_label = noisy.gather(1, y.long().unsqueeze(1)).squeeze(1)
    return -torch.log(p_label.clamp(_KERAS_EPS, 1.0 - _KERAS_EPS))


def backward_corrected_loss(
    logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Patrini et al.'s backward correction (B,) float32: ``sum_c T^-1[y_i, c] l_i(c)``.

    ``l_i(c) = -log_softmax(logits)[i, c]`` is the loss of example ``i`` if its label were
    ``c``; the corrected loss is ``(l_i @ (T^-1)^T)[y_i]``, unbiased for the clean loss in
    expectation over the label noise. It can be negative.

    Args:
        logits: (B, C) model outputs, any float dtype.
        y: (B,) int64 observed labels.
        transition: (C, C) invertible ``T[i, j] = p(observed j | true i)``.

    Raises:
        ValueError: ``transition`` is not (C, C) or is singular.
    """
    _check_batch(logits, y, "backward_corrected_loss")
    t = _check_transition(transition, logits.shape[1], "backward_corrected_loss")
    t64 = t.detach().to(device="cpu", dtype=torch.float64)
    # inverted in float64; cond = inf for an exactly singular T, huge for a numerically one
    cond = float(torch.linalg.cond(t64))
    if not np.isfinite(cond) or cond > 1.0 / np.finfo(np.float64).eps:
        raise ValueError(f"backward_corrected_loss: transition is singular (condition {cond:.3g})")
    t_inv = torch.linalg.inv(t64).to(device=logits.device, dtype=torch.float32)
    probs = F.softmax(logits.float(), dim=1).clamp(_KERAS_EPS, 1.0 - _KERAS_EPS)
    per_class = -torch.log(probs)  # (B, C), bounded: the corrected loss cannot run to -inf
    return (per_class * t_inv[y.long()]).sum(dim=1)


def class_prior_regulariser(probs: torch.Tensor) -> torch.Tensor:
    """Arazo et al.'s prior term (scalar float32): ``sum_c p_c log(p_c / pbar_c)``.

    ``pbar = probs.mean(0)`` (C,) is the batch's mean prediction and ``p_c = 1 / C`` a uniform
    class prior, so the term is KL(p || pbar) >= 0, zero when the batch's predictions are
    balanced on average. Added to a loss whose target includes the model's own predictions
    (bootstrapping), it stops the trivial solution of putting every example in one class.

    Args:
        probs: (B, C) predicted probabilities (softmax outputs; gradients flow through them).
    """
    if probs.ndim != 2:
        raise ValueError(
            f"class_prior_regulariser: probs must be (B, C), got shape {tuple(probs.shape)}"
        )
    pbar = probs.float().mean(dim=0).clamp_min(_PROB_FLOOR)
    prior = 1.0 / probs.shape[1]
    return (prior * (np.log(prior) - torch.log(pbar))).sum()


def estimate_transition(probs: np.ndarray, *, quantile: float = 0.97) -> np.ndarray:
    """Patrini et al.'s anchor-point estimate of the noise transition matrix (C, C) float64.

    ``probs`` (N, C) are softmax outputs of a model trained on the noisy labels. For each class
    ``i`` the anchor is the example most confidently of class ``i`` once outliers are dropped:
    the values of ``probs[:, i]`` at or above its ``quantile`` (numpy percentile, method
    "higher") are set to 0 and the anchor is the argmax of the rest; ``T[i, :] = probs[anchor]``
    and rows are renormalised to sum to 1. ``quantile = 1.0`` filters nothing: the anchor is the
    example with the largest ``p(i | x)``.

    Each class filters its own copy of the column: rows of ``T`` are the anchors' unmodified
    outputs (in the authors' code the zeroing is in place and leaks into later rows).

    Raises:
        ValueError: ``probs`` is not 2-D, empty, not finite, negative or its rows do not sum
            to 1; ``quantile`` is not in (0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"estimate_transition: probs must be (N, C), got shape {probs.shape}")
    if probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(
            f"estimate_transition: probs needs at least one row and class, got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("estimate_transition: probs must be finite and non-negative")
    worst = float(np.max(np.abs(probs.sum(axis=1) - 1.0)))
    if worst > 1e-3:  # softmax outputs in float32 sum to 1 within ~1e-6
        raise ValueError(
            f"estimate_transition: rows of probs must sum to 1 (softmax outputs), "
            f"off by up to {worst:.3g}"
        )
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"estimate_transition: quantile must be in (0, 1], got {quantile}")

    num_classes = probs.shape[1]
    transition = np.empty((num_classes, num_classes), dtype=np.float64)
    for i in range(num_classes):
        column = probs[:, i].copy()
        if quantile < 1.0:
            threshold = np.percentile(column, 100.0 * quantile, method="higher")
            column[column >= threshold] = 0.0
        transition[i] = probs[int(np.argmax(column))]
    return transition / transition.sum(axis=1, keepdims=True)
