"""How a step process behaves: its log in a file and progress in the terminal, checked outputs,
folders with the usual permissions."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from mapd.errors import MapdError
from mapd.io import atomic_dir
from mapd.runtime import log_to, writable_dir, writable_output


def test_full_log_in_the_file_progress_and_errors_in_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    log = tmp_path / "logs" / "train.log"
    with log_to(log, job="train digits/seed0"):
        print("[mapd 10:00:00] epoch 1/3 loss 1.0", file=sys.stderr)
        print("a library warning, many lines\nof context", file=sys.stderr)
        sys.stderr.write("[mapd 10:00:01] epoch 2/3")
        sys.stderr.write(" loss 0.5\n")
        print("mapd: error: something named", file=sys.stderr)
    assert sys.stderr is terminal
    assert terminal.getvalue().splitlines() == [
        "[mapd 10:00:00 train digits/seed0] epoch 1/3 loss 1.0",
        "[mapd 10:00:01 train digits/seed0] epoch 2/3 loss 0.5",
        "mapd: error: something named",
    ]
    assert log.read_text().splitlines() == [
        "[mapd 10:00:00] epoch 1/3 loss 1.0",
        "a library warning, many lines",
        "of context",
        "[mapd 10:00:01] epoch 2/3 loss 0.5",
        "mapd: error: something named",
    ]
    with log_to(log):  # appended: a resumed job keeps the killed run's lines
        print("[mapd 11:00:00] again", file=sys.stderr)
    assert log.read_text().splitlines()[-1] == "[mapd 11:00:00] again"


def test_writable_checks(tmp_path: Path) -> None:
    writable_dir(tmp_path / "a" / "b", what="thing")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(MapdError, match=r"cannot write the run folder under .*f/x: .*f is a file"):
        writable_output(tmp_path / "f" / "x" / "run", what="run folder")


def test_output_folders_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(old)
    # mkdtemp makes 0700 folders; an output folder is as readable as its files
    assert oct((tmp_path / "out").stat().st_mode & 0o777) == oct(0o755)


def test_a_step_exits_when_the_launcher_above_its_shell_is_killed(tmp_path: Path) -> None:
    """Snakemake runs each job through a shell, which outlives a killed snakemake: the step
    watches the shell's parent too and stops (a SIGTERM, unwinding like Ctrl-C)."""
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child = (
        f"{sys.executable} -c 'import os, time; from mapd.runtime import exit_with_parent; "
        f'exit_with_parent(every=0.05); open("{pid_file}", "w").write(str(os.getpid())); '
        "time.sleep(120)'; echo finished"  # not the last command: the shell does not exec
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess; subprocess.run(['bash', '-c', {child!r}])"],
        start_new_session=True,
    )
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and launcher.poll() is None
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    proc = Path(f"/proc/{pid}")
    deadline = time.time() + 20
    while proc.exists() and "Z" not in (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]:
        assert time.time() < deadline, "the step kept running after snakemake was killed"
        time.sleep(0.05)
