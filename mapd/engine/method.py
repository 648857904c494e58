"""The hooks a training method plugs into the engine (:class:`mapd.engine.trainer.Trainer`).

Every batch hook takes ``(trainer, idx, x, y)``: the trainer, the rows of the batch (B,) in
trajectory order, the augmented inputs (B, C, H, W) and the labels (B,). Concrete methods and
their registry live in :mod:`mapd.methods`; this base class is plain ERM with cross-entropy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from mapd.engine.trainer import Trainer


class Method:
    """Training-method hooks; the base class is empirical risk minimisation (cross-entropy).

    - :meth:`training_loss` returns the per-example loss to minimise and the logits to record
      (online recording scores them against the un-mixed labels ``y``); a method whose forward
      pass does not see the batch as given (mixup) returns ``None`` for the logits and the
      engine records from :meth:`Trainer.clean_logits` instead.
    - :meth:`select` trains on a chosen part of each batch.
    - the epoch hooks update state from :meth:`Trainer.history` (the curves recorded so far).
    - :meth:`state_dict` is checkpointed: plain tensors, numbers, strings, lists and dicts only
      (checkpoints are loaded with ``weights_only=True``).

    ``settings`` are the method's section of the config (``methods/<name>``); they are part of
    the run's resume signature, so a changed setting never resumes a stale run.
    """

    name = "ce"
    settings: dict[str, Any] = {}  # noqa: RUF012 (read-only; a subclass sets its own in __init__)

    def __init__(self, **settings: Any) -> None:
        self.settings = dict(settings)

    def signature(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings}

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None: ...

    def select(
        self, trainer: Trainer, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor | None:
        """Positions within the batch to train on (None = all)."""
        return None

    def training_loss(
        self, trainer: Trainer, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-example loss (B,) to minimise, and logits (B, K) of ``x`` as given (or None)."""
        logits = trainer.forward_model(x)
        return F.cross_entropy(logits.float(), y, reduction="none"), logits

    def outputs(self, trainer: Trainer) -> dict[str, Any]:
        """Per-example arrays the method estimated (e.g. ``p_noisy`` (N,)), written into the
        run folder as ``<name>.npy`` when training ends."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@contextlib.contextmanager
def frozen_batchnorm_stats(model: torch.nn.Module) -> Iterator[None]:
    """Forward passes inside leave every BatchNorm's running statistics as they were.

    The model stays in its mode: in train mode BatchNorm still normalises with the batch's own
    statistics (as the training forward does). The passes update scratch copies of the running
    buffers; the originals are put back untouched, so a training forward's autograd graph that
    saved them stays valid.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.running_mean, m.running_var, m.num_batches_tracked))
            m.running_mean = m.running_mean.clone()
            m.running_var = m.running_var.clone()
            m.num_batches_tracked = m.num_batches_tracked.clone()
    try:
        yield
    finally:
        for m, mean, var, count in saved:
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count
