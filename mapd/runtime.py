"""How a ``mapd`` step process behaves around its work: where its log goes, when it stops, and
which outputs it can write, checked before any long work starts."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from mapd.errors import MapdError

# lines that also reach the terminal when the full log goes to a file: progress and errors
_TERMINAL_PREFIXES = ("[mapd ", "mapd: ")
_PR_SET_PDEATHSIG = 1


class _Tee(io.TextIOBase):
    """Everything to the log file; progress and error lines also to the terminal, tagged with
    the job (``[mapd 12:00:01 train digits/seed0] epoch 3/15 ...``)."""

    def __init__(self, file: TextIO, terminal: TextIO, job: str) -> None:
        self.file, self.terminal, self.job = file, terminal, job
        self._line = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if line.startswith(_TERMINAL_PREFIXES):
                if self.job and line.startswith("[mapd ") and "]" in line:
                    head, rest = line.split("]", 1)
                    line = f"{head} {self.job}]{rest}"
                self.terminal.write(line + "\n")
                self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.file.flush()
        self.terminal.flush()


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None, *, job: str = "") -> Iterator[None]:
    """With ``path``, stderr goes to that file (appended, nothing lost) and its progress and
    error lines to the terminal as well; without, stderr is left alone."""
    if path is None:
        yield
        return
    path = Path(path)
    writable_dir(path.parent, what="log file")
    terminal = sys.stderr
    with open(path, "a", encoding="utf-8") as f:
        sys.stderr = _Tee(f, terminal, job)
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr = terminal


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "time"})


def _ppid_of(pid: int) -> int | None:
    """The parent of process ``pid`` (from /proc), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces


def _watch_launcher(shell: int, launcher: int, every: float) -> None:
    """SIGTERM this process once ``shell`` (its parent) is no longer the child of
    ``launcher``: the launcher died and the shell, still waiting for us, was re-parented."""
    import time

    while _ppid_of(shell) == launcher:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)


def exit_with_parent(*, every: float = 1.0) -> None:
    """Exit (SIGTERM) when the process that started this one dies, e.g. a workflow job's shell
    wrapper killed by the scheduler: an orphan must never finish and write outputs later.

    When the parent is a shell (Snakemake runs every job through one, and a shell does not exit
    when its own parent dies) the launcher above it is watched too, every ``every`` seconds, so
    a killed ``snakemake`` also stops its jobs. Linux only (prctl, /proc); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
        return
    try:
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:
        return
    launcher = _ppid_of(parent)
    if name in _SHELLS and launcher not in (None, 0, 1):
        import threading

        threading.Thread(
            target=_watch_launcher, args=(parent, launcher, every), daemon=True
        ).start()


def terminate_cleanly() -> None:
    """SIGTERM unwinds like Ctrl-C (SystemExit), so atomic writers remove their temporary
    files and no half-written output is left."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def writable_dir(folder: str | os.PathLike, *, what: str) -> None:
    """Create ``folder`` if needed and check that files can be written in it; one clear error
    otherwise (a path under a regular file, no permission, a read-only file system)."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise MapdError(f"cannot write the {what} under {folder}: {parent} is a file")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MapdError(f"cannot create the folder of the {what}, {folder}: {e.strerror}") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MapdError(f"cannot write the {what} in {folder}: permission denied")


def writable_output(path: str | os.PathLike, *, what: str = "output") -> None:
    """The output ``path`` (file or folder, written atomically beside itself) can be written."""
    path = Path(path)
    if path.exists() and path.is_dir() is False and what.endswith("folder"):
        raise MapdError(f"cannot write the {what} {path}: a file of that name exists")
    writable_dir(path.parent, what=what)
