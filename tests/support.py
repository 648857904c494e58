"""Helpers shared by test modules in different folders (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path


def b64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def assert_self_contained(doc: str) -> None:
    low = doc.lower()
    for bad in ('src="http', 'href="http', "src='http", "<link", "@import", "url(", "//cdn"):
        assert bad not in low, bad
    # Every <img> is an embedded PNG, every href an in-page anchor.
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', doc))
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', doc))
    assert low.count("<script") == 1  # only the inline image check


class Payload:
    """Pickles to a call of ``os.system("touch <marker>")``: what a crafted file could run.
    Tests assert the marker never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
