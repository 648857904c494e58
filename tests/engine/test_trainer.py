"""The training engine: bitwise kill-and-resume (in process and across processes), recording
modes, discarding a changed run, Method hooks, and clear errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapd.data import load_dataset
from mapd.engine.method import Method
from mapd.engine.run import train_trajectories
from mapd.engine.trainer import Trainer, TrainResult, _Interrupt

# real digits with random crops and flips, so resuming must restore the augmentation stream too
TRAIN = {
    "model": "small_cnn",
    "model_options": {"width": 8},
    "epochs": 4,
    "batch_size": 16,
    "lr": 0.05,
    "crop_padding": 1,
    "flip": True,
    "amp": False,
    "record": "eval",
}
# without augmentation small_cnn fits these 8x8 digits quickly (train loss ~0.6 after 4 epochs)
PLAIN = {"crop_padding": 0, "flip": False, "lr": 0.1}
N = 160


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # tiny models: thread hand-offs cost more than they save, badly so on a busy machine; the
    # subprocess below uses one thread too, so its float sums are the same as in this process
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return ds.images[:N], ds.labels[:N]


def _run(data, workdir: Path, *, log: list[str] | None = None, **kw) -> TrainResult:
    images, labels = data
    train = {**TRAIN, **kw.pop("train", {})}
    return train_trajectories(
        images,
        labels,
        num_classes=10,
        train=train,
        seed=kw.pop("seed", 3),
        workdir=workdir,
        device="cpu",
        log=(log.append if log is not None else lambda _: None),
        **kw,
    )


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The uninterrupted run every resumed run must reproduce bit for bit."""
    return _run(data, tmp_path_factory.mktemp("reference"))


def _checkpoint_epoch(workdir: Path) -> int:
    return int(torch.load(workdir / "checkpoint.pt", weights_only=False)["epoch"])


def _assert_same_run(a: TrainResult, b: TrainResult) -> None:
    assert np.array_equal(a.loss, b.loss), "loss trajectories differ"
    assert np.array_equal(a.correct, b.correct), "correctness trajectories differ"
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"final weights differ in {k}"
    la = [m["train_loss"] for m in a.metrics["epochs"]]
    lb = [m["train_loss"] for m in b.metrics["epochs"]]
    assert la == lb


def test_reference_run_records_every_epoch(reference: TrainResult) -> None:
    assert reference.loss.shape == (N, 4) and reference.loss.dtype == np.float32
    assert reference.correct.shape == (N, 4) and reference.correct.dtype == np.bool_
    assert np.isfinite(reference.loss).all()
    # it learns (slowly: a 1-pixel shift and a flip are strong changes for 8x8 digits)
    assert reference.loss[:, -1].mean() < reference.loss[:, 0].mean() - 0.3
    assert reference.correct[:, -1].mean() > 0.2  # chance is 0.1
    m = reference.metrics
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3, 4]
    assert m["recording"] == "eval" and m["n"] == N and m["device"] == "cpu"


def test_kill_and_resume_in_process_is_bitwise_identical(data, reference, tmp_path: Path) -> None:
    work = tmp_path / "run.partial"
    with pytest.raises(_Interrupt):
        _run(data, work, stop_after_epoch=2)
    assert _checkpoint_epoch(work) == 2
    partial = np.load(work / "loss.npy")
    assert np.isfinite(partial[:, :2]).all() and np.isnan(partial[:, 2:]).all()
    np.testing.assert_array_equal(partial[:, :2], reference.loss[:, :2])
    log: list[str] = []
    resumed = _run(data, work, log=log)
    assert any(f"resuming from {work} after epoch 2/4" in line for line in log)
    assert sum(line.startswith("epoch ") for line in log) == 2  # only epochs 3 and 4 ran
    _assert_same_run(resumed, reference)
    # a finished workdir resumes at the end and trains nothing more
    log.clear()
    again = _run(data, work, log=log)
    assert not any(line.startswith("epoch ") for line in log)
    _assert_same_run(again, reference)


# A child process trains with a hook that stalls inside epoch 3 (after its trajectory column is
# written, before its checkpoint); the test SIGKILLs it there. ``name = "ce"`` keeps the
# settings signature of plain training, so a plain re-run resumes the killed run.
CHILD = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from mapd.engine.run import train_trajectories
from mapd.engine.method import Method

class StallInEpoch3(Method):
    name = "ce"
    def on_epoch_end(self, trainer, epoch):
        if epoch == 2:
            print("STALLED", flush=True)
            time.sleep(600)

d = np.load(sys.argv[1])
train_trajectories(d["images"], d["labels"], num_classes=10, train=json.loads(sys.argv[2]),
                   seed=3, workdir=sys.argv[3], device="cpu", method=StallInEpoch3(),
                   log=lambda m: print(m, flush=True))
"""


def test_kill_and_resume_in_a_new_process_is_bitwise_identical(
    data, reference, tmp_path: Path
) -> None:
    images, labels = data
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    work = tmp_path / "run.partial"
    out_path = tmp_path / "child.out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "data.npz"), json.dumps(TRAIN), str(work)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while "STALLED" not in out_path.read_text():
            assert proc.poll() is None, f"child exited early:\n{out_path.read_text()}"
            assert time.monotonic() < deadline, f"child never stalled:\n{out_path.read_text()}"
            time.sleep(0.05)
        assert "epoch 2/4" in out_path.read_text()
        assert _checkpoint_epoch(work) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "epoch 3/4" not in out_path.read_text()
    # epoch 3's column was written before the kill, but no checkpoint covers it
    killed = np.load(work / "loss.npy")
    assert np.isfinite(killed[:, :3]).all() and np.isnan(killed[:, 3]).all()
    log: list[str] = []
    resumed = _run(data, work, log=log)
    assert any("after epoch 2/4" in line for line in log)
    _assert_same_run(resumed, reference)


@pytest.mark.parametrize("channels_last", [True, False])
def test_recorded_losses_are_the_final_models_eval_losses(
    data, tmp_path: Path, channels_last: bool
) -> None:
    """The recording pass runs a BatchNorm-folded copy of the model: its last column must be
    the trained model's own eval-mode loss and correctness on the plain (normalised) images."""
    from mapd.engine.augment import channel_stats

    images, labels = data
    res = _run(data, tmp_path / "run", train={"channels_last": channels_last})
    mean, std = channel_stats(images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.from_numpy(mean).view(1, -1, 1, 1)) / torch.from_numpy(std).view(1, -1, 1, 1)
    model = res.model.eval()
    assert model.features[1].__class__.__name__ == "BatchNorm2d"  # the model itself unfolded
    with torch.no_grad():
        logits = model(x)
    loss = F.cross_entropy(logits, torch.from_numpy(labels), reduction="none").numpy()
    np.testing.assert_allclose(res.loss[:, -1], loss, rtol=1e-4, atol=1e-5)
    # correctness may differ only where two logits are within rounding of each other
    top2 = logits.topk(2, dim=1).values
    close = (top2[:, 0] - top2[:, 1]).numpy() < 1e-4
    agree = res.correct[:, -1] == (logits.argmax(1).numpy() == labels)
    assert (agree | close).all()


def test_record_modes(data, reference, tmp_path: Path) -> None:
    online = _run(data, tmp_path / "online", train={"record": "online"})
    assert online.loss.shape == (N, 4) and np.isfinite(online.loss).all()
    assert online.metrics["recording"] == "online"
    for row in online.metrics["epochs"]:  # the recording ops inside the pass count as recording
        assert row["record_s"] > 0 and row["train_s"] > 0
        assert row["train_s"] + row["record_s"] + row["test_s"] == pytest.approx(row["seconds"])
    assert not np.array_equal(online.loss, reference.loss)
    # same training, only the recording differs: the final weights are the reference's
    for k, v in online.model.state_dict().items():
        assert torch.equal(v, reference.model.state_dict()[k]), k
    # online losses come from the training forward pass, so they are close to the eval ones
    assert abs(online.loss[:, -1].mean() - reference.loss[:, -1].mean()) < 0.5
    none = _run(data, tmp_path / "none", train={"record": "none"})
    assert np.isnan(none.loss).all() and not none.correct.any()
    assert none.metrics["recording"] == "none"
    with pytest.raises(Exception, match="train/record"):
        _run(data, tmp_path / "bad", train={"record": "sometimes"})


def test_changed_settings_discard_the_partial_run(data, tmp_path: Path) -> None:
    work = tmp_path / "run.partial"
    with pytest.raises(_Interrupt):
        _run(data, work, stop_after_epoch=2)
    log: list[str] = []
    changed = _run(data, work, log=log, train={"lr": 0.02})
    assert any(f"discarding partial run in {work}: its settings differ" in m for m in log)
    assert not any("resuming" in m for m in log)
    fresh = _run(data, tmp_path / "fresh", train={"lr": 0.02})
    _assert_same_run(changed, fresh)
    # changed labels (a different probe suite) are a changed run too
    with pytest.raises(_Interrupt):
        _run(data, work, stop_after_epoch=2)
    images, labels = data
    log.clear()
    other = (images, (labels + 1) % 10)
    _run(other, work, log=log)
    assert any("discarding partial run" in m for m in log)


# --- Method hooks ------------------------------------------------------------------------------


class HalfBatch(Method):
    """Trains on the even positions of every batch and counts what reaches the loss."""

    name = "half"

    def __init__(self) -> None:
        super().__init__()
        self.chosen: list[torch.Tensor] = []
        self.trained: list[torch.Tensor] = []
        self.batch_sizes: list[int] = []

    def select(self, trainer, idx, x, y):
        self.batch_sizes.append(len(idx))
        keep = torch.arange(0, len(idx), 2)
        self.chosen.append(idx[keep].clone())
        return keep

    def training_loss(self, trainer, idx, x, y):
        self.trained.append(idx.clone())
        assert len(x) == len(y) == len(idx)
        return super().training_loss(trainer, idx, x, y)


def test_select_trains_only_the_chosen_examples(data, tmp_path: Path) -> None:
    m = HalfBatch()
    res = _run(data, tmp_path / "half", method=m)
    batches_per_epoch = math.ceil(N / TRAIN["batch_size"])
    assert len(m.batch_sizes) == len(m.trained) == 4 * batches_per_epoch
    assert sum(m.batch_sizes) == 4 * N
    assert sum(len(t) for t in m.trained) == 4 * N // 2
    for chosen, trained in zip(m.chosen, m.trained, strict=True):
        assert torch.equal(chosen, trained)
    assert np.isfinite(res.loss).all()  # eval recording still covers every row


def test_online_recording_with_selection(data, tmp_path: Path) -> None:
    m = HalfBatch()
    res = _run(data, tmp_path / "half-online", method=m, train={"record": "online"})
    assert np.isfinite(res.loss).all()
    # rows left out of an epoch keep their last value (loss and correctness alike)
    per_epoch = len(m.trained) // 4
    for e in range(1, 4):
        seen = torch.cat(m.trained[e * per_epoch : (e + 1) * per_epoch]).numpy()
        unseen = np.setdiff1d(np.arange(N), seen)
        assert len(unseen) > 0
        np.testing.assert_array_equal(res.loss[unseen, e], res.loss[unseen, e - 1])
        np.testing.assert_array_equal(res.correct[unseen, e], res.correct[unseen, e - 1])


class LabelSmoothing(Method):
    """Soft targets: (1 - eps) on the label plus eps spread uniformly over all classes."""

    name = "label_smoothing"
    eps = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def training_loss(self, trainer, idx, x, y):
        self.calls += 1
        logits = trainer.model(x)
        logp = F.log_softmax(logits.float(), dim=1)
        soft = torch.full_like(logp, self.eps / logp.shape[1])
        soft[torch.arange(len(y)), y] += 1 - self.eps
        return -(soft * logp).sum(1), logits


def test_replaced_training_loss_is_used(data, tmp_path: Path) -> None:
    m = LabelSmoothing()
    res = _run(data, tmp_path / "ls", method=m, train=PLAIN)
    erm = _run(data, tmp_path / "erm", train=PLAIN)
    assert m.calls == 4 * math.ceil(N / TRAIN["batch_size"])
    # the smoothed loss is >= eps * log(K) for any prediction; plain CE falls well below it
    bound = LabelSmoothing.eps * math.log(10)
    ls_losses = [e["train_loss"] for e in res.metrics["epochs"]]
    assert all(v >= bound for v in ls_losses), ls_losses
    assert erm.metrics["epochs"][-1]["train_loss"] < bound - 0.3
    assert not np.array_equal(res.loss, erm.loss)


class ZeroLoss(Method):
    name = "zero"

    def training_loss(self, trainer, idx, x, y):
        loss, logits = super().training_loss(trainer, idx, x, y)
        return loss * 0.0, logits


def test_zero_training_loss_leaves_weights_unchanged(data, tmp_path: Path) -> None:
    torch.manual_seed(3)  # train_trajectories initialises the model from this seed
    from mapd.models import build_model

    init = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    res = _run(data, tmp_path / "zero", method=ZeroLoss(), train={"weight_decay": 0.0})
    for name, p in res.model.named_parameters():
        assert torch.equal(p.detach(), dict(init.named_parameters())[name].detach()), name


class Watcher(Method):
    """Reads the curves so far at every epoch end and keeps a counter in its checkpointed state."""

    name = "watcher"

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.epochs_done = 0
        self.loaded: dict | None = None
        self.started = 0

    def on_train_start(self, trainer) -> None:
        self.started += 1

    def on_epoch_end(self, trainer, epoch) -> None:
        self.epochs_done += 1
        self.seen[epoch] = (trainer.history(), trainer.history(what="correct"))

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = dict(state)
        self.epochs_done = state["epochs_done"]


def test_history_and_method_state(data, tmp_path: Path) -> None:
    w = Watcher()
    res = _run(data, tmp_path / "watch", method=w)
    assert sorted(w.seen) == [0, 1, 2, 3]
    for e, (loss, correct) in w.seen.items():
        assert loss.shape == (N, e + 1) and loss.dtype == np.float32
        assert correct.shape == (N, e + 1) and correct.dtype == np.bool_
        np.testing.assert_array_equal(loss, res.loss[:, : e + 1])
        np.testing.assert_array_equal(correct, res.correct[:, : e + 1])
    # the method's state is checkpointed and handed back on resume
    work = tmp_path / "watch-resume"
    with pytest.raises(_Interrupt):
        _run(data, work, method=Watcher(), stop_after_epoch=3)
    w2 = Watcher()
    resumed = _run(data, work, method=w2)
    assert w2.loaded == {"epochs_done": 3}
    assert w2.epochs_done == 4 and sorted(w2.seen) == [3] and w2.started == 1
    np.testing.assert_array_equal(resumed.loss, res.loss)


def test_trainer_history_upto(data, tmp_path: Path) -> None:
    from mapd.engine.run import make_sources
    from mapd.engine.trainer import TrainSettings
    from mapd.models import build_model

    images, labels = data
    tr, _ = make_sources(images, labels, train=TRAIN, device=torch.device("cpu"))
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    settings = TrainSettings.from_config({**TRAIN, "epochs": 2})
    t = Trainer(model, tr, settings=settings, workdir=tmp_path / "t", log=lambda _: None)
    assert t.history().shape == (N, 0)
    t.fit()
    assert t.history().shape == (N, 2)
    assert t.history(upto=1).shape == (N, 1)
    assert t.history(upto=9).shape == (N, 2)


# --- errors ------------------------------------------------------------------------------------


def test_exploding_loss_is_a_clear_error(data, tmp_path: Path) -> None:
    from mapd.errors import DataError

    with pytest.raises(
        DataError, match=r"training loss became (nan|inf) at epoch 1, batch \d+; lower lr"
    ):
        _run(data, tmp_path / "explode", train={"lr": 1e30, "record": "none"})

    class NanLoss(Method):
        name = "nan"

        def training_loss(self, trainer, idx, x, y):
            loss, logits = super().training_loss(trainer, idx, x, y)
            return loss * float("nan"), logits

    with pytest.raises(DataError, match=r"training loss became nan at epoch 1, batch 0"):
        _run(data, tmp_path / "nan", method=NanLoss())


def _interrupted(data, work: Path, epochs: int = 2) -> None:
    with pytest.raises(_Interrupt):
        _run(data, work, stop_after_epoch=epochs)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _run(data, tmp_path_factory.mktemp("full") / "w")


def _restarts_cleanly(data, work: Path, full: TrainResult, reason: str) -> None:
    log: list[str] = []
    res = _run(data, work, log=log)
    said = [m for m in log if "discarding partial run" in m]
    assert len(said) == 1 and reason in said[0] and "starting at epoch 1" in said[0], log
    assert not any("resuming" in m for m in log)
    np.testing.assert_array_equal(res.loss, full.loss)
    np.testing.assert_array_equal(res.correct, full.correct)


def test_a_damaged_checkpoint_restarts_the_run_cleanly(data, tmp_path: Path, uninterrupted) -> None:
    work = tmp_path / "run.partial"
    _interrupted(data, work)
    ckpt = work / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # truncated, as by a full disk
    _restarts_cleanly(data, work, uninterrupted, "checkpoint.pt cannot be read as plain data")
    work = tmp_path / "again.partial"
    _interrupted(data, work)
    (work / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    _restarts_cleanly(data, work, uninterrupted, "checkpoint.pt cannot be read")


def test_a_truncated_partial_trajectory_is_never_zero_filled(
    data, tmp_path: Path, uninterrupted
) -> None:
    work = tmp_path / "run.partial"
    _interrupted(data, work)
    path = work / "loss.npy"
    path.write_bytes(path.read_bytes()[:1000])
    _restarts_cleanly(data, work, uninterrupted, "loss.npy is 1000 bytes")


def test_changed_bytes_in_completed_epochs_fail_the_checksum(
    data, tmp_path: Path, uninterrupted
) -> None:
    work = tmp_path / "run.partial"
    _interrupted(data, work)
    arr = np.load(work / "correct.npy", mmap_mode="r+")
    arr[5, 0] = not arr[5, 0]  # same size, one value of epoch 1 flipped
    arr.flush()
    del arr
    _restarts_cleanly(data, work, uninterrupted, "correct.npy does not match the checksum")


def test_a_crafted_checkpoint_runs_no_code(data, tmp_path: Path, uninterrupted) -> None:
    import pickle

    work = tmp_path / "run.partial"
    _interrupted(data, work)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = torch.load(work / "checkpoint.pt", weights_only=True)
    state["metrics"] = Payload()
    with open(work / "checkpoint.pt", "wb") as f:
        pickle.dump(state, f, protocol=2)  # torch.load reads plain pickles too
    _restarts_cleanly(data, work, uninterrupted, "checkpoint.pt cannot be read as plain data")
    assert not marker.exists()


def test_a_resume_at_another_thread_count_restarts(data, tmp_path: Path) -> None:
    work = tmp_path / "run.partial"
    torch.set_num_threads(2)
    try:
        _interrupted(data, work)
    finally:
        torch.set_num_threads(1)
    full = _run(data, tmp_path / "one-thread")
    _restarts_cleanly(data, work, full, "threads 2 -> 1")
    assert full.metrics["threads"] == 1


def test_eval_rows_are_recorded_by_an_eval_pass_under_online_recording(
    data, tmp_path: Path
) -> None:
    rows = np.array([3, 17, 40, 41, 99])
    online = _run(data, tmp_path / "o", train={"record": "online"}, eval_rows=rows)
    evaluated = _run(data, tmp_path / "e", train={"record": "eval"})
    plain = _run(data, tmp_path / "p", train={"record": "online"})
    # recording does not change training: the eval rows equal the eval pass's values...
    np.testing.assert_allclose(online.loss[rows], evaluated.loss[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(online.correct[rows], evaluated.correct[rows])
    # ...and the other rows keep the training forward's values
    others = np.setdiff1d(np.arange(N), rows)
    np.testing.assert_array_equal(online.loss[others], plain.loss[others])
    assert not np.allclose(plain.loss[rows], evaluated.loss[rows])


def test_recorded_margin_and_probabilities_match_the_model(data, tmp_path: Path) -> None:
    """The margin (logit of the label minus the largest other logit) comes from the same pass
    as the loss; the last epoch's equals the final model's, recomputed here."""
    from mapd.engine.run import make_sources

    images, labels = data
    res = _run(data, tmp_path / "m", train={"record": "eval", "record_probs": [2]})
    assert res.margin.shape == res.loss.shape and res.margin.dtype == np.float32
    src, _ = make_sources(
        images, labels, train={**TRAIN, "record": "eval"}, device=torch.device("cpu")
    )
    x, y = src.batch(torch.arange(N), augment=False)
    model = res.model.eval()
    with torch.no_grad():
        logits = model(x).float()
    given = logits[torch.arange(N), y]
    other = logits.clone()
    other[torch.arange(N), y] = -torch.inf
    expected = (given - other.max(1).values).numpy()
    np.testing.assert_allclose(res.margin[:, -1], expected, rtol=1e-4, atol=1e-4)
    assert ((res.margin[:, -1] > 0) == res.correct[:, -1]).all()  # positive margin = correct
    probs = res.arrays["probs_e2"]
    assert probs.shape == (N, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # the same pass: -log p(label) at epoch 2 is the recorded loss of epoch 2
    np.testing.assert_allclose(
        -np.log(probs[np.arange(N), labels]), res.loss[:, 1], rtol=1e-4, atol=1e-5
    )
