"""Experiment families: each is a package here (steps, figures, report section) plus one rule
file ``workflow/rules/<name>.smk``, switched on by its config section's ``activate``.

A family's ``__init__`` defines ``FAMILY``, a :class:`Family`: what the shared machinery needs to
run it in one process, list its jobs (the report's run-time table), collect its headline numbers
(DVC metrics), write its report sections and declare its DVC outputs. :data:`FAMILIES` lists
them in report order. See docs/architecture.md for how to add one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Config = dict[str, Any]


@dataclass(frozen=True)
class Family:
    name: str  # its config section, rule file and metrics file
    title: str
    # (step, job) of every job of the family; the job names its log and timing file
    jobs: Callable[[Config], list[tuple[str, str]]]
    # the family's final outputs: what its report section and metrics read
    targets: Callable[[Config], list[str]]
    # every step of the family in this process, in dependency order (``mapd audit --config``)
    run: Callable[[Config], None]
    # headline numbers, written to the family's metrics file (DVC metrics)
    metrics: Callable[[Config], dict[str, Any]]
    # report sections (``{"heading", "text", "images", "tables"}``); scratch files go to the Path
    sections: Callable[[Config, Path], list[dict[str, Any]]]
    # checks that need more than the config (e.g. data sizes), run before any job starts
    preflight: Callable[[Config], None]
    # DVC: output folders/files the family writes, and its plots (path -> plot options)
    dvc_outs: Callable[[Config], list[str]]
    dvc_plots: Callable[[Config], dict[str, dict[str, Any]]]


def lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call: a family's ``FAMILY`` loads without its
    steps' imports (torch, pandas), which the Snakefile and the CLI's start-up never need."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    return call


# name -> package, in report order
FAMILIES: dict[str, str] = {
    "audit": "mapd.experiments.audit",
    "noise": "mapd.experiments.noise",
    "detection": "mapd.experiments.detection",
    "prioritized": "mapd.experiments.prioritized",
    "groups": "mapd.experiments.groups",
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown experiment family {name!r}; known: {list(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY


def preflight(config: Config) -> None:
    """Every active family's start-up checks: bad settings stop the workflow before any job."""
    for name in active(config):
        family(name).preflight(config)


def active(config: Config) -> list[str]:
    """The families a validated config switches on (``<family>/activate``), in report order."""
    return [name for name in FAMILIES if config[name]["activate"]]
