"""``mapd noise-*``: the label-noise steps on the command line (the rules call them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mapd.experiments.noise.grid import Cell

LEVEL_HELP = "noise level in percent (20 = 20 %% of the labels redrawn)"


def _cell(args: argparse.Namespace) -> Cell:
    return Cell(args.dataset, args.level, args.method, args.warmup, args.seed)


def cmd_suite(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.noise import steps

    steps.suite(config, args.dataset, args.level, args.seed, args.out)


def cmd_train(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.noise import steps
    from mapd.paths import Layout

    partial = args.partial or Layout.of(config).partial(args.out)
    steps.train(config, _cell(args), args.suite, args.out, partial, args.reference)


def cmd_table(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.noise import steps

    steps.table(config, args.out)


def cmd_figures(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.noise import steps

    steps.figures(config, args.dataset, args.table, args.out)


def _suite_job(args: argparse.Namespace) -> str:
    from mapd.paths import noise_suite_job

    return noise_suite_job(args.dataset, args.level, args.seed)


def _run_job(args: argparse.Namespace) -> str:
    from mapd.paths import noise_run_job

    return noise_run_job(args.dataset, args.level, args.method, args.warmup, args.seed)


def add_commands(add: Callable[..., argparse.ArgumentParser], ints: dict[str, Any]) -> None:
    """Add the subcommands with ``add(name, fn, help)`` (the main parser's factory, which adds
    --config, --device and --threads); ``ints`` holds its whole-number argument types."""
    sp = add("noise-suite", cmd_suite, "label noise: the noisy training set of a cell, with probes")
    sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
    sp.add_argument("--level", type=ints["non_negative"], required=True, help=LEVEL_HELP)
    sp.add_argument("--seed", type=ints["non_negative"], required=True, help="seed of the cell")
    sp.add_argument("--out", required=True, help="output directory (a probe-suite folder)")
    sp.set_defaults(job_of=_suite_job)

    sp = add("noise-train", cmd_train, "label noise: train one method on a cell's training set")
    sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
    sp.add_argument("--level", type=ints["non_negative"], required=True, help=LEVEL_HELP)
    sp.add_argument("--method", required=True, help="training method (a key of `methods`)")
    sp.add_argument(
        "--warmup", type=ints["non_negative"], required=True, help="warm-up epochs (0: none)"
    )
    sp.add_argument("--seed", type=ints["non_negative"], required=True, help="seed of the run")
    sp.add_argument("--suite", required=True, help="the cell's training set (`mapd noise-suite`)")
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")
    sp.add_argument("--reference", help="forward/backward: the ce run of the same cell (its model)")
    sp.set_defaults(job_of=_run_job)

    sp = add("noise-table", cmd_table, "label noise: best and last accuracy of every run (CSV)")
    sp.add_argument("--out", required=True, help="output CSV")

    sp = add("noise-figures", cmd_figures, "label noise: Figs. 6, 7 and 11 of one data set")
    sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
    sp.add_argument("--table", required=True, help="the table of runs (`mapd noise-table`)")
    sp.add_argument("--out", required=True, help="output directory (the data set's figures)")
