"""Reed et al. (2015) bootstrapping: train towards a mix of the given label and the model's own
prediction, beta * y + (1 - beta) * q (soft: q the predicted distribution; hard: its argmax)."""

from __future__ import annotations

from typing import Any

import torch

from mapd.engine.method import Method
from mapd.methods import register_method
from mapd.methods.losses import bootstrap_loss


class _Reed(Method):
    hard = False

    def __init__(self, *, beta: float) -> None:
        super().__init__(beta=beta)
        self.beta = float(beta)

    def training_loss(
        self, trainer: Any, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = trainer.forward_model(x)
        return bootstrap_loss(logits, y, 1.0 - self.beta, hard=self.hard), logits


@register_method
class ReedSoft(_Reed):
    name = "reed_soft"


@register_method
class ReedHard(_Reed):
    name = "reed_hard"
    hard = True
