"""GPU slots with a fake device count: competing processes never hold one device together, a
job waits for a free one, and a killed holder's device is free again."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from mapd.errors import ConfigError
from mapd.slots import acquire, pin_gpus

DEVICES = ["0", "1", "2"]


def _hold(folder: str, count: int, seconds: float, journal: str) -> None:
    """Take ``count`` slots, note the holding interval per device, release by exiting."""
    held = acquire(count, DEVICES, directory=Path(folder), poll=0.02)
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    with open(journal, "a") as f:
        for dev in held.devices:
            f.write(f"{dev} {start} {end} {os.getpid()}\n")


def test_competing_jobs_never_share_a_device(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    ctx = mp.get_context("fork")
    # 8 jobs on 3 devices, some needing 2 at once
    jobs = [
        ctx.Process(target=_hold, args=(str(tmp_path), 1 + i % 2, 0.15, str(journal)))
        for i in range(8)
    ]
    for p in jobs:
        p.start()
    for p in jobs:
        p.join(60)
        assert p.exitcode == 0
    rows = [line.split() for line in journal.read_text().splitlines()]
    assert len(rows) == sum(1 + i % 2 for i in range(8))
    for dev in DEVICES:
        spans = sorted((float(a), float(b)) for d, a, b, _ in rows if d == dev)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"device {dev} held by two jobs at once"
    # a 2-device job holds two different devices
    for pid in {r[3] for r in rows}:
        devs = [r[0] for r in rows if r[3] == pid]
        assert len(devs) == len(set(devs))


def _hold_forever(folder: str, ready: str) -> None:
    held = acquire(1, DEVICES[:1], directory=Path(folder))  # held while referenced
    Path(ready).touch()
    time.sleep(600)
    held.release()


def test_a_killed_holder_frees_its_device(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = mp.get_context("fork").Process(target=_hold_forever, args=(str(tmp_path), str(ready)))
    holder.start()
    deadline = time.time() + 30
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(TimeoutError):  # the only device is taken
        acquire(1, DEVICES[:1], directory=tmp_path, poll=0.02, timeout=0.3)
    os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
    holder.join(10)
    held = acquire(1, DEVICES[:1], directory=tmp_path, poll=0.02, timeout=5)
    assert held.devices == ["0"]
    held.release()


def test_pinning_exports_the_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAPD_GPU_SLOT_DIR", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")  # the host's (or SLURM's) devices
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    other = acquire(1, ["4"], directory=tmp_path)  # another job has device 4
    assert pin_gpus(2) == ["6", "7"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"
    other.release()
    with pytest.raises(ConfigError, match="needs 5 GPU"):
        acquire(5, DEVICES, directory=tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU here: the job runs without
    assert pin_gpus(1) == []
