"""The minority-group methods on the engine: held-out validation rows are recorded and never
trained on; upweighting changes the loss weights / the sampled rows exactly as configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapd.config import section
from mapd.engine.run import train_trajectories
from mapd.errors import ConfigError
from mapd.methods import build_method
from mapd.methods.upweight import HoldOut, Upweight, upsample_order

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {
    "model": "small_cnn",
    "model_options": {"width": 4},
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.05,
    "crop_padding": 0,
    "flip": False,
    "record": "eval",
    "normalize": False,  # the images' statistics would otherwise depend on the val rows
}


class _Spy(HoldOut):
    """HoldOut that remembers every row it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.trained: list[int] = []

    def training_loss(self, trainer, idx, x, y):
        self.trained += idx.tolist()
        return super().training_loss(trainer, idx, x, y)


def _fit(images: np.ndarray, labels: np.ndarray, val: np.ndarray, tmp: Path) -> tuple:
    method = _Spy().with_rows(len(labels), val)
    res = train_trajectories(
        images, labels, num_classes=2, train=TRAIN, seed=3, workdir=tmp, device="cpu", method=method
    )
    return res, method


def test_validation_rows_are_recorded_and_never_trained_on(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 70)
    val = np.arange(50, 70)
    res, spy = _fit(images, labels, val, tmp_path / "a")
    # every epoch trains on each training row once and on no validation row
    assert sorted(spy.trained) == sorted(list(range(50)) * TRAIN["epochs"])
    assert res.loss.shape == (70, 3) and np.isfinite(res.loss[val]).all()
    # other validation images and labels: the same weights (their gradient is zero and they
    # never enter a batch's BatchNorm statistics), other validation curves
    images2, labels2 = images.copy(), labels.copy()
    images2[val] = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels2[val] = 1 - labels2[val]
    res2, _ = _fit(images2, labels2, val, tmp_path / "b")
    for (name, a), b in zip(
        res.model.state_dict().items(), res2.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(res.loss[:50], res2.loss[:50])
    assert not np.array_equal(res.loss[val], res2.loss[val])


def test_a_batch_of_validation_rows_only_is_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 20)
    empty = []

    class _Count(_Spy):
        def select(self, trainer, idx, x, y):
            chosen = super().select(trainer, idx, x, y)
            empty.append(len(chosen) == 0)
            return chosen

    method = _Count().with_rows(20, np.arange(12, 20))
    # seed 10 draws two batches of 4 validation rows (and none with a lone training row,
    # which BatchNorm cannot train on)
    train = {**TRAIN, "batch_size": 4, "epochs": 2}
    train_trajectories(
        images,
        labels,
        num_classes=2,
        train=train,
        seed=10,
        workdir=tmp_path,
        device="cpu",
        method=method,
    )
    assert sum(empty) == 2
    assert sorted(method.trained) == sorted(list(range(12)) * 2)


class _Trainer:
    """What ``Upweight.training_loss`` needs of the engine's trainer."""

    def __init__(self, n: int) -> None:
        self.n, self.device = n, torch.device("cpu")
        torch.manual_seed(0)
        self.forward_model = torch.nn.Linear(3, 2)


def test_weight_mode_multiplies_the_detected_losses_by_lambda() -> None:
    m = build_method("upweight", section_methods("upweight", lambda_up=4, mode="weight"))
    m.with_rows(10, np.array([2, 5]))
    # by hand: 8 rows of weight 1 and 2 of weight 4 sum to 16; scaled to mean 1: x 10 / 16
    expected = np.full(10, 10 / 16)
    expected[[2, 5]] = 40 / 16
    np.testing.assert_allclose(m.weights(), expected)
    trainer = _Trainer(10)
    m.on_train_start(trainer)
    idx = torch.tensor([2, 3, 5])
    x, y = torch.randn(3, 3), torch.tensor([0, 1, 1])
    loss, logits = m.training_loss(trainer, idx, x, y)
    plain = F.cross_entropy(trainer.forward_model(x), y, reduction="none")
    torch.testing.assert_close(loss, plain * torch.tensor([2.5, 0.625, 2.5]))
    assert logits.shape == (3, 2)


def test_upsample_mode_repeats_the_detected_rows_lambda_times() -> None:
    order = upsample_order(6, np.array([4, 1]), 3)
    assert np.bincount(order, minlength=6).tolist() == [1, 3, 1, 1, 3, 1]
    assert order[:6].tolist() == list(range(6))
    m = build_method("upweight", section_methods("upweight", lambda_up=3, mode="upsample"))
    m.with_rows(len(order), np.zeros(0, dtype=np.int64))
    np.testing.assert_array_equal(m.weights(), np.ones(len(order)))  # plain CE on the copies


def test_bad_upweight_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="integer lambda_up"):
        upsample_order(6, np.array([1]), 2.5)
    with pytest.raises(ConfigError, match="rows must lie"):
        Upweight(lambda_up=2, mode="weight").with_rows(4, np.array([4]))
    with pytest.raises(ConfigError, match="mode"):
        Upweight(lambda_up=2, mode="both")


def test_the_rows_are_in_the_resume_signature() -> None:
    a = HoldOut().with_rows(10, np.array([1, 2])).signature()
    b = HoldOut().with_rows(10, np.array([1, 3])).signature()
    assert a != b


def section_methods(name: str, **settings: object) -> dict:
    """The validated settings section ``methods/<name>`` (schema defaults filled)."""
    return section("methods", {name: settings})[name]
