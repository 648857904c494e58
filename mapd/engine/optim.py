"""SGD and AdamW with the arithmetic of ``torch.optim.SGD`` / ``torch.optim.AdamW``.

Why not torch's: their ``step`` imports ``torch._dynamo`` (about 4 s per process on the 2-core
CPU), and a workflow runs one training process per job. These apply the same elementwise
operations in the same order (``torch._foreach_*`` kernels, one launch per op on a GPU), so on
the CPU the parameters equal torch's bit for bit (tested). Only what the engine uses is
supported: ``param_groups[0]["lr"]`` is set by the trainer every step; no dampening, no
maximize, no amsgrad.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class _Optimizer:
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        self.params = [p for p in params]
        self.param_groups: list[dict[str, Any]] = [{"lr": float(lr)}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _with_grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
        pairs = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        return [p for _, p in pairs], [p.grad for _, p in pairs], [i for i, _ in pairs]

    def _state_tensors(self) -> dict[str, list[torch.Tensor | None]]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, numbers and lists: checkpoints load with ``weights_only=True``."""
        return {
            "lr": self.param_groups[0]["lr"],
            **{
                k: [None if t is None else t.clone() for t in v]
                for k, v in self._state_tensors().items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.param_groups[0]["lr"] = float(state["lr"])
        for key, tensors in self._state_tensors().items():
            saved = state[key]
            if len(saved) != len(self.params):
                raise ValueError(
                    f"optimizer state {key!r}: {len(saved)} tensors for {len(self.params)} "
                    "parameters"
                )
            for i, t in enumerate(saved):
                tensors[i] = None if t is None else t.to(self.params[i].device).clone()


class SGD(_Optimizer):
    """``torch.optim.SGD`` with momentum (dampening 0), Nesterov and L2 weight decay."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def _state_tensors(self) -> dict[str, list[torch.Tensor | None]]:
        return {"momentum_buffer": self.buffers}

    @torch.no_grad()
    def step(self) -> None:
        params, grads, idx = self._with_grads()
        if not params:
            return
        lr = self.param_groups[0]["lr"]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            fresh = [i for i in idx if self.buffers[i] is None]
            for i in fresh:  # the first step: the buffer is the gradient (torch: clone)
                self.buffers[i] = grads[idx.index(i)].clone().detach()
            old = [k for k, i in enumerate(idx) if i not in fresh]
            if old:
                bufs = [self.buffers[idx[k]] for k in old]
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, [grads[k] for k in old], alpha=1.0)
            bufs = [self.buffers[i] for i in idx]
            if self.nesterov:
                grads = torch._foreach_add(grads, bufs, alpha=self.momentum)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)


class AdamW(_Optimizer):
    """``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8, decoupled weight decay)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr)
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.exp_avg: list[torch.Tensor | None] = [None] * len(self.params)
        self.exp_avg_sq: list[torch.Tensor | None] = [None] * len(self.params)
        self.steps: list[torch.Tensor | None] = [None] * len(self.params)

    def _state_tensors(self) -> dict[str, list[torch.Tensor | None]]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.steps}

    @torch.no_grad()
    def step(self) -> None:
        params, grads, idx = self._with_grads()
        lr = self.param_groups[0]["lr"]
        beta1, beta2 = self.betas
        for p, g, i in zip(params, grads, idx, strict=True):
            if self.steps[i] is None:
                self.steps[i] = torch.tensor(0.0)
                self.exp_avg[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.exp_avg_sq[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
            self.steps[i] += 1
            p.mul_(1 - lr * self.weight_decay)
            self.exp_avg[i].lerp_(g, 1 - beta1)
            self.exp_avg_sq[i].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            step = float(self.steps[i])
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (self.exp_avg_sq[i].sqrt() / bias_correction2**0.5).add_(self.eps)
            p.addcdiv_(self.exp_avg[i], denom, value=-step_size)
