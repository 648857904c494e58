"""Data-parallel training: one training job in several processes (torchrun style).

``mapd train`` with ``train/processes`` P > 1 starts P copies of itself through
``torch.distributed.run`` (torchrun, standalone: one host). Each copy is a rank: it builds the
same data sources and model, trains on its share of every global batch (the batch is split
between the ranks, so the global batch size stays ``train/batch_size``) and
:class:`DistributedDataParallel` averages the gradients. NCCL on CUDA (one GPU per rank, its
``LOCAL_RANK``), gloo on CPU; the code path is the same otherwise. SyncBatchNorm (the authors'
choice) is CUDA-only in torch; on CPU each rank normalises with its own part of the batch.

Recording: every rank records the rows it trained on (online) or its share of all rows (eval
pass); :meth:`DistributedTrainer._gather` sums the shares into full (N,) vectors and checks
that every row was recorded by exactly one rank. Rank 0 writes the (N, T) trajectory files and
the checkpoint (with every rank's random state), the other ranks open the same files; a resume
works exactly as for one process.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mapd.engine.trainer import _EMPTY, _TORCH, CURVES, Trainer
from mapd.errors import ConfigError, MapdError


@dataclass(frozen=True)
class Rank:
    rank: int
    world: int
    local_rank: int


def launched() -> bool:
    """Whether this process is a rank started by torchrun (it sets these variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def current() -> Rank | None:
    """This process's rank in an initialised group of more than one process, else None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_writer() -> bool:
    """Whether this process writes shared outputs (rank 0, or a single process)."""
    r = current()
    return r is None or r.rank == 0


def launch(processes: int, argv: list[str], *, device: str) -> None:
    """Run ``mapd <argv>`` in ``processes`` ranks on this host (torch.distributed.run)."""
    if device == "cuda" or (device == "auto" and _visible_gpus()):
        gpus = _visible_gpus()
        if len(gpus) < processes:
            raise ConfigError(
                f"train/processes is {processes} but {len(gpus)} GPU(s) are visible "
                f"({', '.join(gpus) or 'none'})"
            )
    # torchrun --standalone, through its Python API: torchrun's command line would take mapd's
    # own options (--log) for abbreviations of its options
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        run_id=str(uuid.uuid4()),
        max_restarts=0,
        monitor_interval=1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "mapd.cli", *argv)
    except ChildFailedError as e:
        codes = sorted({f.exitcode for f in e.failures.values()})
        raise MapdError(
            f"a data-parallel training process failed (exit {codes}); see the log"
        ) from None


def _visible_gpus() -> list[str]:
    from mapd.slots import visible_devices  # no torch.cuda call: CUDA stays uninitialised

    return visible_devices()


@contextmanager
def process_group(device: str) -> Iterator[Rank | None]:
    """Join torchrun's process group for the duration (NCCL on CUDA, gloo on CPU); nothing when
    this process was not started by torchrun."""
    if not launched():
        yield None
        return
    local = int(os.environ["LOCAL_RANK"])
    cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if cuda:
        torch.cuda.set_device(local)  # "cuda" means this rank's GPU from here on
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def prepare_model(model: torch.nn.Module, *, sync_bn: bool, device: torch.device) -> Any:
    """The model a rank trains: BatchNorm synchronised across ranks where torch supports it."""
    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def shard(n: int, rank: Rank) -> torch.Tensor:
    """The positions 0..n-1 one rank records in an eval pass (every rank-th)."""
    return torch.arange(rank.rank, n, rank.world)


class DistributedTrainer(Trainer):
    """:class:`Trainer` in one rank of a process group; only the data-parallel hooks differ."""

    def __init__(self, *args: Any, rank: Rank, **kwargs: Any) -> None:
        self.rank = rank
        super().__init__(*args, **kwargs)
        from torch.nn.parallel import DistributedDataParallel as DDP

        # "cuda" is this rank's GPU (process_group set it as the current device)
        ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's weights: every rank starts (or resumes) from the same model
        ddp = DDP(self.model, device_ids=ids)
        self.forward_model = torch.compile(ddp) if self.forward_model is not self.model else ddp
        if rank.rank and not self.epoch:  # a fresh run: each rank its own augmentation stream
            self.gen.manual_seed(self.seed * 1_000_003 + rank.rank)

    # --- the hooks ------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> Any:
        out = super()._train_epoch(epoch)
        # BatchNorm running statistics: each rank updated its own in the last step; recording,
        # the test pass and the checkpoint all use rank 0's, as the saved model has them
        for buf in self.model.buffers():
            wire = buf.to(self._wire())
            dist.broadcast(wire, src=0)
            buf.copy_(wire)
        return out

    def _permutation(self, perm: torch.Tensor) -> torch.Tensor:
        perm = perm.to(self._wire())
        dist.broadcast(perm, src=0)  # one shuffle for all ranks (their streams differ)
        return perm.to(self.device)

    def _part(self, idx: torch.Tensor) -> torch.Tensor | None:
        if len(idx) < self.rank.world:  # a last batch too small to give every rank a row
            return None
        return idx.tensor_split(self.rank.world)[self.rank.rank]

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        out = value.detach().double().to(self._wire())
        dist.all_reduce(out)
        return out.to(value.device)

    def _record_all(self, src: Any, **kw: Any) -> dict[str, torch.Tensor]:
        rows = shard(self.n, self.rank).to(self.device)
        part = self.evaluate_curves(src, rows=rows, **kw)
        return self._gather(part, rows)

    def _gather_online(self, ep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = torch.nonzero(~torch.isnan(ep["loss"])).squeeze(1)
        return self._gather({k: v[rows] for k, v in ep.items()}, rows)

    def _gather(self, part: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full (N,) vectors from every rank's values at its ``rows``; a row recorded by two
        ranks is an error, a row recorded by none keeps the empty value (not trained on)."""
        wire = self._wire()
        count = torch.zeros(self.n, dtype=torch.float64, device=wire)
        count[rows.to(wire)] = 1
        dist.all_reduce(count)
        if (count > 1).any():
            raise RuntimeError(f"{int((count > 1).sum())} rows were recorded by two ranks")
        seen = (count == 1).to(self.device)
        out = {}
        for name, value in part.items():
            width = value.shape[1:] if value.dim() > 1 else ()
            full = torch.zeros((self.n, *width), dtype=torch.float64, device=wire)
            full[rows.to(wire)] = value.to(wire, torch.float64)
            dist.all_reduce(full)  # one rank contributes each row, the others add zeros
            if name in CURVES:
                kind = CURVES[name].kind
                empty = torch.full_like(full, float(_EMPTY[kind]))
                full = torch.where(seen.to(wire), full, empty)
                out[name] = full.to(self.device, _TORCH[kind])
            else:
                out[name] = full.to(self.device, value.dtype)
        self.record_counts = count.to(torch.int64).cpu()  # rows x times recorded (tests)
        return out

    def _wire(self) -> torch.device:
        """Where collectives run: the GPU with NCCL, the CPU with gloo."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # --- files: rank 0 writes, every rank resumes -----------------------------------------
    def _open_workdir(self) -> None:
        if self.rank.rank == 0:
            super()._open_workdir()
        dist.barrier()  # rank 0 has verified (or reset) the partial run
        if self.rank.rank != 0:
            self.curves = {
                name: np.lib.format.open_memmap(self.workdir / f"{name}.npy", mode="r+")
                for name in CURVES
            }
        epoch = torch.tensor([self.epoch], dtype=torch.int64)
        dist.broadcast(epoch, src=0)
        if self.rank.rank != 0 and int(epoch):
            state = torch.load(
                self.workdir / "checkpoint.pt", map_location=self.device, weights_only=True
            )
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        gens = state.get("gens") or []
        if self.rank.rank < len(gens):  # this rank's own augmentation stream
            self.gen.set_state(gens[self.rank.rank])

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {"gens": self._gens}

    def _save_checkpoint(self) -> None:
        gens: list[Any] = [None] * self.rank.world
        dist.all_gather_object(gens, self.gen.get_state())  # a collective: every rank
        self._gens = [torch.as_tensor(g) for g in gens]
        if self.rank.rank == 0:
            super()._save_checkpoint()
        dist.barrier()  # the files hold this epoch before any rank goes on
