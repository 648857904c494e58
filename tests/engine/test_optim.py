"""mapd's SGD and AdamW give torch's parameters bit for bit, checkpoint as plain data, and never
import torch._dynamo."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from mapd.engine.optim import SGD, AdamW


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 5),
    )


def _train(model: torch.nn.Module, opt, steps: int = 6) -> None:
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        x = torch.randn(8, 3, 6, 6, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        for group in opt.param_groups:
            group["lr"] = 0.1 / (i + 1)  # the trainer sets the rate every step
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    "kw",
    [
        {"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    ],
)
def test_sgd_equals_torch_bit_for_bit(kw: dict) -> None:
    ours, ref = _model(), _model()
    _train(ours, SGD(ours.parameters(), lr=0.1, **kw))
    _train(ref, torch.optim.SGD(ref.parameters(), lr=0.1, **kw))
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


def test_adamw_equals_torch_bit_for_bit() -> None:
    ours, ref = _model(), _model()
    _train(ours, AdamW(ours.parameters(), lr=1e-3, weight_decay=0.01))
    _train(ref, torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.01))
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [SGD, AdamW])
def test_state_round_trips_through_a_plain_data_checkpoint(cls) -> None:
    kw = {"momentum": 0.9} if cls is SGD else {}
    a, b, c = _model(), _model(), _model()
    opt_a = cls(a.parameters(), lr=0.05, **kw)
    _train(a, opt_a, steps=3)
    buf = io.BytesIO()
    torch.save({"opt": opt_a.state_dict(), "model": a.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b.load_state_dict(state["model"])
    opt_b = cls(b.parameters(), lr=0.05, **kw)
    opt_b.load_state_dict(state["opt"])
    _train(a, opt_a, steps=3)
    _train(b, opt_b, steps=3)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)
    # without the saved state the continuation differs: the test can tell
    _train(c, cls(c.parameters(), lr=0.05, **kw), steps=3)
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_training_does_not_import_dynamo() -> None:
    code = (
        "import sys, torch\n"
        "from mapd.engine.optim import SGD\n"
        "m = torch.nn.Linear(3, 2); o = SGD(m.parameters(), lr=0.1, momentum=0.9)\n"
        "m(torch.randn(4, 3)).sum().backward(); o.step(); o.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
