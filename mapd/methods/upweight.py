"""Training methods of the minority-group experiment (JTT's two stages, Liu et al. 2021).

- ``holdout``: cross-entropy on every row except the held-out ones, which stay in the run only
  to be recorded (the validation split whose curves fit MAP-D's k-NN): :meth:`select` drops
  them from every batch before the forward pass, so they get no gradient and never enter a
  batch's BatchNorm statistics.
- ``upweight``: JTT's second stage with the detected set ``rows`` counted ``lambda_up`` times.
  ``mode: weight`` multiplies their per-example loss by ``lambda_up`` (normalised so the mean
  weight over the training set is 1: the expected gradient of a step equals that of the
  upsampled set's); ``mode: upsample`` is JTT's own: the training set is built with the
  detected rows repeated (:func:`upsample_order`), trained with plain cross-entropy.

Both take their rows from the caller (:meth:`with_rows`), not from the config; the rows are
part of the run's resume signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mapd.config import fingerprint
from mapd.engine.method import Method
from mapd.errors import ConfigError
from mapd.methods import register_method

if TYPE_CHECKING:
    from mapd.engine.trainer import Trainer


def _rows(n: int, rows: np.ndarray, what: str) -> np.ndarray:
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise ConfigError(f"{what}: rows must lie in [0, {n}), got {rows[0]}..{rows[-1]}")
    return rows


class _RowsMethod(Method):
    """A method with a per-run row set (``with_rows``) in its signature."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.n = 0
        self.rows = np.zeros(0, dtype=np.int64)

    def with_rows(self, n: int, rows: np.ndarray) -> _RowsMethod:
        self.n, self.rows = n, _rows(n, rows, self.name)
        return self

    def signature(self) -> dict[str, Any]:
        return {**super().signature(), "n": self.n, "rows": fingerprint(self.rows.tolist())}

    def _check(self, trainer: Trainer) -> None:
        if self.n != trainer.n:
            raise ConfigError(f"{self.name}: rows set for {self.n} rows, the run has {trainer.n}")


@register_method
class HoldOut(_RowsMethod):
    """Cross-entropy on all rows but ``rows``, which are recorded and never trained on."""

    name = "holdout"

    def on_train_start(self, trainer: Trainer) -> None:
        self._check(trainer)
        mask = np.ones(self.n, dtype=bool)
        mask[self.rows] = False
        self._train = torch.as_tensor(mask, device=trainer.device)

    def select(
        self, trainer: Trainer, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor | None:
        return torch.nonzero(self._train[idx]).flatten()


@register_method
class Upweight(_RowsMethod):
    """JTT's second stage: the rows ``rows`` weigh ``lambda_up`` times the others."""

    name = "upweight"

    def __init__(self, *, lambda_up: float, mode: str) -> None:
        if mode not in ("weight", "upsample"):
            raise ConfigError(f"upweight: mode must be weight or upsample, got {mode!r}")
        super().__init__(lambda_up=lambda_up, mode=mode)
        self.lambda_up, self.mode = float(lambda_up), mode

    def weights(self) -> np.ndarray:
        """(N,) loss weight of every row: ``lambda_up`` for the detected rows, 1 otherwise,
        scaled to mean 1 (mode weight); all ones when the data are upsampled instead."""
        w = np.ones(self.n, dtype=np.float64)
        if self.mode == "weight":
            w[self.rows] = self.lambda_up
            w *= self.n / w.sum()
        return w

    def on_train_start(self, trainer: Trainer) -> None:
        self._check(trainer)
        self._w = torch.as_tensor(self.weights(), dtype=torch.float32, device=trainer.device)

    def training_loss(
        self, trainer: Trainer, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = trainer.forward_model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        return loss * self._w[idx], logits


def upsample_order(n: int, rows: np.ndarray, lambda_up: int) -> np.ndarray:
    """JTT's upsampled training set as positions into the ``n`` rows: every row once, then the
    detected ``rows`` ``lambda_up - 1`` more times (each of them ``lambda_up`` times in all)."""
    if lambda_up < 1 or int(lambda_up) != lambda_up:
        raise ConfigError(f"upweight: upsample needs an integer lambda_up >= 1, got {lambda_up}")
    rows = _rows(n, rows, "upweight")
    return np.concatenate([np.arange(n, dtype=np.int64), np.tile(rows, int(lambda_up) - 1)])
