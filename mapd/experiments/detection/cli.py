"""``mapd det-*``: the detection experiment's steps on the command line (the rules call them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mapd.experiments.detection.grid import Cell


def _cell(args: argparse.Namespace) -> Cell:
    return Cell(args.dataset, args.source, args.seed)


def _job(args: argparse.Namespace) -> str:
    from mapd.paths import det_job

    job = det_job(args.dataset, args.source, args.seed)
    return job if getattr(args, "fold", None) is None else f"{job}/fold{args.fold}"


def _partial(args: argparse.Namespace, config: dict[str, Any]) -> str:
    from mapd.paths import Layout

    return args.partial or Layout.of(config).partial(args.out)


def cmd_suite(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.suite(config, _cell(args), args.cscores, args.out)


def cmd_train(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.main_run(config, _cell(args), args.suite, args.out, _partial(args, config))


def cmd_aum(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.aum_run(config, _cell(args), args.suite, args.out, _partial(args, config))


def cmd_fold(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.fold_run(config, _cell(args), args.fold, args.suite, args.out, _partial(args, config))


def cmd_scores(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.scores(config, _cell(args), args.suite, args.run, args.aum, args.folds or [], args.out)


def cmd_table(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.table(config, args.out)


def cmd_figures(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from mapd.experiments.detection import steps

    steps.figures(config, args.dataset, args.out)


def add_commands(add: Callable[..., argparse.ArgumentParser], ints: dict[str, Any]) -> None:
    """Add the subcommands with ``add(name, fn, help)`` (see mapd.cli)."""

    def cell(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
        sp.add_argument("--source", required=True, help="noise source id, e.g. symmetric20")
        sp.add_argument("--seed", type=ints["non_negative"], required=True, help="the seed")
        sp.set_defaults(job_of=_job)

    sp = add("det-suite", cmd_suite, "detection: the noisy training set of a cell, with probes")
    cell(sp)
    sp.add_argument("--cscores", help="C-score .npz (typical/atypical probes)")
    sp.add_argument("--out", required=True, help="output directory (a probe-suite folder)")

    for name, fn, what in (
        ("det-train", cmd_train, "the main run: recorded loss, correctness and margin curves"),
        ("det-aum", cmd_aum, "AUM's threshold run: N/(C+1) examples given a fake class"),
    ):
        sp = add(name, fn, f"detection: {what}")
        cell(sp)
        sp.add_argument("--suite", required=True, help="the cell's training set")
        sp.add_argument("--out", required=True, help="run directory")
        sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")

    sp = add("det-fold", cmd_fold, "detection: one fold of confident learning's K-fold training")
    cell(sp)
    sp.add_argument("--fold", type=ints["non_negative"], required=True, help="which fold")
    sp.add_argument("--suite", required=True, help="the cell's training set")
    sp.add_argument("--out", required=True, help="output directory (held-out rows, probs)")
    sp.add_argument("--partial", help="in-progress state (default: the layout's partial/)")

    sp = add("det-scores", cmd_scores, "detection: every detector's scores and metrics of a cell")
    cell(sp)
    sp.add_argument("--suite", required=True, help="the cell's training set")
    sp.add_argument("--run", required=True, help="the main run")
    sp.add_argument("--aum", help="AUM's threshold run (when aum is a detector)")
    sp.add_argument("--folds", nargs="*", help="the K fold outputs (confident learning)")
    sp.add_argument("--out", required=True, help="output directory (scores.parquet, metrics)")

    sp = add("det-table", cmd_table, "detection: the metrics of every cell and detector (CSV)")
    sp.add_argument("--out", required=True, help="output CSV")

    sp = add("det-figures", cmd_figures, "detection: ROC and precision-recall curves")
    sp.add_argument("--dataset", required=True, help="data set: a key under `datasets`")
    sp.add_argument("--out", required=True, help="output directory (the data set's figures)")
