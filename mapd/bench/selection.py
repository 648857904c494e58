"""Cost of online batch selection per step against the step itself (``mapd bench``).

Prioritized training calls the selection on every step (Clothing1M: ~3,300 steps per epoch for
50 epochs), so MAP-D's k-NN of the 320 candidates against the 2 x 250 probe curves and the
bookkeeping around it must stay a small part of a step. Measured on the CPU with the small CNN
at 32 x 32 (wall clock, best of ``repeats`` after a warm-up call):

- ``step_s``: one step without the selection's own work: the scoring forward of the large batch
  and of the probes (training mode, BatchNorm statistics untouched) and the training step
  (forward, backward, optimizer) on the kept 32;
- ``overhead_s``: everything else the selection does per step (``Select.select`` with the
  scoring forward's logits given): gathering the candidates' curves, appending the current
  losses, the small-batch k-NN, the score, the class-balanced choice and the selection counts;
- at ``t`` = 1 (the first epoch) and ``t`` = the configured epochs of curves (50, Clothing1M).

Target: ``overhead_s`` at most 10 % of ``step_s`` (``passed``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mapd.bench.knn import _machine
from mapd.bench.noise import _best
from mapd.engine.method import frozen_batchnorm_stats
from mapd.engine.optim import AdamW
from mapd.io import save_json
from mapd.methods.selection import Select
from mapd.models import build_model

TARGETS = {"overhead_max": 0.10}


def _step_seconds(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, probes: torch.Tensor, keep: int,
    repeats: int,
) -> float:  # fmt: skip
    """Scoring forwards (candidates, probes) + a training step on ``keep`` rows."""
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)

    def step() -> None:
        with torch.no_grad(), frozen_batchnorm_stats(model):
            model(x)
            model(probes)
        loss = F.cross_entropy(model(x[:keep]), y[:keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _best(step, repeats)


def _overhead_seconds(
    *, n: int, b: int, probes: int, t: int, keep: int, num_classes: int, repeats: int, seed: int
) -> float:
    """``Select.select`` (MAP-D, class-balanced) with the scoring forward's logits given."""
    g = torch.Generator().manual_seed(seed)
    hist = torch.rand(n, t, generator=g).numpy().astype(np.float32)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    logits = torch.randn(b, num_classes, generator=g)
    probe_logits = torch.randn(probes, num_classes, generator=g)
    rows = torch.arange(probes)
    src = SimpleNamespace(
        labels=labels, batch=lambda idx, augment=False, generator=None: (None, labels[idx])
    )
    trainer = SimpleNamespace(
        n=n, device=torch.device("cpu"), s=SimpleNamespace(batch_size=b), train_src=src,
        gen=g, history=lambda: hist, log=lambda msg: None, metrics=[{}],
        # the scoring forward is given: probes when x is None, else the candidates
        clean_logits=lambda x: probe_logits if x is None else logits,
    )  # fmt: skip
    method = Select(
        score="mapd", keep=keep, balanced=True, min_per_class=2, probe_every=1,
        trajectory="current",
    )  # fmt: skip
    method.num_classes = num_classes
    method.set_probes(rows.numpy(), np.arange(probes) >= probes // 2)
    method.on_train_start(trainer)
    method.on_epoch_start(trainer, t)
    idx = torch.randperm(n, generator=g)[:b]
    y = labels[idx]
    x = torch.zeros(b, 1)
    return _best(lambda: method.select(trainer, idx, x, y), repeats)


def run_selection_benchmark(
    *,
    out_dir: str | os.PathLike,
    n: int = 10_000,
    batch: int = 320,
    keep: int = 32,
    probes: int = 500,
    epochs: int = 50,
    num_classes: int = 14,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Time a selecting step and the selection's own work; writes ``out_dir/selection.json``."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=num_classes, in_channels=3, image_size=32)
    model = model.to(memory_format=torch.channels_last).train()
    g = torch.Generator().manual_seed(seed)

    def images(m: int) -> torch.Tensor:
        x = torch.rand(m, 3, 32, 32, generator=g)
        return x.contiguous(memory_format=torch.channels_last)

    x, y = images(batch), torch.randint(0, num_classes, (batch,), generator=g)
    step_s = _step_seconds(model, x, y, images(probes), keep, repeats)
    sizes = {"first_epoch": 1, "last_epoch": epochs}
    overhead = {
        name: _overhead_seconds(
            n=n,
            b=batch,
            probes=probes,
            t=t,
            keep=keep,
            num_classes=num_classes,
            repeats=repeats,
            seed=seed,
        )
        for name, t in sizes.items()
    }
    result: dict[str, Any] = {
        "kind": "selection",
        "n": n,
        "batch": batch,
        "keep": keep,
        "probes": probes,
        "epochs": epochs,
        "num_classes": num_classes,
        "threads": torch.get_num_threads(),
        "step_s": step_s,
        "overhead_s": overhead,
        "overhead_share": {k: v / step_s for k, v in overhead.items()},
        "targets": dict(TARGETS),
        "machine": _machine(),
    }
    result["passed"] = all(v <= TARGETS["overhead_max"] for v in result["overhead_share"].values())
    save_json(Path(out_dir) / "selection.json", result)
    return result
