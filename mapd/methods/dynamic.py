"""Dynamic hard bootstrapping under mixup (Arazo et al. 2019, M-DYR-H), with p(noisy) per
example from a Beta mixture on the losses (``mdyr_h``) or from MAP-D's k-NN against a clean and a
random-label probe (``mapd``; ``mapd_binary`` thresholds it: the paper's Fig. 11 ablation).

For the first ``warmup`` epochs the methods train with plain mixup (the authors' "bootstrap"
epochs). Afterwards, with lambda ~ Beta(alpha, alpha), a batch partner permutation pi and z the
model's argmax prediction on the un-mixed inputs, the per-example loss is

    lambda [(1 - w) CE(f(x~), y) + w CE(f(x~), z)]
      + (1 - lambda) [(1 - w_pi) CE(f(x~), y_pi) + w_pi CE(f(x~), z_pi)] + reg * R

with w = p(noisy) clamped to [clamp, 1 - clamp] and R Arazo's regulariser towards a uniform
mean prediction. Differences from the authors' code, named in the report: z comes from a no-grad
training-mode forward that leaves BatchNorm's running statistics untouched (theirs updated
them); ``mdyr_h`` with ``posterior: epoch`` uses the losses at the start of the epoch instead of
an eval-mode forward of every batch (``posterior: batch``, Arazo's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mapd.errors import ConfigError
from mapd.methods import register_method
from mapd.methods.losses import bootstrap_loss, class_prior_regulariser
from mapd.methods.mixup import Mixup, mix
from mapd.scores import Inputs, compute_score
from mapd.scores.mixture import BetaMixture, fit_beta_mixture


class DynamicBootstrap(Mixup):
    """The shared M-DYR-H loss; subclasses estimate p(noisy) of every row per epoch."""

    uses_warmup = True  # the noise family varies ``warmup`` (Fig. 7)

    def __init__(
        self, *, alpha: float, record: str, warmup: int, reg_weight: float, clamp: float, **extra
    ) -> None:
        super().__init__(alpha=alpha, record=record)
        self.settings.update(warmup=warmup, reg_weight=reg_weight, clamp=clamp, **extra)
        self.warmup, self.reg_weight, self.clamp = int(warmup), float(reg_weight), float(clamp)
        self.p: torch.Tensor | None = None  # (N,) clamped p(noisy) of the current epoch

    # --- p(noisy) ------------------------------------------------------------------------------
    def estimate(self, trainer: Any) -> np.ndarray:
        """p(noisy) of every row (N,) from what is known at the start of this epoch."""
        raise NotImplementedError

    def batch_weight(self, trainer: Any, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.p[idx]

    def _clamped(self, p: np.ndarray, device: torch.device) -> torch.Tensor:
        p = np.clip(np.asarray(p, dtype=np.float64), self.clamp, 1.0 - self.clamp)
        return torch.as_tensor(p, dtype=torch.float32, device=device)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.p = None
        if epoch >= self.warmup:
            self.p = self._clamped(self.estimate(trainer), trainer.device)

    # --- loss ----------------------------------------------------------------------------------
    def training_loss(
        self, trainer: Any, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.p is None:  # warm-up: plain mixup
            return super().training_loss(trainer, idx, x, y)
        w = self.batch_weight(trainer, idx, x)
        clean = trainer.clean_logits(x)  # z: the prediction on the un-mixed batch
        lam, perm_np = self.draw(len(y))
        perm = torch.as_tensor(perm_np, device=x.device)
        logits = trainer.forward_model(mix(x, lam, perm))
        first = bootstrap_loss(logits, y, w, hard=True, target_logits=clean)
        second = bootstrap_loss(logits, y[perm], w[perm], hard=True, target_logits=clean[perm])
        reg = class_prior_regulariser(F.softmax(logits.float(), dim=1))
        loss = lam * first + (1.0 - lam) * second + self.reg_weight * reg
        return loss, (logits if self.record == "mixed" else None)

    def outputs(self, trainer: Any) -> dict[str, Any]:
        """``p_noisy`` (N,): the estimate from the whole run (not clamped)."""
        return {"p_noisy": np.asarray(self.estimate(trainer), dtype=np.float32)}


def _eval_losses(trainer: Any) -> np.ndarray:
    """Eval-mode losses of every training row, un-augmented (Arazo's per-epoch pass); the
    recorded curve's last column when recording already is exactly that pass."""
    if trainer.epoch and trainer.s.record == "eval" and not trainer.s.record_augment:
        return trainer.history()[:, -1].astype(np.float64)
    return trainer.evaluate(trainer.train_src)[0].cpu().numpy().astype(np.float64)


@register_method
class MDYRH(DynamicBootstrap):
    """Arazo et al.'s M-DYR-H: p(noisy) = posterior of the high-loss component of a Beta
    mixture fitted (EM) to the training losses at the start of every epoch."""

    name = "mdyr_h"

    def __init__(self, *, iterations: int, posterior: str, **settings: Any) -> None:
        super().__init__(iterations=iterations, posterior=posterior, **settings)
        if posterior not in ("epoch", "batch"):
            raise ConfigError(f"mdyr_h: posterior must be 'epoch' or 'batch', got {posterior!r}")
        self.iterations, self.posterior = int(iterations), posterior
        self.bmm: BetaMixture | None = None

    def estimate(self, trainer: Any) -> np.ndarray:
        losses = _eval_losses(trainer)
        self.bmm = fit_beta_mixture(losses, iterations=self.iterations)
        return self.bmm.posterior(losses)

    def batch_weight(self, trainer: Any, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.posterior == "epoch":
            return self.p[idx]
        # Arazo's: the current model's eval-mode loss on the batch, through this epoch's fit
        y = trainer.train_src.labels[idx]
        losses = F.cross_entropy(trainer.eval_logits(x).float(), y, reduction="none")
        return self._clamped(self.bmm.posterior(losses.cpu().numpy()), x.device)


@register_method
class MAPD(DynamicBootstrap):
    """MAP-D: p(noisy) = share of random-label probes among the k nearest probe trajectories
    (clean random-sample probes vs random-label probes), refit every epoch on the curves so far.

    Needs :meth:`set_probes` (which rows are probes, which of them have random labels) and ``k``
    (MAP-D's one k) in its settings."""

    name = "mapd"
    binary = False

    def __init__(self, *, k: int, **settings: Any) -> None:
        super().__init__(k=k, **settings)
        if self.warmup < 1:
            raise ConfigError(f"{self.name}: warmup must be >= 1 (the k-NN needs a curve)")
        self.k = int(k)
        self.probe_rows: np.ndarray | None = None
        self.probe_noisy: np.ndarray | None = None

    def set_probes(self, rows: np.ndarray, noisy: np.ndarray) -> None:
        rows, noisy = np.asarray(rows, dtype=np.int64), np.asarray(noisy, dtype=bool)
        if rows.shape != noisy.shape or not noisy.any() or noisy.all():
            raise ConfigError(f"{self.name}: needs clean and noisy probes (got {len(rows)})")
        if len(rows) < self.k:
            raise ConfigError(f"{self.name}: k = {self.k} but only {len(rows)} probes")
        self.probe_rows, self.probe_noisy = rows, noisy

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        if self.probe_rows is not None:
            sig["probes"] = [len(self.probe_rows), int(self.probe_noisy.sum())]
        return sig

    def on_train_start(self, trainer: Any) -> None:
        super().on_train_start(trainer)
        if self.probe_rows is None:
            raise ConfigError(f"{self.name}: set_probes was not called")

    def estimate(self, trainer: Any) -> np.ndarray:
        curves = trainer.history()  # (N, epochs so far)
        inputs = Inputs(
            loss=curves, probe_loss=curves[self.probe_rows], probe_suspect=self.probe_noisy
        )
        p = compute_score("mapd_knn", inputs, k=self.k)  # the paper's k-NN share
        return (p > 0.5).astype(np.float64) if self.binary else p


@register_method
class MAPDBinary(MAPD):
    """Fig. 11's ablation: the argmax (p > 0.5) of MAP-D's p(noisy) instead of p."""

    name = "mapd_binary"
    binary = True
