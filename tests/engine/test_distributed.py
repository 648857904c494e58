"""Data-parallel training: 2 CPU processes with gloo (torchrun) record the same (N, T)
trajectories as one process would (same shape, row i = example i), every example exactly once
per epoch, and a killed run resumes to the same files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mapd.data import load_dataset
from mapd.engine.run import predict_proba, train_trajectories

pytestmark = pytest.mark.slow

TRAIN = {
    "model": "small_cnn",
    "model_options": {"width": 8},
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.05,
    "crop_padding": 1,
    "flip": False,
    "processes": 2,
}
N = 400

# one rank of the job: the engine's own entry point inside torchrun's process group
RANK_SCRIPT = """
import json, sys
import numpy as np, torch
from mapd.data import load_dataset
from mapd.engine import distributed
from mapd.engine.method import Method
from mapd.engine.run import train_trajectories
from mapd.engine.trainer import _Interrupt

torch.set_num_threads(1)
runs, train = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ds = load_dataset("digits", "train")

class Count(Method):
    def on_epoch_end(self, trainer, epoch):  # how often each row was recorded this epoch
        counts.append(trainer.record_counts.tolist())

with distributed.process_group("cpu") as rank:
    assert rank is not None and rank.world == 2
    for workdir, out, stop in runs:  # each run starts from its files, as a new job would
        counts = []
        try:
            r = train_trajectories(
                ds.images[:{n}], ds.labels[:{n}], num_classes=10, train=train, seed=0,
                workdir=workdir, device="cpu", method=Count(), stop_after_epoch=stop or None,
            )
        except _Interrupt:  # killed after epoch `stop`: its checkpoint stays
            continue
        if rank.rank == 0:
            np.savez(out, loss=r.loss, correct=r.correct, margin=r.margin, pred=r.pred)
            torch.save(r.model.state_dict(), out + ".pt")
            json.dump(counts, open(out + ".counts.json", "w"))
""".replace("{n}", str(N))


def _ranks(tmp: Path, runs: list[tuple[Path, Path, int]], train: dict = TRAIN) -> None:
    """One torchrun job of 2 gloo processes doing ``runs`` (workdir, output, stop epoch)."""
    script = tmp / "rank.py"
    script.write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = json.dumps([[str(w), str(o), stop] for w, o, stop in runs])
    r = subprocess.run(
        [*cmd, str(script), jobs, json.dumps(train)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    whole, resumed = tmp / "whole.npz", tmp / "resumed.npz"
    # uninterrupted; killed after epoch 1 (no output yet); the same again: resumed
    _ranks(tmp, [(tmp / "a", whole, 0), (tmp / "b", resumed, 1), (tmp / "b", resumed, 0)])
    return {"tmp": tmp, "whole": dict(np.load(whole))}


def test_two_gloo_processes_record_what_one_process_records(ddp: dict) -> None:
    ds = load_dataset("digits", "train")
    torch.set_num_threads(1)
    one = train_trajectories(
        ds.images[:N],
        ds.labels[:N],
        num_classes=10,
        train={k: v for k, v in TRAIN.items() if k != "processes"},
        seed=0,
        workdir=ddp["tmp"] / "single",
        device="cpu",
    )
    two = ddp["whole"]
    for name in ("loss", "correct", "margin", "pred"):
        single = getattr(one, name)
        assert two[name].shape == single.shape == (N, TRAIN["epochs"])
        assert two[name].dtype == single.dtype
    assert np.isfinite(two["loss"]).all()
    labels = ds.labels[:N]
    # the same meaning per row: correct = (pred == label), the margin's sign agrees
    assert (two["correct"] == (two["pred"] == labels[:, None])).all()
    assert ((two["margin"] > 0) == two["correct"]).all()
    # row i is example i: the final model's loss on every example is the last column
    state = torch.load(ddp["tmp"] / "whole.npz.pt", weights_only=True)
    p = predict_proba(state, ds.images[:N], num_classes=10, train=TRAIN, device="cpu")
    own = -np.log(p[np.arange(N), labels])
    np.testing.assert_allclose(two["loss"][:, -1], own, rtol=1e-3, atol=1e-4)
    # and the two trainings learn alike (same global batch, averaged gradients)
    assert abs(two["correct"][:, -1].mean() - one.correct[:, -1].mean()) < 0.1


def test_every_example_recorded_exactly_once_per_epoch(ddp: dict) -> None:
    counts = json.loads((ddp["tmp"] / "whole.npz.counts.json").read_text())
    assert len(counts) == TRAIN["epochs"]
    for epoch in counts:
        assert len(epoch) == N and set(epoch) == {1}


def test_killed_data_parallel_run_resumes_to_the_same_files(ddp: dict) -> None:
    resumed = np.load(ddp["tmp"] / "resumed.npz")
    # it went on from its checkpoint: epochs 2 and 3 only were trained the second time
    counts = json.loads((ddp["tmp"] / "resumed.npz.counts.json").read_text())
    assert len(counts) == TRAIN["epochs"] - 1
    for name, whole in ddp["whole"].items():
        np.testing.assert_array_equal(resumed[name], whole)  # bit for bit on the CPU
