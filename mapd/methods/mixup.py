"""mixup (Zhang et al. 2018): train on convex combinations of pairs of examples and labels.

For a batch (x, y) and a permutation pi of it, lambda ~ Beta(alpha, alpha):
x~ = lambda x + (1 - lambda) x[pi], loss = lambda CE(f(x~), y) + (1 - lambda) CE(f(x~), y[pi]).
The random draws come from the method's own generator, seeded by the run's seed and
checkpointed, so a resumed run draws the same lambdas and permutations.

Recording (``record`` setting, online recording only): ``clean`` scores the un-mixed batch
(:meth:`Trainer.clean_logits`, one extra no-grad forward); ``mixed`` is the authors' choice in
their label-noise code: the output on the mixed input scored against the un-mixed label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mapd.engine.method import Method
from mapd.methods import register_method

_SEED_SALT = 0x6D1C  # keeps this generator's stream apart from the trainer's


def mix(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """lambda * x + (1 - lambda) * x[perm] (B, ...)."""
    return lam * x + (1.0 - lam) * x[perm]


def mixed_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor
) -> torch.Tensor:
    """Per-example lambda CE(logits, y) + (1 - lambda) CE(logits, y[perm]) (B,)."""
    logits = logits.float()
    return lam * F.cross_entropy(logits, y, reduction="none") + (1.0 - lam) * F.cross_entropy(
        logits, y[perm], reduction="none"
    )


@register_method
class Mixup(Method):
    name = "mixup"

    def __init__(self, *, alpha: float, record: str) -> None:
        super().__init__(alpha=alpha, record=record)
        self.alpha, self.record = float(alpha), record
        self.rng: np.random.Generator | None = None

    def on_train_start(self, trainer: Any) -> None:
        if self.rng is None:  # not restored from a checkpoint
            self.rng = np.random.default_rng([trainer.seed, _SEED_SALT])

    def draw(self, batch: int) -> tuple[float, np.ndarray]:
        """lambda and the pairing permutation of a batch of ``batch`` examples."""
        assert self.rng is not None, "on_train_start seeds the generator"
        lam = float(self.rng.beta(self.alpha, self.alpha))
        return lam, self.rng.permutation(batch)

    def training_loss(
        self, trainer: Any, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        lam, perm_np = self.draw(len(y))
        perm = torch.as_tensor(perm_np, device=x.device)
        logits = trainer.forward_model(mix(x, lam, perm))
        loss = mixed_cross_entropy(logits, y, lam, perm)
        return loss, (logits if self.record == "mixed" else None)

    def state_dict(self) -> dict[str, Any]:
        # the bit generator's state is a dict of ints and strings: safe for weights_only loads
        return {"rng": None if self.rng is None else self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("rng") is not None:
            self.rng = np.random.default_rng()
            self.rng.bit_generator.state = state["rng"]
