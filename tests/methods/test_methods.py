"""Training methods: the registry, mixup on hand-made batches, and mixup on the engine (online
recording of the clean or the mixed batch, bit-for-bit resume, its settings in the signature)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapd.config import schema, section
from mapd.data import load_dataset
from mapd.engine.run import train_trajectories
from mapd.engine.trainer import _Interrupt
from mapd.errors import ConfigError
from mapd.methods import METHODS, build_method, method_for
from mapd.methods.mixup import Mixup, mix, mixed_cross_entropy

TRAIN = {
    "model": "small_cnn",
    "model_options": {"width": 8},
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
    "crop_padding": 1,
    "flip": False,
    "amp": False,
    "record": "online",
}
N = 160


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return ds.images[:N], ds.labels[:N]


def test_every_method_of_the_schema_is_registered_and_back() -> None:
    assert set(schema()["definitions"]["methods"]["properties"]) == set(METHODS)
    assert {"ce", "mixup"} <= set(METHODS)
    with pytest.raises(ConfigError, match="unknown training method 'nope'"):
        build_method("nope")


def test_method_for_reads_train_method_and_its_section() -> None:
    s = {"train": {"method": "mixup"}, "methods": section("methods", {"mixup": {"alpha": 32}})}
    m = method_for(s)
    assert isinstance(m, Mixup) and m.alpha == 32.0 and m.record == "clean"
    assert m.signature() == {"name": "mixup", "settings": {"alpha": 32, "record": "clean"}}


def test_mixed_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 0])
    perm = torch.tensor([2, 0, 1])
    lam = 0.3
    got = mixed_cross_entropy(logits, y, lam, perm)
    ce = lambda t: F.cross_entropy(logits, t, reduction="none")  # noqa: E731
    torch.testing.assert_close(got, lam * ce(y) + (1 - lam) * ce(y[perm]))
    x = torch.arange(6.0).view(3, 2)
    torch.testing.assert_close(mix(x, 0.25, perm), 0.25 * x + 0.75 * x[perm])


def test_mixup_with_lambda_one_is_cross_entropy() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    trainer = SimpleNamespace(forward_model=model, seed=0)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    m = Mixup(alpha=1.0, record="mixed")
    m.draw = lambda b: (1.0, np.random.default_rng(0).permutation(b))  # lambda = 1
    loss, logits = m.training_loss(trainer, torch.arange(5), x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y, reduction="none"))
    torch.testing.assert_close(logits, model(x))
    clean = Mixup(alpha=1.0, record="clean")
    clean.draw = m.draw
    assert clean.training_loss(trainer, torch.arange(5), x, y)[1] is None


def test_mixup_draws_are_seeded_and_vary() -> None:
    a, b = Mixup(alpha=1.0, record="clean"), Mixup(alpha=1.0, record="clean")
    for m in (a, b):
        m.on_train_start(SimpleNamespace(seed=7))
    da, db = [a.draw(8) for _ in range(3)], [b.draw(8) for _ in range(3)]
    assert [d[0] for d in da] == [d[0] for d in db]
    assert len({d[0] for d in da}) == 3 and all(0 <= d[0] <= 1 for d in da)


def _run(data, workdir: Path, method, **kw):
    images, labels = data
    return train_trajectories(
        images,
        labels,
        num_classes=10,
        train={**TRAIN, **kw.pop("train", {})},
        seed=3,
        workdir=workdir,
        device="cpu",
        method=method,
        **kw,
    )


def test_mixup_records_the_clean_or_the_mixed_batch(data, tmp_path: Path) -> None:
    clean = _run(data, tmp_path / "c", Mixup(alpha=1.0, record="clean"))
    mixed = _run(data, tmp_path / "m", Mixup(alpha=1.0, record="mixed"))
    # the same training (same draws), different recordings
    assert [e["train_loss"] for e in clean.metrics["epochs"]] == [
        e["train_loss"] for e in mixed.metrics["epochs"]
    ]
    assert np.isfinite(clean.loss).all() and np.isfinite(mixed.loss).all()
    assert not np.array_equal(clean.loss, mixed.loss)
    # a mixed input is harder to call than a clean one: its loss against y is higher on average
    assert mixed.loss[:, -1].mean() > clean.loss[:, -1].mean()


def test_mixup_resumes_bit_for_bit(data, tmp_path: Path) -> None:
    full = _run(data, tmp_path / "full", Mixup(alpha=0.4, record="clean"))
    with pytest.raises(_Interrupt):
        _run(data, tmp_path / "part", Mixup(alpha=0.4, record="clean"), stop_after_epoch=1)
    log: list[str] = []
    resumed = _run(data, tmp_path / "part", Mixup(alpha=0.4, record="clean"), log=log.append)
    assert any("resuming" in m for m in log)
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.correct, full.correct)


def test_a_changed_method_setting_does_not_resume(data, tmp_path: Path) -> None:
    with pytest.raises(_Interrupt):
        _run(data, tmp_path / "w", Mixup(alpha=0.4, record="clean"), stop_after_epoch=1)
    log: list[str] = []
    _run(data, tmp_path / "w", Mixup(alpha=2.0, record="clean"), log=log.append)
    assert any("discarding partial run" in m for m in log)
    assert not any("resuming" in m for m in log)


def test_clean_logits_leave_batchnorm_statistics_and_weights_alone(data, tmp_path: Path) -> None:
    from mapd.engine.augment import TensorSource
    from mapd.engine.trainer import Trainer, TrainSettings
    from mapd.models import build_model

    images, labels = data
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    src = TensorSource(images, labels, device=torch.device("cpu"))
    trainer = Trainer(model, src, settings=TrainSettings.from_config(TRAIN), workdir=tmp_path / "t")
    trainer.model.train()
    x, _y = src.batch(torch.arange(32), augment=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    logits = trainer.clean_logits(x)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.model.training  # still in training mode
    # the same as a training-mode forward (batch statistics), which would move the running stats
    ref = trainer.model(x)
    torch.testing.assert_close(logits, ref)
    assert not all(torch.equal(before[k], trainer.model.state_dict()[k]) for k in before)
