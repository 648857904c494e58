"""Device slots: one training job per GPU on a multi-GPU host.

A job that needs ``k`` GPUs takes ``k`` free slots of its host before torch initialises CUDA and
exports them as ``CUDA_VISIBLE_DEVICES``, so jobs started side by side (Snakemake's ``gpu``
profile runs as many as the host has GPUs) never share a device. A slot is an exclusive
``flock`` on ``<dir>/gpu<device>.lock``: the kernel releases it when its holder exits, however it
exits (``kill -9`` included), so a crashed job never keeps a device.

The devices are the host's visible GPUs: ``CUDA_VISIBLE_DEVICES`` when set (under SLURM the
job's allocation, so the pool is exactly what the scheduler gave) or else the ones
``nvidia-smi -L`` lists. Nothing here imports torch.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mapd.errors import ConfigError

# one folder per host (not per results folder): two workflows on one host share its GPUs
SLOT_DIR_ENV = "MAPD_GPU_SLOT_DIR"


def slot_dir() -> Path:
    return Path(os.environ.get(SLOT_DIR_ENV) or Path(tempfile.gettempdir()) / "mapd-gpu-slots")


def visible_devices() -> list[str]:
    """The device ids this process may use: ``CUDA_VISIBLE_DEVICES`` or nvidia-smi's list."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass
class Slots:
    """Held device slots; released by :meth:`release` or when the process exits."""

    devices: list[str]
    _files: list[IO[bytes]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for f in self._files:
            f.close()  # closing the descriptor drops its flock
        self._files.clear()


def _try_lock(path: Path) -> IO[bytes] | None:
    f = open(path, "ab")  # kept open: the descriptor is the lock
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def acquire(
    count: int,
    devices: list[str],
    *,
    directory: Path | None = None,
    poll: float = 1.0,
    timeout: float | None = None,
    log: object = None,
) -> Slots:
    """Take ``count`` free slots among ``devices``, waiting while they are held by others.

    All-or-nothing: slots taken while others are still busy are given back before waiting, so
    two jobs of two GPUs on a 3-GPU host cannot each hold one and wait forever.
    """
    if count > len(devices):
        raise ConfigError(
            f"a job needs {count} GPU(s) but this host has {len(devices)} visible "
            f"({', '.join(devices) or 'none'})"
        )
    folder = directory or slot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    said = False
    while True:
        held = Slots([])
        for dev in devices:
            f = _try_lock(folder / f"gpu{dev}.lock")
            if f is not None:
                held.devices.append(dev)
                held._files.append(f)
                if len(held.devices) == count:
                    return held
        held.release()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no {count} free GPU slot(s) in {folder} within {timeout} s")
        if not said and callable(log):
            log(f"waiting for {count} free GPU(s) of {', '.join(devices)} ({folder})")
            said = True
        time.sleep(poll)


_HELD: list[Slots] = []  # the process's slots, kept open until it exits


def pin_gpus(count: int, log: object = None) -> list[str]:
    """Take ``count`` GPU slots of this host and export them as ``CUDA_VISIBLE_DEVICES``.

    Must run before torch initialises CUDA (the CLI calls it before the step runs). ``count``
    0 does nothing (a CPU job), nor does a host without GPUs (``device: auto`` configs ask for
    GPUs wherever they run).
    """
    if count <= 0:
        return []
    if os.environ.get("SLURM_JOB_ID"):
        # the scheduler already gave this job its own devices (CUDA_VISIBLE_DEVICES); other
        # jobs on the node may see theirs under the same ids, so locks would collide
        return visible_devices()
    devices = visible_devices()
    if not devices:  # a host without GPUs: device auto runs on the CPU, cuda stops later
        return []
    held = acquire(count, devices, log=log)
    _HELD.append(held)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(held.devices)
    return held.devices
