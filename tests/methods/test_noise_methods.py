"""The label-noise methods on hand-made batches and stub trainers, and a correcting run's
kill-and-resume on the engine."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapd.config import section
from mapd.data import load_dataset
from mapd.engine.run import train_trajectories
from mapd.engine.trainer import _Interrupt
from mapd.errors import ConfigError
from mapd.methods import build_method
from mapd.methods.correction import Backward, Forward
from mapd.methods.dynamic import MAPD, MDYRH
from mapd.methods.mixup import Mixup
from mapd.scores.mixture import fit_beta_mixture

pytestmark = pytest.mark.usefixtures("one_thread")

DEFAULTS = section("methods", {})


def _batch(
    seed: int = 0, b: int = 6, c: int = 4
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Linear(5, c), torch.randn(b, 5), torch.randint(0, c, (b,))


def _stub(model: torch.nn.Module, **kw) -> SimpleNamespace:
    return SimpleNamespace(
        forward_model=model, clean_logits=lambda x: model(x).detach(), seed=0, **kw
    )


@pytest.mark.parametrize(("name", "hard"), [("reed_soft", False), ("reed_hard", True)])
def test_reed_bootstrapping_by_hand(name: str, hard: bool) -> None:
    model, x, y = _batch()
    method = build_method(name, DEFAULTS[name])
    loss, logits = method.training_loss(_stub(model), torch.arange(6), x, y)
    beta = DEFAULTS[name]["beta"]
    logp = F.log_softmax(model(x), dim=1)
    q = F.one_hot(logp.argmax(1), 4).float() if hard else logp.exp().detach()
    target = beta * F.one_hot(y, 4).float() + (1 - beta) * q
    torch.testing.assert_close(loss, -(target * logp).sum(1))
    torch.testing.assert_close(logits, model(x))


@pytest.mark.parametrize("cls", [Forward, Backward])
def test_loss_correction_with_the_identity_is_cross_entropy(cls) -> None:
    model, x, y = _batch()
    method = cls(quantile=0.97)
    method.set_transition(np.eye(4))
    trainer = _stub(model, device=torch.device("cpu"))
    method.on_train_start(trainer)
    loss, _ = method.training_loss(trainer, torch.arange(6), x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y, reduction="none"))
    assert method.signature()["transition"]  # the matrix is part of the resume signature
    with pytest.raises(ConfigError, match="row-stochastic"):
        method.set_transition(np.ones((4, 4)))
    with pytest.raises(ConfigError, match="no noise transition matrix"):
        cls(quantile=0.97).on_train_start(trainer)


def _history_trainer(curves: np.ndarray, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(
        history=lambda: curves[:, :epoch], epoch=epoch, device=torch.device("cpu"), seed=0
    )


def test_mapd_p_noisy_is_the_share_of_noisy_probe_neighbours() -> None:
    # rows 0-5 are probes: 0-2 clean (low, falling curves), 3-5 random labels (high, flat)
    # clean probes at 0, 1, 2; noisy probes at 10, 11, 12 (first epoch; the second is 0)
    first = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 0.5, 11.5, 6.6]
    curves = np.stack([first, np.zeros(9)], axis=1).astype(np.float32)
    # the last row: nearest 10 (3.4), 11 (4.4), then 2 (4.6) before 12 (5.4): 2 of 3 noisy
    settings = {**DEFAULTS["mapd"], "k": 3, "warmup": 1}
    m = MAPD(**settings)
    m.set_probes(np.arange(6), np.array([False] * 3 + [True] * 3))
    p = m.estimate(_history_trainer(curves, 2))
    np.testing.assert_allclose(p[6:], [0.0, 1.0, 2 / 3])
    np.testing.assert_allclose(p[:6], [0, 0, 0, 1, 1, 1])
    b = build_method("mapd_binary", {**DEFAULTS["mapd_binary"], "k": 3, "warmup": 1})
    b.set_probes(np.arange(6), np.array([False] * 3 + [True] * 3))
    np.testing.assert_array_equal(b.estimate(_history_trainer(curves, 2))[6:], [0, 1, 1])
    # the clamp of the loss weight
    m.on_epoch_start(_history_trainer(curves, 2), 1)
    assert float(m.p.min()) == pytest.approx(1e-4) and float(m.p.max()) == pytest.approx(1 - 1e-4)


def test_mapd_needs_probes_of_both_kinds_and_enough_of_them() -> None:
    m = MAPD(**{**DEFAULTS["mapd"], "k": 3, "warmup": 1})
    with pytest.raises(ConfigError, match="clean and noisy probes"):
        m.set_probes(np.arange(4), np.zeros(4, bool))
    with pytest.raises(ConfigError, match="k = 3 but only 2 probes"):
        m.set_probes(np.arange(2), np.array([False, True]))
    with pytest.raises(ConfigError, match="warmup must be >= 1"):
        MAPD(**{**DEFAULTS["mapd"], "k": 3, "warmup": 0})


def test_mdyr_h_p_noisy_is_the_beta_mixture_posterior_of_the_eval_losses() -> None:
    rng = np.random.default_rng(0)
    last = np.concatenate([rng.beta(2, 9, 300), rng.beta(9, 2, 100)]) * 3
    curves = np.stack([last + 0.5, last], axis=1).astype(np.float32)
    trainer = _history_trainer(curves, 2)
    trainer.s = SimpleNamespace(record="eval", record_augment=False)
    m = MDYRH(**DEFAULTS["mdyr_h"])
    p = m.estimate(trainer)
    expected = fit_beta_mixture(curves[:, -1].astype(np.float64), iterations=10).posterior(
        curves[:, -1].astype(np.float64)
    )
    np.testing.assert_allclose(p, expected)
    assert p[300:].mean() > p[:300].mean() + 0.3  # high losses are the noisy component


def test_before_the_warm_up_ends_the_dynamic_methods_are_plain_mixup() -> None:
    model, x, y = _batch()
    for name in ("mdyr_h", "mapd"):
        settings = {**DEFAULTS[name], "warmup": 5, **({"k": 3} if name == "mapd" else {})}
        m, ref = build_method(name, settings), Mixup(alpha=settings["alpha"], record="mixed")
        if name == "mapd":
            m.set_probes(np.arange(6), np.arange(6) >= 3)
        for method in (m, ref):
            method.on_train_start(_stub(model))
        m.on_epoch_start(SimpleNamespace(), 2)
        assert m.p is None
        a, _ = m.training_loss(_stub(model), torch.arange(6), x, y)
        b, _ = ref.training_loss(_stub(model), torch.arange(6), x, y)
        torch.testing.assert_close(a, b)


def test_after_the_warm_up_the_loss_is_dynamic_hard_bootstrapping_under_mixup() -> None:
    model, x, y = _batch(b=8)
    m = MAPD(**{**DEFAULTS["mapd"], "k": 3, "warmup": 1, "reg_weight": 0.5})
    m.set_probes(np.arange(6), np.arange(6) >= 3)
    m.on_train_start(SimpleNamespace(seed=0))
    w = torch.linspace(0.1, 0.9, 8)
    m.p = w
    lam, perm = 0.7, np.array([3, 0, 1, 2, 7, 4, 5, 6])
    m.draw = lambda b: (lam, perm)
    loss, _ = m.training_loss(_stub(model), torch.arange(8), x, y)
    xm = lam * x + (1 - lam) * x[perm]
    logp = F.log_softmax(model(xm), dim=1)
    z = model(x).argmax(1)
    nll = lambda t: -logp.gather(1, t[:, None]).squeeze(1)  # noqa: E731
    first = (1 - w) * nll(y) + w * nll(z)
    second = (1 - w[perm]) * nll(y[perm]) + w[perm] * nll(z[perm])
    pbar = logp.exp().mean(0)
    reg = (0.25 * (np.log(0.25) - torch.log(pbar))).sum()
    torch.testing.assert_close(loss, lam * first + (1 - lam) * second + 0.5 * reg)


def _mapd_run(data, workdir: Path, **kw):
    images, labels = data
    m = build_method("mapd", {**DEFAULTS["mapd"], "k": 5, "warmup": 1, "alpha": 1.0})
    probes = np.arange(40)
    m.set_probes(probes, probes >= 20)
    fixed = np.zeros(len(images), bool)
    fixed[probes] = True
    train = {
        "model": "small_cnn",
        "model_options": {"width": 8},
        "epochs": 4,
        "batch_size": 32,
        "lr": 0.05,
        "crop_padding": 1,
        "flip": True,
        "record": "online",
    }
    return train_trajectories(
        images, labels, num_classes=10, train=train, seed=1, workdir=workdir, device="cpu",
        method=m, fixed_rows=fixed, eval_rows=probes, **kw,
    )  # fmt: skip


def test_a_correcting_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    labels = ds.labels[:200].copy()
    labels[20:40] = (labels[20:40] + 3) % 10  # the noisy probes
    data = (ds.images[:200], labels)
    full = _mapd_run(data, tmp_path / "full")
    with pytest.raises(_Interrupt):
        _mapd_run(data, tmp_path / "part", stop_after_epoch=2)
    resumed = _mapd_run(data, tmp_path / "part")
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.correct, full.correct)
    np.testing.assert_array_equal(resumed.arrays["p_noisy"], full.arrays["p_noisy"])
    assert [e["test_acc"] for e in resumed.metrics["epochs"]] == [
        e["test_acc"] for e in full.metrics["epochs"]
    ]
    assert full.arrays["p_noisy"].shape == (200,)
