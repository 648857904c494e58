"""``mapd prio-*``: the prioritized-training steps on the command line (the rules call them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mapd.experiments.prioritized.grid import Cell


def _partial(args: argparse.Namespace, config: dict[str, Any]) -> str:
    from mapd.paths import Layout

    return args.partial or Layout.of(config).partial(args.out)


def _seed_job(args: argparse.Namespace) -> str:
    from mapd.paths import seed_job

    return seed_job(args.dataset, args.seed)


def _run_job(args: argparse.Namespace) -> str:
    from mapd.paths import prio_run_job

    return prio_run_job(args.dataset, args.scorer, args.seed)


def cmd_data(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.prioritized import steps

    steps.data(config, args.dataset, args.seed, args.out)


def cmd_holdout(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.prioritized import steps

    steps.holdout(config, args.dataset, args.seed, args.data, args.out, _partial(args, config))


def cmd_train(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.prioritized import steps

    cell = Cell(args.dataset, args.scorer, args.seed)
    steps.train(config, cell, args.data, args.out, _partial(args, config), args.holdout)


def cmd_table(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.prioritized import steps

    steps.curves(config, args.curves)
    steps.table(config, args.curves, args.out)


def cmd_figures(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.prioritized import steps

    steps.figures(config, args.dataset, args.curves, args.table, args.out)


def add_commands(add: Callable[..., argparse.ArgumentParser], ints: dict[str, Any]) -> None:
    """Add the subcommands with ``add(name, fn, help)`` (see mapd.cli)."""

    def seeded(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
        sp.add_argument("--seed", type=ints["non_negative"], required=True, help="the seed")

    sp = add("prio-data", cmd_data, "prioritized: the noisy training pool, probes, holdout rows")
    seeded(sp)
    sp.set_defaults(job_of=_seed_job)
    sp.add_argument("--out", required=True, help="output directory (a probe-suite folder)")

    sp = add("prio-holdout", cmd_holdout, "prioritized: RHO-Loss's irreducible-loss model")
    seeded(sp)
    sp.set_defaults(job_of=_seed_job)
    sp.add_argument("--data", required=True, help="the pool (prio-data's output)")
    sp.add_argument("--out", required=True, help="run directory with irreducible_loss.npy")
    sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")

    sp = add("prio-train", cmd_train, "prioritized: one run selecting with one scorer")
    seeded(sp)
    sp.add_argument("--scorer", required=True, help="e.g. uniform, mapd_balanced, rho_loss")
    sp.set_defaults(job_of=_run_job)
    sp.add_argument("--data", required=True, help="the pool (prio-data's output)")
    sp.add_argument("--holdout", help="the irreducible-loss model (rho_loss)")
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")

    sp = add("prio-table", cmd_table, "prioritized: accuracy curves of every run, speed-ups")
    sp.add_argument("--curves", required=True, help="output CSV: accuracy per epoch of every run")
    sp.add_argument("--out", required=True, help="output CSV: one row per data set and scorer")

    sp = add("prio-figures", cmd_figures, "prioritized: Fig. 8 of a data set")
    sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
    sp.add_argument("--curves", required=True, help="the curves CSV")
    sp.add_argument("--table", required=True, help="the table CSV")
    sp.add_argument("--out", required=True, help="output directory (the data set's figures)")
