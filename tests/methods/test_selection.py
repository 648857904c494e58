"""Online batch selection (prioritized training): the choice of the kept examples, each score on
hand-made batches, the scoring forward's side effects, and a selecting run's kill-and-resume."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapd.config import section
from mapd.data import load_dataset
from mapd.engine.run import train_trajectories
from mapd.engine.trainer import Trainer, _Interrupt
from mapd.errors import ConfigError
from mapd.knn import knn_proba
from mapd.knn_small import knn_share_small
from mapd.methods import build_method
from mapd.methods.selection import SELECTION_SCORES, Select, choose, keep_of

pytestmark = pytest.mark.usefixtures("one_thread")

DEFAULTS = section("methods", {})["select"]


def _select(**kw) -> Select:
    return build_method("select", {**DEFAULTS, **kw})


# --- choose -------------------------------------------------------------------------------------
def test_choose_returns_exactly_keep_best_positions() -> None:
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.3, 0.7])
    chosen, short = choose(scores, torch.zeros(6, dtype=torch.long), keep=3)
    assert chosen.tolist() == [1, 3, 5]  # equal scores: the lower position first
    assert short == 0
    for keep in range(1, 7):
        assert len(choose(scores, torch.zeros(6, dtype=torch.long), keep=keep)[0]) == keep
    with pytest.raises(ValueError, match="keep = 7"):
        choose(scores, torch.zeros(6, dtype=torch.long), keep=7)


def test_balanced_choice_meets_the_minimum_whenever_the_candidates_allow() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        c, b, keep, m = 5, 40, 12, 2
        labels = torch.as_tensor(rng.integers(0, c, b))
        scores = torch.as_tensor(rng.random(b))
        chosen, short = choose(scores, labels, keep=keep, min_per_class=m, num_classes=c)
        assert len(chosen) == keep and len(set(chosen.tolist())) == keep, trial
        have = torch.bincount(labels, minlength=c)
        got = torch.bincount(labels[chosen], minlength=c)
        assert (got >= torch.clamp(have, max=m)).all(), trial
        assert short == int((have < m).sum())
        # the rest of the slots go to the best remaining scores
        forced = set()
        for k in range(c):
            pos = torch.nonzero(labels == k).flatten()
            forced |= set(pos[torch.argsort(-scores[pos], stable=True)][:m].tolist())
        rest = [p for p in torch.argsort(-scores, stable=True).tolist() if p not in forced]
        assert set(chosen.tolist()) == forced | set(rest[: keep - len(forced)])


def test_balanced_choice_says_when_a_class_cannot_meet_the_minimum() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.0, 0.1, 0.2])
    chosen, short = choose(scores, labels, keep=6, min_per_class=2, num_classes=3)
    # class 1 has one candidate: it falls short, its only one is kept, the slot goes to class 0
    assert short == 1
    assert chosen.tolist() == [0, 1, 6, 5, 4, 2]  # the forced ones in score order, then the rest


def test_keep_of_a_short_last_batch_keeps_the_same_share() -> None:
    assert keep_of(320, keep=32, large=320) == 32
    assert keep_of(100, keep=32, large=320) == 10
    assert keep_of(1, keep=32, large=320) == 1
    assert keep_of(5, keep=32, large=10) == 5


# --- scores -------------------------------------------------------------------------------------
class _BN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bn = torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x.flatten(1)))


def _trainer(model: torch.nn.Module, n: int = 12, batch_size: int = 6, history=None):
    """A stub trainer: in-memory rows x (n, 4), labels, and the engine's own scoring forward
    (:meth:`Trainer.clean_logits`)."""
    torch.manual_seed(0)
    xs, ys = torch.randn(n, 4), torch.arange(n) % 3
    src = SimpleNamespace(
        labels=ys, batch=lambda idx, augment=False, generator=None: (xs[idx], ys[idx])
    )
    hist = np.zeros((n, 0), np.float32) if history is None else history
    stub = SimpleNamespace(
        model=model, forward_model=model, _autocast=contextlib.nullcontext, train_src=src, n=n,
        device=torch.device("cpu"), s=SimpleNamespace(batch_size=batch_size),
        gen=torch.Generator().manual_seed(0), history=lambda: hist, log=lambda msg: None,
        metrics=[{}],
    )  # fmt: skip
    stub.clean_logits = lambda x: Trainer.clean_logits(stub, x)
    return stub, xs, ys


def test_the_scoring_forward_leaves_batchnorm_statistics_and_parameters_unchanged() -> None:
    model = _BN().train()
    trainer, xs, ys = _trainer(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for score in ("loss", "correct_class"):
        m = _select(score=score, keep=2)
        m.on_train_start(trainer)
        m.on_epoch_start(trainer, 0)
        idx = torch.arange(6)
        m.select(trainer, idx, xs[idx], ys[idx])
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert model.training  # still in training mode


def test_loss_and_correct_class_scores_by_hand_rank_alike() -> None:
    model = _BN().train()
    trainer, xs, ys = _trainer(model)
    idx = torch.arange(12)
    with torch.no_grad():
        p = torch.softmax(model(xs), 1)  # train-mode BN over the same 12 rows
    p_true = p[idx, ys]
    chosen = {}
    for score in ("loss", "correct_class"):
        m = _select(score=score, keep=4)
        m.on_train_start(trainer)
        c = m.candidates(trainer, idx, xs, ys)
        got = SELECTION_SCORES[score](c)
        want = -torch.log(p_true) if score == "loss" else 1 - p_true
        torch.testing.assert_close(got, want)
        chosen[score] = m.select(trainer, idx, xs, ys).tolist()
    assert chosen["loss"] == chosen["correct_class"]


def test_rho_loss_is_the_loss_minus_the_given_irreducible_loss() -> None:
    model = _BN().train()
    trainer, xs, ys = _trainer(model)
    irreducible = np.linspace(0.0, 2.0, 12).astype(np.float32)
    m = _select(score="rho_loss", keep=3)
    with pytest.raises(ConfigError, match="irreducible loss of all 12 rows"):
        m.on_train_start(trainer)
    m.set_irreducible(irreducible)
    m.on_train_start(trainer)
    idx = torch.tensor([3, 7, 11, 0])
    c = m.candidates(trainer, idx, xs[idx], ys[idx])
    with torch.no_grad():
        loss = F.cross_entropy(model(xs[idx]), ys[idx], reduction="none")
    torch.testing.assert_close(
        SELECTION_SCORES["rho_loss"](c), loss - torch.as_tensor(irreducible[[3, 7, 11, 0]])
    )
    # another irreducible array is another run: it is in the resume signature
    sig = m.signature()
    m.set_irreducible(irreducible + 1)
    assert m.signature() != sig


def test_mapd_score_equals_a_hand_computation() -> None:
    # rows 0-3 are probes: 0, 1 clean (low curves), 2, 3 random labels (high curves); one
    # completed epoch, then the current loss of the scoring forward is appended
    model = _BN().train()
    hist = np.array([[0.1], [0.2], [2.0], [2.2], [0.15], [2.1], [1.0], [0.3]], np.float32)
    trainer, xs, ys = _trainer(model, n=8, history=hist)
    m = _select(score="mapd", keep=2, k=3)
    m.set_probes(np.array([0, 1, 2, 3]), np.array([False, False, True, True]))
    m.on_train_start(trainer)
    m.on_epoch_start(trainer, 1)
    idx = torch.tensor([4, 5, 6, 7])
    c = m.candidates(trainer, idx, xs[idx], ys[idx])
    with torch.no_grad():
        probe_now = F.cross_entropy(model(xs[:4]), ys[:4], reduction="none")
        logits = model(xs[idx])
    loss_now = F.cross_entropy(logits, ys[idx], reduction="none")
    p_true = torch.softmax(logits, 1)[torch.arange(4), ys[idx]]
    refs = np.c_[hist[:4, 0], probe_now.numpy()]
    queries = np.c_[hist[4:, 0], loss_now.numpy()]
    p_clean = []
    for q in queries:
        d = ((refs - q) ** 2).sum(1)
        nearest = np.argsort(d, kind="stable")[:3]
        p_clean.append(np.isin(nearest, [0, 1]).mean())
    torch.testing.assert_close(c.p_clean, torch.tensor(p_clean, dtype=torch.float32))
    want = (torch.tensor(p_clean, dtype=torch.float32) + 1 - p_true) / 2
    torch.testing.assert_close(SELECTION_SCORES["mapd"](c), want)


def test_uniform_needs_no_forward_and_draws_from_the_trainer_stream() -> None:
    model = _BN().train()
    trainer, xs, ys = _trainer(model)
    m = _select(score="uniform", keep=3)
    m.on_train_start(trainer)
    c = m.candidates(trainer, torch.arange(6), xs[:6], ys[:6])
    assert c.loss is None and c.p_clean is None
    want = torch.rand(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(SELECTION_SCORES["uniform"](c), want)


def test_bad_selection_settings_stop_at_start() -> None:
    model = _BN()
    trainer, _, _ = _trainer(model, batch_size=6)
    with pytest.raises(ConfigError, match="unknown score 'nope'"):
        _select(score="nope")
    with pytest.raises(ConfigError, match="keep = 7 must be in"):
        _select(keep=7).on_train_start(trainer)
    with pytest.raises(ConfigError, match="3 classes x min_per_class 3 <= keep = 6"):
        _select(keep=6, balanced=True, min_per_class=3).on_train_start(trainer)
    with pytest.raises(ConfigError, match="needs probes"):
        _select(score="mapd", keep=2).on_train_start(trainer)
    with pytest.raises(ConfigError, match="k = 20 but only 4 probes"):
        _select(score="mapd").set_probes(np.arange(4), np.array([0, 0, 1, 1], bool))


# --- the small k-NN ------------------------------------------------------------------------------
def test_small_knn_equals_the_exact_knn() -> None:
    rng = np.random.default_rng(3)
    for t in (1, 2, 7):
        refs = rng.random((60, t)).astype(np.float32)
        labels = rng.integers(0, 2, 60)
        queries = rng.random((25, t)).astype(np.float32)
        want = knn_proba(queries, refs, labels, k=7, num_classes=2, device="cpu")
        got = knn_share_small(
            torch.as_tensor(queries), torch.as_tensor(refs), torch.as_tensor(labels), k=7,
            num_classes=2,
        )  # fmt: skip
        np.testing.assert_array_equal(got.numpy(), want)


# --- on the engine -------------------------------------------------------------------------------
def _run(workdir: Path, score: str, **kw):
    ds = load_dataset("digits")
    images, labels = ds.images[:300], ds.labels[:300].copy()
    labels[:20] = (labels[:20] + 3) % 10  # probes: rows 0-19 with wrong labels, 20-29 clean
    m = _select(score=score, keep=10, balanced=True, min_per_class=1, k=5)
    if score == "mapd":
        m.set_probes(np.arange(30), np.arange(30) < 20)
    if score == "rho_loss":
        m.set_irreducible(np.linspace(0, 1, 300))
    train = {
        "model": "small_cnn", "model_options": {"width": 8}, "epochs": 3, "batch_size": 40,
        "lr": 0.05, "crop_padding": 1, "flip": False, "record": "eval",
    }  # fmt: skip
    return train_trajectories(
        images, labels, num_classes=10, train=train, seed=1, workdir=workdir, device="cpu",
        method=m, test_images=ds.images[300:400], test_labels=ds.labels[300:400], **kw,
    )  # fmt: skip


@pytest.mark.parametrize("score", ["mapd", "uniform"])
def test_a_selecting_run_resumes_bit_for_bit(tmp_path: Path, score: str) -> None:
    full = _run(tmp_path / "full", score)
    with pytest.raises(_Interrupt):
        _run(tmp_path / "part", score, stop_after_epoch=1)
    resumed = _run(tmp_path / "part", score)
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.arrays["selected_count"], full.arrays["selected_count"])
    assert [e["test_acc"] for e in resumed.metrics["epochs"]] == [
        e["test_acc"] for e in full.metrics["epochs"]
    ]
    # 10 of every 40 (the last batch of 300 rows: 20 -> 5), 3 epochs
    assert full.arrays["selected_count"].sum() == 3 * (7 * 10 + 5)


def test_small_knn_breaks_exact_ties_by_the_lower_reference_index() -> None:
    # references at distances 0, 1, 1, 1, 2 from the query (duplicates of each other): k = 3
    # keeps 0 and the two lowest-index ones at distance 1 (as the exact k-NN does)
    refs = np.array([[0.0], [1.0], [1.0], [1.0], [2.0]], np.float32)
    labels = np.array([0, 1, 0, 1, 1])
    q = np.zeros((1, 1), np.float32)
    got = knn_share_small(
        torch.as_tensor(q), torch.as_tensor(refs), torch.as_tensor(labels), k=3, num_classes=2
    )
    np.testing.assert_array_equal(got.numpy(), [[2 / 3, 1 / 3]])
    np.testing.assert_array_equal(
        got.numpy(), knn_proba(q, refs, labels, k=3, num_classes=2, device="cpu")
    )


def test_mapd_on_completed_epochs_only_reads_no_current_loss() -> None:
    model = _BN().train()
    hist = np.array([[0.1], [0.2], [2.0], [2.2], [0.15], [2.1], [1.0], [0.3]], np.float32)
    trainer, xs, ys = _trainer(model, n=8, history=hist)
    m = _select(score="mapd", keep=2, k=3, trajectory="epochs")
    m.set_probes(np.array([0, 1, 2, 3]), np.array([False, False, True, True]))
    m.on_train_start(trainer)
    m.on_epoch_start(trainer, 1)
    idx = torch.tensor([4, 5, 6, 7])
    c = m.candidates(trainer, idx, xs[idx], ys[idx])
    # one column: 0.15, 1.0 and 0.3 have the two clean probes among their 3 nearest, 2.1 the
    # two noisy ones
    torch.testing.assert_close(c.p_clean, torch.tensor([2 / 3, 1 / 3, 2 / 3, 2 / 3]))
    empty = _trainer(model, n=8)[0]
    m.on_epoch_start(empty, 0)
    torch.testing.assert_close(
        m.candidates(empty, idx, xs[idx], ys[idx]).p_clean, torch.full((4,), 0.5)
    )
    with pytest.raises(ConfigError, match="trajectory must be current or epochs"):
        _select(trajectory="nope")
