"""``mapd groups-*``: the minority-group experiment's steps on the command line (for the rules)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _job(args: argparse.Namespace) -> str:
    from mapd.paths import groups_retrain_job, seed_job

    if getattr(args, "detector", None) is not None:
        return groups_retrain_job(args.dataset, args.seed, args.detector)
    return seed_job(args.dataset, args.seed)


def _partial(args: argparse.Namespace, config: dict[str, Any]) -> str:
    from mapd.paths import Layout

    return args.partial or Layout.of(config).partial(args.out)


def cmd_erm(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.groups import steps

    steps.erm(config, args.dataset, args.seed, args.out, _partial(args, config))


def cmd_scores(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.groups import steps

    steps.scores(config, args.dataset, args.seed, args.erm, args.out)


def cmd_retrain(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.groups import steps

    part = _partial(args, config)
    steps.retrain(config, args.dataset, args.seed, args.detector, args.scores, args.out, part)


def cmd_tables(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.groups import steps

    steps.tables(config, args.detection, args.accuracy)


def cmd_figures(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.groups import steps

    steps.figures(config, args.dataset, args.out)


def add_commands(add: Callable[..., argparse.ArgumentParser], ints: dict[str, Any]) -> None:
    """Add the subcommands with ``add(name, fn, help)`` (see mapd.cli)."""

    def cell(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
        sp.add_argument("--seed", type=ints["non_negative"], required=True, help="the seed")
        sp.set_defaults(job_of=_job)

    sp = add("groups-erm", cmd_erm, "groups: ERM with train and (held-out) validation curves")
    cell(sp)
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")

    sp = add("groups-scores", cmd_scores, "groups: JTT's error sets and MAP-D's p(minority)")
    cell(sp)
    sp.add_argument("--erm", required=True, help="the ERM run")
    sp.add_argument("--out", required=True, help="output directory (scores.parquet, metrics)")

    sp = add("groups-retrain", cmd_retrain, "groups: second stage, a detected set upweighted")
    cell(sp)
    sp.add_argument("--detector", required=True, help="whose set: jtt or mapd_minority")
    sp.add_argument("--scores", required=True, help="the cell's scores")
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")

    sp = add("groups-tables", cmd_tables, "groups: detection and accuracy tables (CSV)")
    sp.add_argument("--detection", required=True, help="output CSV of the detection metrics")
    sp.add_argument("--accuracy", required=True, help="output CSV of the test accuracies")

    sp = add("groups-figures", cmd_figures, "groups: Fig. 9")
    sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
    sp.add_argument("--out", required=True, help="output directory (the data set's figures)")
