"""Patrini et al. (2017) loss correction with a noise transition matrix T (T[i, j] = p(observed
label j | true class i)), estimated from a model trained on the noisy labels.

The matrix comes from outside the run (:meth:`LossCorrection.set_transition`, e.g. estimated
from the cross-entropy run of the same data and noise); its digest is part of the resume
signature.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from mapd.engine.method import Method
from mapd.errors import ConfigError
from mapd.methods import register_method
from mapd.methods.losses import backward_corrected_loss, forward_corrected_loss


class LossCorrection(Method):
    """Forward or backward corrected cross-entropy; needs :meth:`set_transition` first."""

    def __init__(self, *, quantile: float) -> None:
        super().__init__(quantile=quantile)
        self.quantile = float(quantile)
        self.transition: np.ndarray | None = None
        self._t: torch.Tensor | None = None

    def set_transition(self, transition: np.ndarray) -> None:
        t = np.asarray(transition, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] != t.shape[1] or not np.allclose(t.sum(1), 1.0, atol=1e-6):
            raise ConfigError(f"{self.name}: the transition matrix must be row-stochastic (C, C)")
        self.transition = t

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        if self.transition is not None:
            digest = hashlib.sha256(np.ascontiguousarray(self.transition).tobytes()).hexdigest()
            sig["transition"] = digest[:16]
        return sig

    def on_train_start(self, trainer: Any) -> None:
        if self.transition is None:
            raise ConfigError(f"{self.name}: no noise transition matrix was given")
        self._t = torch.as_tensor(self.transition, dtype=torch.float32, device=trainer.device)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(
        self, trainer: Any, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = trainer.forward_model(x)
        return self._loss(logits, y), logits


@register_method
class Forward(LossCorrection):
    name = "forward"

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return forward_corrected_loss(logits, y, self._t)


@register_method
class Backward(LossCorrection):
    name = "backward"

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return backward_corrected_loss(logits, y, self._t)
