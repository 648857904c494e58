"""The training engine: trains a model and records every example's learning curve.

After every epoch the per-example loss and correctness of every training row (ordinary data,
training probes and held-out probes alike) is written to an on-disk (N, T) array, either by an
eval-mode pass over the training set (``record="eval"``, the paper's protocol) or from the
training forward pass itself (``record="online"``, nearly free). Every epoch ends with a
checkpoint; a re-run resumes from it and produces the same trajectories, bit for bit on CPU.

Methods (label correction, mixup, prioritised selection, ...) plug in through
:class:`mapd.engine.method.Method`: they can replace the loss, choose examples inside a batch and
read the curves recorded so far (:meth:`Trainer.history`) while training runs.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mapd.engine.augment import TensorSource
from mapd.engine.method import Method, frozen_batchnorm_stats
from mapd.engine.optim import SGD, AdamW
from mapd.errors import ConfigError, DataError
from mapd.io import atomic_path, load_json, read_npy_header, save_json
from mapd.models import fold_batchnorm


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run: the config's ``train`` section.

    No defaults here: :meth:`from_config` fills the missing ones from the schema.
    """

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    milestones: list[int]
    gamma: float
    warmup_epochs: int
    record: str
    record_augment: bool
    record_probs: list[int]
    eval_batch_size: int
    amp: bool
    compile: bool

    @classmethod
    def from_config(cls, train: dict[str, Any] | None = None) -> TrainSettings:
        """From a (possibly partial) ``train`` section, validated, schema defaults filled."""
        from mapd.config import section

        train = section("train", train)
        return cls(**{f: train[f] for f in cls.__dataclass_fields__})

    def lr_factor(self, epoch: float) -> float:
        """Learning-rate multiplier at fractional epoch ``epoch`` (0 = start of training)."""
        if self.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(epoch / self.epochs, 1.0)))
        elif self.schedule == "step":
            f = self.gamma ** sum(epoch >= m for m in self.milestones)
        elif self.schedule == "constant":
            f = 1.0
        else:
            raise ConfigError(f"unknown schedule {self.schedule!r}")
        if self.warmup_epochs:
            f *= min(1.0, (epoch + 1e-9) / self.warmup_epochs)
        return f


class _SpanTimer:
    """Total time of many short spans inside a loop: wall clock on CPU (ops are synchronous);
    CUDA events on a GPU, so timing adds no synchronisation to the training loop."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.cpu_s = 0.0
        self.events: list[tuple[Any, Any]] = []
        self._start: Any = None

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((self._start, end))
        else:
            self.cpu_s += time.perf_counter() - self._start

    def seconds(self) -> float:
        """The total; on CUDA call it after a device synchronisation."""
        return self.cpu_s + sum(a.elapsed_time(b) for a, b in self.events) / 1000.0


class _Interrupt(Exception):
    """Raised by ``stop_after_epoch`` to simulate a killed run in tests."""


class _Discard(Exception):
    """Why a partial run cannot be resumed."""


# what the engine records for every example after every epoch, and the dtype of its (N, T) file
CURVES: dict[str, np.dtype] = {
    "loss": np.dtype(np.float32),
    "correct": np.dtype(np.bool_),
    # logit of the given label minus the largest other logit (AUM's margin)
    "margin": np.dtype(np.float32),
    # the predicted class (-1 before it is recorded)
    "pred": np.dtype(np.int16),
}


_EMPTY = {"f": np.nan, "b": False, "i": -1}  # a value not recorded yet, per dtype kind
_TORCH = {"f": torch.float32, "b": torch.bool, "i": torch.int16}


def curve_values(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example loss, correctness and margin (B,) of logits (B, C) against labels (B,)."""
    logits = logits.float()
    given = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    pred = logits.argmax(1)
    return {
        "loss": F.cross_entropy(logits, y, reduction="none"),
        "correct": pred == y,
        "margin": given - others,
        "pred": pred.to(torch.int16),
    }


def _digest(arr: np.ndarray, epochs: int, block: int = 1 << 16) -> str:
    """sha256 of the first ``epochs`` columns of an (N, T) array, read in row blocks."""
    h = hashlib.sha256()
    for start in range(0, arr.shape[0], block):
        h.update(np.ascontiguousarray(arr[start : start + block, :epochs]).tobytes())
    return h.hexdigest()


def _check_npy(path: Path, shape: tuple[int, int], dtype: np.dtype) -> None:
    """A partial trajectory file must have the expected header and exactly the bytes it
    declares (a truncated file would be extended with zeros by a read-write memmap)."""
    try:
        with open(path, "rb") as f:
            got_shape, fortran, got_dtype = read_npy_header(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise _Discard(f"{path.name} is unreadable ({e})") from e
    if tuple(got_shape) != shape or got_dtype != dtype or fortran:
        raise _Discard(f"{path.name} holds {got_dtype} {tuple(got_shape)}, not {dtype} {shape}")
    size = path.stat().st_size
    if size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise _Discard(
            f"{path.name} is {size} bytes, not {offset + np.prod(shape) * dtype.itemsize}"
        )


def _differences(old: Any, new: dict[str, Any]) -> str:
    """The top-level settings that differ between two signatures, e.g. ``threads 2 -> 1``."""
    if not isinstance(old, dict):
        return "no readable settings"
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            small = all(isinstance(v, int | float | str | type(None)) for v in (a, b))
            out.append(f"{key} {a} -> {b}" if small else key)
    return ", ".join(out)


@dataclass
class TrainResult:
    loss: np.ndarray  # (N, T) float32
    correct: np.ndarray  # (N, T) bool
    metrics: dict[str, Any]
    model: torch.nn.Module | None = None
    test_correct: np.ndarray | None = None  # (N_test,) bool, correctness after the last epoch
    arrays: dict[str, np.ndarray] | None = None  # the method's per-example outputs
    margin: np.ndarray | None = None  # (N, T) float32
    pred: np.ndarray | None = None  # (N, T) int16 predicted class


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


class Trainer:
    """Trains ``model`` on ``train`` and records (N, epochs) loss/correctness trajectories.

    Args:
        model: a classifier returning logits.
        train: the training rows (a :class:`TensorSource`; row order = trajectory row order).
        settings: hyper-parameters.
        workdir: where the checkpoint and the in-progress trajectories live; resumed if present.
        test: optional test set, evaluated after every epoch.
        method: training-method hooks (default ERM).
        seed: seeds shuffling and augmentation (model init is seeded by the caller).
        signature: the settings a resume must match (JSON-able); a partial run written with
            other ones is discarded, naming what differs.
        log: progress sink (one line per epoch).
        eval_rows: with online recording, rows recorded by an eval pass at the end of every
            epoch instead (the authors' label-noise protocol records its probes so).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train: TensorSource,
        *,
        settings: TrainSettings,
        workdir: str | Path,
        test: TensorSource | None = None,
        method: Method | None = None,
        seed: int = 0,
        signature: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
        eval_rows: np.ndarray | None = None,
    ) -> None:
        self.device = train.device
        self.model = model.to(self.device)
        if train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_src, self.test_src = train, test
        self.s = settings
        self.method = method or Method()
        self.seed = seed
        self.workdir = Path(workdir)
        self.signature = dict(signature or {})
        self.eval_rows = (
            None
            if eval_rows is None
            else torch.as_tensor(np.asarray(eval_rows, dtype=np.int64), device=self.device)
        )
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.n = len(train)
        self.epoch = 0  # epochs completed
        self.metrics: list[dict[str, Any]] = []
        self.test_correct: np.ndarray | None = None
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)
        if settings.record not in ("eval", "online", "none"):
            raise ConfigError(f"record must be eval, online or none, got {settings.record!r}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        # mapd's optimizers: torch's arithmetic without importing torch._dynamo (see optim.py)
        if settings.optimizer == "sgd":
            self.opt = SGD(
                params,
                lr=settings.lr,
                momentum=settings.momentum,
                nesterov=settings.nesterov,
                weight_decay=settings.weight_decay,
            )
        elif settings.optimizer == "adamw":
            self.opt = AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        else:
            raise ConfigError(f"unknown optimizer {settings.optimizer!r}")
        self.amp = settings.amp and self.device.type == "cuda"
        # what training calls: the model itself, or its torch.compile wrapper (same weights);
        # eval passes run a BatchNorm-folded copy instead (see evaluate)
        self.forward_model: torch.nn.Module = self.model
        if settings.compile and self.device.type == "cuda":
            self.forward_model = torch.compile(self.model)
        self.probs_at: dict[int, np.ndarray] = {}  # epoch -> (N, C) softmax (record_probs)
        self._open_workdir()

    # --- trajectories ---------------------------------------------------------------------
    def _open_workdir(self) -> None:
        """Open the in-progress trajectories: resume a verified partial run, else start afresh.

        A partial run resumes only when its signature equals this run's, both trajectory files
        have exactly the expected header and size, the checkpoint loads as plain data
        (``weights_only``) and the completed epochs of both files match the checksums stored with
        it. Anything else is said in one line and the run starts from epoch 1.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        shape = (self.n, self.s.epochs)
        state = None
        if (self.workdir / "checkpoint.pt").exists():
            try:
                state = self._resumable_state(shape)
            except _Discard as e:
                self.log(f"discarding partial run in {self.workdir}: {e}; starting at epoch 1")
        mode = "w+" if state is None else "r+"
        self.curves = {
            name: np.lib.format.open_memmap(
                self.workdir / f"{name}.npy", mode=mode, dtype=dtype, shape=shape
            )
            for name, dtype in CURVES.items()
        }
        if state is None:
            (self.workdir / "checkpoint.pt").unlink(missing_ok=True)
            for mm in self.curves.values():
                mm[:] = _EMPTY[mm.dtype.kind]
            save_json(self.workdir / "signature.json", {"key": self.signature, "shape": shape})
        else:
            self._restore(state)

    def _resumable_state(self, shape: tuple[int, int]) -> dict[str, Any]:
        sig_file = self.workdir / "signature.json"
        try:
            sig = load_json(sig_file)
        except DataError as e:
            raise _Discard(f"signature.json is missing or unreadable ({e})") from e
        old = sig.get("key") if isinstance(sig, dict) else None
        if not isinstance(old, dict) or old != self.signature:
            raise _Discard(f"its settings differ ({_differences(old, self.signature)})")
        if tuple(sig.get("shape", ())) != shape:
            raise _Discard(f"its trajectories have shape {sig.get('shape')}, not {list(shape)}")
        for name, dtype in CURVES.items():
            _check_npy(self.workdir / f"{name}.npy", shape, dtype)
        ckpt = self.workdir / "checkpoint.pt"
        try:
            # plain data only: a checkpoint never runs code (no pickled objects are loaded)
            state = torch.load(ckpt, map_location=self.device, weights_only=True)
        except Exception as e:  # truncated, garbage or not plain data: torch raises many types
            raise _Discard(f"{ckpt.name} cannot be read as plain data ({type(e).__name__})") from e
        epoch = int(state.get("epoch", -1)) if isinstance(state, dict) else -1
        if not 0 <= epoch <= shape[1]:
            raise _Discard(f"{ckpt.name} holds no valid epoch")
        for name, digest in (state.get("digests") or {}).items():
            arr = np.load(self.workdir / name, mmap_mode="r", allow_pickle=False)
            if _digest(arr, epoch) != digest:
                raise _Discard(f"{name} does not match the checksum recorded with the checkpoint")
        if set(state.get("digests") or {}) != {f"{name}.npy" for name in CURVES}:
            raise _Discard(f"{ckpt.name} has no checksums of the trajectories")
        return state

    def history(self, *, upto: int | None = None, what: str = "loss") -> np.ndarray:
        """Recorded curves of the completed epochs: (N, t) float32 ``loss``, bool ``correct`` or
        float32 ``margin``."""
        t = self.epoch if upto is None else min(upto, self.epoch)
        return np.asarray(self.curves[what][:, :t])

    # --- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        for mm in self.curves.values():
            mm.flush()
        state = {
            "epoch": self.epoch,
            # what a resume verifies: the completed epochs of every trajectory file
            "digests": {f"{n}.npy": _digest(mm, self.epoch) for n, mm in self.curves.items()},
            "probs": {str(k): torch.as_tensor(v) for k, v in self.probs_at.items()},
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "metrics": self.metrics,
            "method": self.method.state_dict(),
            **self._checkpoint_extra(),
        }
        with atomic_path(self.workdir / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.epoch = int(state["epoch"])
        self.metrics = list(state["metrics"])
        self.method.load_state_dict(state["method"])
        self.probs_at = {int(k): v.cpu().numpy() for k, v in state["probs"].items()}
        self.log(f"resuming from {self.workdir} after epoch {self.epoch}/{self.s.epochs}")

    # --- data parallelism: identities for one process; mapd.engine.distributed's
    # DistributedTrainer splits every batch and recording pass between processes
    def _permutation(self, perm: torch.Tensor) -> torch.Tensor:
        return perm

    def _part(self, idx: torch.Tensor) -> torch.Tensor | None:
        return idx

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def _record_all(self, src: TensorSource, **kw: Any) -> dict[str, torch.Tensor]:
        return self.evaluate_curves(src, **kw)

    def _gather_online(self, ep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return ep

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {}

    # --- passes ---------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    @torch.no_grad()
    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` from a no-grad forward in the model's current (training) mode that
        leaves BatchNorm's running statistics unchanged: what the training forward would give
        for ``x``, without touching the model."""
        with frozen_batchnorm_stats(self.model), self._autocast():
            return self.forward_model(x)

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` in eval mode (running BatchNorm statistics), the mode restored."""
        was = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                return self.model(x)
        finally:
            self.model.train(was)

    @torch.inference_mode()
    def evaluate_curves(
        self,
        src: TensorSource,
        *,
        augment: bool = False,
        generator: torch.Generator | None = None,
        rows: torch.Tensor | None = None,
        probs: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The curves' values (:data:`CURVES`) of the model on ``src`` in eval mode: (N,) each,
        or (R,) for the positions ``rows`` only; with ``probs``, also the softmax (N, C).

        Runs a copy of the model with its BatchNorms folded into the convs (the same function
        in eval mode, one pass over the activations less; see :func:`fold_batchnorm`).
        """
        self.model.eval()
        model = fold_batchnorm(self.model)
        positions = torch.arange(len(src), device=self.device) if rows is None else rows
        out: dict[str, torch.Tensor] = {
            name: torch.empty(len(positions), dtype=_TORCH[dtype.kind], device=self.device)
            for name, dtype in CURVES.items()
        }
        for part in torch.arange(len(positions), device=self.device).split(self.s.eval_batch_size):
            x, y = src.batch(positions[part], augment=augment, generator=generator)
            with self._autocast():
                logits = model(x)
            for name, value in curve_values(logits, y).items():
                out[name][part] = value
            if probs:
                p = torch.softmax(logits.float(), dim=1)
                if "probs" not in out:
                    out["probs"] = torch.empty(len(positions), p.shape[1], device=self.device)
                out["probs"][part] = p
        return out

    def evaluate(
        self,
        src: TensorSource,
        *,
        augment: bool = False,
        generator: torch.Generator | None = None,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example loss and correctness of the model on ``src`` in eval mode (see
        :meth:`evaluate_curves`)."""
        c = self.evaluate_curves(src, augment=augment, generator=generator, rows=rows)
        return c["loss"], c["correct"]

    def _train_epoch(self, epoch: int) -> tuple[float, dict[str, torch.Tensor] | None, _SpanTimer]:
        """One training pass: mean loss, the online-recorded curves' values (or None) and the
        time spent on online recording inside the pass."""
        self.model.train()
        online = self.s.record == "online"
        recording = _SpanTimer(self.device)
        ep = None
        if online:  # NaN / False / -1: rows the pass did not train on (selection)
            ep = {
                name: torch.full(
                    (self.n,), _EMPTY[dtype.kind], dtype=_TORCH[dtype.kind], device=self.device
                )
                for name, dtype in CURVES.items()
            }
        perm = self._permutation(torch.randperm(self.n, device=self.device, generator=self.gen))
        batches = perm.split(self.s.batch_size)
        total, count = torch.zeros((), device=self.device), 0
        for i, idx in enumerate(batches):
            for group in self.opt.param_groups:
                group["lr"] = self.s.lr * self.s.lr_factor(epoch + i / len(batches))
            idx = self._part(idx)  # this process's rows of the batch (data parallel)
            if idx is None:
                continue
            x, y = self.train_src.batch(idx, augment=True, generator=self.gen)
            chosen = self.method.select(self, idx, x, y)
            if chosen is not None:
                if len(chosen) == 0:  # nothing of this batch is trained on (held-out rows)
                    continue
                idx, x, y = idx[chosen], x[chosen], y[chosen]
            with self._autocast():
                loss_vec, logits = self.method.training_loss(self, idx, x, y)
            if online and logits is None:
                # the method's forward did not see the batch as given (mixup): the un-mixed
                # batch's logits, before this step's update like the training forward's
                recording.start()
                logits = self.clean_logits(x)
                recording.stop()
            loss = loss_vec.mean()
            if not torch.isfinite(loss):
                raise DataError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, batch {i}; lower lr"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach() * len(idx)
            count += len(idx)
            if online:
                recording.start()
                with torch.no_grad():
                    for name, value in curve_values(logits.detach(), y).items():
                        ep[name][idx] = value
                recording.stop()
        if ep is not None:
            ep = self._gather_online(ep)
        total, count = self._sum(total), self._sum(torch.tensor(count, dtype=torch.float64))
        return float(total) / max(float(count), 1), ep, recording

    # --- main loop ------------------------------------------------------------------------
    def fit(self, *, stop_after_epoch: int | None = None) -> TrainResult:
        """Train to ``settings.epochs`` (resuming if a checkpoint exists) and return trajectories.

        ``stop_after_epoch`` ends the run after that epoch's checkpoint, as a kill would
        (for tests of resumption).
        """
        self.method.on_train_start(self)
        while self.epoch < self.s.epochs:
            e = self.epoch
            self.method.on_epoch_start(self, e)
            self._sync()
            t0 = time.perf_counter()
            train_loss, ep, online_timer = self._train_epoch(e)
            self._sync()
            t1 = time.perf_counter()
            online_s = online_timer.seconds()  # recording work inside the training pass
            want_probs = (e + 1) in self.s.record_probs
            if self.s.record == "eval":
                g = torch.Generator(device=self.device)
                g.manual_seed(self.seed * 100_003 + e)  # own stream: resuming does not shift it
                ep = self._record_all(
                    self.train_src, augment=self.s.record_augment, generator=g, probs=want_probs
                )
            if ep is not None:
                if self.s.record == "online" and torch.isnan(ep["loss"]).any():
                    # examples not trained on this epoch (selection) keep their last values;
                    # in the first epoch there are none, so an eval pass gives them
                    missing = torch.isnan(ep["loss"])
                    if e:
                        prev = {
                            n: torch.as_tensor(mm[:, e - 1], device=self.device)
                            for n, mm in self.curves.items()
                        }
                    else:
                        prev = self._record_all(self.train_src)
                    ep = {n: torch.where(missing, prev[n], ep[n]) for n in CURVES}
                if self.s.record == "online" and self.eval_rows is not None:
                    # these rows (the authors' probes) are recorded by an eval pass instead
                    rec = self.evaluate_curves(self.train_src, rows=self.eval_rows)
                    for name in CURVES:
                        ep[name][self.eval_rows] = rec[name]
                for name, mm in self.curves.items():
                    mm[:, e] = ep[name].cpu().numpy()
            if want_probs:  # e.g. EL2N's early epoch: the eval pass's softmax of every row
                if ep is None or "probs" not in ep:
                    ep = self._record_all(self.train_src, probs=True)
                self.probs_at[e + 1] = ep["probs"].cpu().numpy()
            self._sync()
            t2 = time.perf_counter()
            test_acc = None
            if self.test_src is not None:
                test_ok = self.evaluate(self.test_src)[1]
                self.test_correct = test_ok.cpu().numpy()  # per example, e.g. for group accuracy
                test_acc = float(test_ok.float().mean())
            t3 = time.perf_counter()
            self.epoch = e + 1
            row = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "test_acc": test_acc,
                "lr": self.opt.param_groups[0]["lr"],
                # training alone, and every recording step (online: inside the pass)
                "train_s": t1 - t0 - online_s,
                "record_s": t2 - t1 + online_s,
                "test_s": t3 - t2,
                "seconds": t3 - t0,
            }
            self.metrics.append(row)
            self.method.on_epoch_end(self, e)
            self._save_checkpoint()
            acc = "" if test_acc is None else f" test_acc {test_acc:.4f}"
            self.log(
                f"epoch {self.epoch}/{self.s.epochs} loss {train_loss:.4f}{acc} "
                f"(train {row['train_s']:.1f}s, record {row['record_s']:.1f}s)"
            )
            if (
                stop_after_epoch is not None
                and self.epoch >= stop_after_epoch
                and self.epoch < self.s.epochs
            ):
                raise _Interrupt(f"stopped after epoch {self.epoch}")
        curves = {name: np.array(mm) for name, mm in self.curves.items()}
        loss, correct = curves["loss"], curves["correct"]
        if self.s.record != "none" and not np.isfinite(loss).all():
            raise DataError("recorded trajectories contain NaN or inf losses")
        if self.test_src is not None and self.test_correct is None:  # resumed after the last epoch
            self.test_correct = self.evaluate(self.test_src)[1].cpu().numpy()
        return TrainResult(
            loss=loss,
            correct=correct,
            metrics=self.summary(),
            model=self.model,
            test_correct=self.test_correct,
            arrays={
                **{f"probs_e{k}": v for k, v in self.probs_at.items()},
                **self.method.outputs(self),
            },
            margin=curves["margin"],
            pred=curves["pred"],
        )

    def summary(self) -> dict[str, Any]:
        train_s = sum(m["train_s"] for m in self.metrics)
        return {
            "epochs": self.metrics,
            "final_test_acc": self.metrics[-1]["test_acc"] if self.metrics else None,
            "best_test_acc": max(
                (m["test_acc"] for m in self.metrics if m["test_acc"] is not None), default=None
            ),
            "recording": self.s.record,
            "n": self.n,
            "train_images_per_s": self.n * len(self.metrics) / train_s if train_s else None,
            "record_s_total": sum(m["record_s"] for m in self.metrics),
            "train_s_total": train_s,
            "device": str(self.device),
            # CPU results are reproducible bit for bit at this thread count
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }
