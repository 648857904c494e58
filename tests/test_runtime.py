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
