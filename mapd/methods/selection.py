"""Online batch selection (prioritized training; paper Sec. 3.4, Mindermann et al. 2022).

Every step draws a large batch (``train/batch_size``, 320 in the paper), scores it and trains on
the ``keep`` (32) best-scored examples. Scores are plain functions picked by name from
:data:`SELECTION_SCORES`; each gets the :class:`Candidates` of a step and returns (B,) floats,
higher = trained on first:

- ``uniform``: a random draw (no scoring forward);
- ``loss``: the current cross-entropy (highest loss first; Loshchilov & Hutter);
- ``correct_class``: 1 - p(y|x), the paper's "correct class score" (the same ranking as ``loss``:
  both are decreasing functions of p(y|x));
- ``rho_loss``: the current loss minus the irreducible loss of a model trained on a holdout split
  (Mindermann et al.'s reducible holdout loss);
- ``mapd``: (p(clean) + (1 - p(y|x))) / 2 (the paper's Eq. 9), p(clean) the share of clean
  probes among the k = 20 nearest probe loss curves.

The scoring forward runs the model in training mode without touching BatchNorm's running
statistics or the parameters (:meth:`Trainer.clean_logits`). ``balanced`` keeps at least
``min_per_class`` examples of every class whenever the large batch has them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mapd.engine.method import Method
from mapd.errors import ConfigError
from mapd.knn_small import knn_share_small
from mapd.methods import register_method


@dataclass
class Candidates:
    """One step's large batch as the scores see it (every tensor (B,) on the device)."""

    idx: torch.Tensor  # rows of the training set
    y: torch.Tensor  # labels trained on
    loss: torch.Tensor | None = None  # current cross-entropy (scoring forward)
    p_true: torch.Tensor | None = None  # current p(y | x)
    irreducible: torch.Tensor | None = None  # holdout model's loss (rho_loss)
    p_clean: torch.Tensor | None = None  # MAP-D's share of clean probes among the k nearest
    generator: torch.Generator | None = None  # uniform's draw


SelectionScore = Callable[[Candidates], torch.Tensor]
SELECTION_SCORES: dict[str, SelectionScore] = {}
# what a score needs beyond the labels: "forward" (loss, p_true), "irreducible", "probes"
SCORE_NEEDS: dict[str, tuple[str, ...]] = {}


def register_selection_score(
    name: str, *, needs: tuple[str, ...] = ()
) -> Callable[[SelectionScore], SelectionScore]:
    def deco(fn: SelectionScore) -> SelectionScore:
        SELECTION_SCORES[name], SCORE_NEEDS[name] = fn, tuple(needs)
        return fn

    return deco


@register_selection_score("uniform")
def uniform(c: Candidates) -> torch.Tensor:
    return torch.rand(len(c.idx), generator=c.generator, device=c.idx.device)


@register_selection_score("loss", needs=("forward",))
def highest_loss(c: Candidates) -> torch.Tensor:
    return c.loss


@register_selection_score("correct_class", needs=("forward",))
def correct_class(c: Candidates) -> torch.Tensor:
    return 1.0 - c.p_true


@register_selection_score("rho_loss", needs=("forward", "irreducible"))
def rho_loss(c: Candidates) -> torch.Tensor:
    return c.loss - c.irreducible


@register_selection_score("mapd", needs=("forward", "probes"))
def mapd_score(c: Candidates) -> torch.Tensor:
    return (c.p_clean + (1.0 - c.p_true)) / 2.0


def keep_of(batch: int, *, keep: int, large: int) -> int:
    """Examples trained on from a large batch of ``batch`` rows: ``keep`` of a full one, the same
    share (rounded up) of the epoch's last, shorter batch."""
    return min(batch, keep if batch >= large else -(-batch * keep // large))


def choose(
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    keep: int,
    min_per_class: int = 0,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Positions (keep,) of the best-scored candidates, at least ``min_per_class`` of every class
    that has that many candidates (all of its candidates otherwise).

    Args:
        scores: (B,) higher = chosen first; equal scores: lower position first.
        labels: (B,) int64 class of each candidate.
        keep: how many to choose (<= B).
        min_per_class: the class-balance minimum (0 = plain top-``keep``).
        num_classes: classes to balance over (default: ``labels.max() + 1``).

    Returns:
        The chosen positions, best first within the balanced part and the rest, and how many
        classes fell short of the minimum (fewer candidates than ``min_per_class``).
    """
    b = len(scores)
    if not 0 < keep <= b:
        raise ValueError(f"choose: keep = {keep} must be in [1, {b}]")
    order = torch.sort(-scores.double(), stable=True).indices  # best first
    if not min_per_class:
        return order[:keep], 0
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if c * min_per_class > keep:
        raise ValueError(f"choose: {c} classes x {min_per_class} exceed keep = {keep}")
    ranked_labels = labels[order]
    # rank of each candidate within its class, in score order
    onehot = F.one_hot(ranked_labels, c)
    within = (onehot.cumsum(0) * onehot).sum(1) - 1
    forced = within < min_per_class
    short = int((torch.bincount(ranked_labels, minlength=c) < min_per_class).sum())
    first = order[forced]
    rest = order[~forced][: keep - len(first)]
    return torch.cat([first, rest]), short


@register_method
class Select(Method):
    """Online batch selection: train on the ``keep`` best-scored examples of every large batch.

    ``rho_loss`` needs :meth:`set_irreducible` (the holdout model's loss of every row), ``mapd``
    needs :meth:`set_probes` (probe rows, which of them have random labels) and ``k``.
    """

    name = "select"

    def __init__(
        self,
        *,
        score: str,
        keep: int,
        balanced: bool,
        min_per_class: int,
        probe_every: int,
        trajectory: str,
        k: int = 20,
    ) -> None:
        super().__init__(
            score=score,
            keep=keep,
            balanced=balanced,
            min_per_class=min_per_class,
            probe_every=probe_every,
            trajectory=trajectory,
            k=k,
        )
        if score not in SELECTION_SCORES:
            raise ConfigError(
                f"select: unknown score {score!r}; registered: {sorted(SELECTION_SCORES)}"
            )
        self.score, self.needs = score, SCORE_NEEDS[score]
        if trajectory not in ("current", "epochs"):
            raise ConfigError(f"select: trajectory must be current or epochs, got {trajectory!r}")
        self.keep, self.k, self.probe_every = int(keep), int(k), int(probe_every)
        self.trajectory = trajectory
        self.min_per_class = int(min_per_class) if balanced else 0
        self.irreducible: torch.Tensor | None = None
        self.irreducible_digest: str | None = None
        self.probe_rows: torch.Tensor | None = None
        self.probe_noisy: torch.Tensor | None = None
        self.num_classes: int | None = None  # default: the training labels' largest + 1
        self.chosen: torch.Tensor | None = None  # (N,) times each row was trained on
        self.short = 0  # large batches of this epoch that could not meet the class minimum
        self._probe_hist: torch.Tensor | None = None
        self._hist: torch.Tensor | None = None
        self._probe_now: torch.Tensor | None = None
        self._probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step = 0

    # --- inputs ---------------------------------------------------------------------------------
    def set_irreducible(self, losses: np.ndarray) -> None:
        """The holdout model's loss (N,) of every training row with its training label."""
        losses = np.ascontiguousarray(losses, dtype=np.float32)
        if losses.ndim != 1 or not np.isfinite(losses).all():
            raise ConfigError("select: irreducible losses must be a finite (N,) array")
        self.irreducible = torch.as_tensor(losses)
        self.irreducible_digest = hashlib.sha256(losses.tobytes()).hexdigest()

    def set_probes(self, rows: np.ndarray, noisy: np.ndarray) -> None:
        rows, noisy = np.asarray(rows, dtype=np.int64), np.asarray(noisy, dtype=bool)
        if rows.shape != noisy.shape or not noisy.any() or noisy.all():
            raise ConfigError(f"select: needs clean and noisy probes (got {len(rows)})")
        if len(rows) < self.k:
            raise ConfigError(f"select: k = {self.k} but only {len(rows)} probes")
        self.probe_rows, self.probe_noisy = torch.as_tensor(rows), torch.as_tensor(noisy)

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        if self.irreducible_digest is not None:
            sig["irreducible"] = self.irreducible_digest
        if self.probe_rows is not None:
            sig["probes"] = [len(self.probe_rows), int(self.probe_noisy.sum())]
        return sig

    # --- hooks ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        large = trainer.s.batch_size
        if not 1 <= self.keep <= large:
            raise ConfigError(
                f"select: keep = {self.keep} must be in [1, train/batch_size = {large}]"
            )
        if self.num_classes is None:
            self.num_classes = int(trainer.train_src.labels.max()) + 1
        c = self.num_classes
        if self.min_per_class and c * self.min_per_class > self.keep:
            raise ConfigError(
                f"select: class balance needs {c} classes x min_per_class {self.min_per_class} "
                f"<= keep = {self.keep}"
            )
        if "irreducible" in self.needs:
            if self.irreducible is None or len(self.irreducible) != trainer.n:
                raise ConfigError(
                    f"select: score {self.score} needs the irreducible loss of all {trainer.n} "
                    "rows (set_irreducible)"
                )
            self.irreducible = self.irreducible.to(trainer.device)
        if "probes" in self.needs and self.probe_rows is None:
            raise ConfigError(f"select: score {self.score} needs probes (set_probes)")
        if self.chosen is None:
            self.chosen = torch.zeros(trainer.n, dtype=torch.int64)
        self.chosen = self.chosen.to(trainer.device)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.short, self._step = 0, 0
        if "probes" in self.needs:
            # the completed epochs' curves, on the device once per epoch
            hist = torch.as_tensor(trainer.history(), device=trainer.device)
            self._hist = hist
            self._probe_hist = hist[self.probe_rows.to(trainer.device)]

    def on_epoch_end(self, trainer: Any, epoch: int) -> None:
        if self.short:
            trainer.log(
                f"select: {self.short} large batch(es) of epoch {epoch + 1} had fewer than "
                f"{self.min_per_class} candidates of some class; those classes gave all they had"
            )
        trainer.metrics[-1]["balance_short"] = self.short
        self._hist = self._probe_hist = self._probe_now = self._probe_batch = None

    def p_clean(self, trainer: Any, idx: torch.Tensor, loss_now: torch.Tensor) -> torch.Tensor:
        """MAP-D's p(clean) of the candidates: their curves so far plus the current loss
        against the probes' curves plus the probes' current loss (refreshed every
        ``probe_every`` steps), so the k-NN works from the first step (``trajectory:
        current``, the authors'); or the completed epochs' curves alone (``epochs``: no probe
        forward per step; 1/2 while there is no completed epoch)."""
        dev = trainer.device
        if self.trajectory == "epochs":
            if self._hist.shape[1] == 0:
                return torch.full((len(idx),), 0.5, device=dev)
            share = knn_share_small(
                self._hist[idx], self._probe_hist, self.probe_noisy.to(dev).long(), k=self.k,
                num_classes=2,
            )  # fmt: skip
            return share[:, 0].float()
        rows = self.probe_rows.to(dev)
        if self._probe_now is None or self._step % self.probe_every == 0:
            if self._probe_batch is None:  # fixed inputs: built once per epoch
                self._probe_batch = trainer.train_src.batch(rows, augment=False)
            x, y = self._probe_batch
            logits = trainer.clean_logits(x).float()
            self._probe_now = F.cross_entropy(logits, y, reduction="none")
        queries = torch.cat([self._hist[idx], loss_now[:, None]], dim=1)
        refs = torch.cat([self._probe_hist, self._probe_now[:, None]], dim=1)
        share = knn_share_small(
            queries, refs, self.probe_noisy.to(dev).long(), k=self.k, num_classes=2
        )
        return share[:, 0].float()

    def candidates(
        self, trainer: Any, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> Candidates:
        """The step's :class:`Candidates`, with what this score needs computed."""
        c = Candidates(idx=idx, y=y, generator=trainer.gen)
        if "forward" in self.needs:
            logits = trainer.clean_logits(x).float()
            c.loss = F.cross_entropy(logits, y, reduction="none")
            c.p_true = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        if "irreducible" in self.needs:
            c.irreducible = self.irreducible[idx]
        if "probes" in self.needs:
            c.p_clean = self.p_clean(trainer, idx, c.loss)
        return c

    def select(
        self, trainer: Any, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        scores = SELECTION_SCORES[self.score](self.candidates(trainer, idx, x, y))
        keep = keep_of(len(idx), keep=self.keep, large=trainer.s.batch_size)
        # the epoch's last, shorter batch keeps the minimum only while it fits its share
        m = self.min_per_class if self.num_classes * self.min_per_class <= keep else 0
        chosen, short = choose(scores, y, keep=keep, min_per_class=m, num_classes=self.num_classes)
        self.short += int(short > 0)
        self.chosen[idx[chosen]] += 1
        self._step += 1
        return chosen

    # --- outputs and state ----------------------------------------------------------------------
    def outputs(self, trainer: Any) -> dict[str, Any]:
        """``selected_count`` (N,): how many steps trained on each row."""
        return {"selected_count": self.chosen.cpu().numpy().astype(np.int32)}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.chosen is None else {"chosen": self.chosen.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "chosen" in state:
            self.chosen = state["chosen"].clone()
