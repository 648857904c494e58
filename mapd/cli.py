"""``mapd``: one subcommand per pipeline step, each with explicit input and output paths."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mapd.errors import ConfigError, MapdError


def _config(args: argparse.Namespace) -> dict:
    from mapd.config import load_config

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if getattr(args, "device", None):
        cfg["device"] = args.device
    return cfg


def cmd_datasets(args: argparse.Namespace) -> None:
    from mapd.data import available, get_spec

    for name in available():
        spec = get_spec(name)
        print(
            f"{name:16s} {spec.description}\n{'':16s} splits: {', '.join(spec.splits)}; "
            f"source: {spec.source}"
        )


def cmd_data(args: argparse.Namespace) -> None:
    from mapd.pipeline import data_summary

    data_summary(_config(args), args.dataset, args.out)


def cmd_cscores(args: argparse.Namespace) -> None:
    from mapd.experiments.audit import steps

    steps.cscores(_config(args), args.dataset, args.out)


def cmd_probes(args: argparse.Namespace) -> None:
    from mapd.experiments.audit import steps

    steps.probes(_config(args), args.dataset, args.seed, args.cscores, args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from mapd.config import dataset_settings
    from mapd.engine import distributed
    from mapd.experiments.audit import steps
    from mapd.paths import Layout

    cfg = _config(args)
    partial = args.partial or Layout.of(cfg).partial(Layout.of(cfg).run(args.dataset, args.seed))
    processes = dataset_settings(cfg, args.dataset)["train"]["processes"]
    if processes > 1 and not distributed.launched():  # data parallel: this command P times
        distributed.launch(processes, args.argv, device=cfg["device"])
        return
    with distributed.process_group(cfg["device"]):
        steps.train(cfg, args.dataset, args.seed, args.probes, args.out, partial)


def cmd_assign(args: argparse.Namespace) -> None:
    from mapd.experiments.audit import steps

    steps.assign(_config(args), args.dataset, args.probes, args.run, args.out)


def cmd_figures(args: argparse.Namespace) -> None:
    from mapd.experiments.audit import steps

    steps.figures(args.probes, args.runs, args.assign, args.out)


def cmd_issues(args: argparse.Namespace) -> None:
    from mapd.experiments.audit.issues import issues

    issues(_config(args), args.dataset, args.probes, args.runs, args.assign, args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from mapd.experiments.report import report

    report(_config(args), args.config, args.out)


def cmd_dvc(args: argparse.Namespace) -> None:
    from mapd.config import load_config
    from mapd.experiments.report import dvc_yaml, write_dvc_yaml

    cfg = load_config(args.config)
    if args.out:
        write_dvc_yaml(cfg, config_file=args.config, out=args.out)
    else:
        print(dvc_yaml(cfg, config_file=args.config), end="")


def cmd_plan(args: argparse.Namespace) -> None:
    from mapd.config import load_config
    from mapd.plan import render

    measured = load_config(args.measured)
    gpus = args.gpus or measured["report"]["plan"]["gpus"]
    print(render(args.config, load_config(args.config), args.measured, measured, gpus))


def cmd_audit(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mapd.api import imagefolder_config, run_audit, write_config
    from mapd.config import load_config
    from mapd.runtime import writable_dir

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.epochs is not None and args.config:
        raise ConfigError("--epochs goes with --imagefolder; a config sets train/epochs")
    if (args.config is None) == (args.imagefolder is None):
        raise ConfigError("give either --config or --imagefolder")
    if args.config:
        cfg, cfg_path = load_config(args.config), Path(args.config)
        if args.out:
            cfg["results"] = args.out
    else:
        out = Path(args.out or "results/imagefolder")
        overrides = None if args.epochs is None else {"train": {"epochs": args.epochs}}
        cfg = imagefolder_config(args.imagefolder, out, seeds=args.seeds, overrides=overrides)
        cfg_path = out / "config.yaml"
        write_config(cfg, cfg_path)
    if args.device:
        cfg["device"] = args.device
    writable_dir(cfg["results"], what="results folder")
    report = run_audit(cfg, cfg_path)
    print(f"Report: {report.resolve()}")


def cmd_fetch(args: argparse.Namespace) -> None:
    from mapd.fetch import fetch

    for line in fetch(args.target, args.root):
        print(line)


def cmd_bench(args: argparse.Namespace) -> None:
    from mapd.bench import run_all

    run_all(out_dir=args.out, quick=args.quick, cifar10_root=args.cifar10_root)


def _whole_number(minimum: int):
    """argparse type: a whole number >= ``minimum``, refused in one line otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


positive_int = _whole_number(1)  # thread counts, epochs
non_negative_int = _whole_number(0)  # seeds


DATASET_HELP = "data set: a key under `datasets` in the config"
SEED_HELP = "seed of the probe suite and the training run"
DEVICE_HELP = "override the config's device (auto = CUDA when available)"
THREADS_HELP = "CPU threads for torch (default: all cores); part of a run's resume signature"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mapd", description="Metadata Archaeology via Probe Dynamics (MAP-D)"
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        help="append the full log to FILE; the terminal shows progress and errors only",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the launching process dies (workflow jobs: no orphan finishes later)",
    )
    p.add_argument(
        "--gpus",
        dest="gpu_slots",
        type=int,
        default=0,
        metavar="K",
        help="take K free GPUs of this host (a lock per device) and run on them only "
        "(CUDA_VISIBLE_DEVICES): jobs started side by side never share a GPU; 0 = no GPU",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help: str, *, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if config:
            sp.add_argument(
                "--config", required=True, help="YAML config (validated against the schema)"
            )
            sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
            sp.add_argument("--threads", type=positive_int, help=THREADS_HELP)
        return sp

    add("datasets", cmd_datasets, "list the registered data sets", config=False)

    sp = add(
        "data",
        cmd_data,
        "load and validate a data set; write its summary (counts per class/group/split)",
    )
    sp.add_argument("--dataset", required=True, help=DATASET_HELP)
    sp.add_argument("--out", required=True, help="summary JSON")

    sp = add("cscores", cmd_cscores, "C-scores of the training split: published file or estimate")
    sp.add_argument("--dataset", required=True, help=DATASET_HELP)
    sp.add_argument("--out", required=True, help=".npz with labels, scores, index, method")

    sp = add("probes", cmd_probes, "build the probe suite (audit set) of a data set")
    sp.add_argument("--dataset", required=True, help=DATASET_HELP)
    sp.add_argument("--seed", type=non_negative_int, required=True, help=SEED_HELP)
    sp.add_argument(
        "--cscores", help="C-score .npz from `mapd cscores` (needed for typical/atypical)"
    )
    sp.add_argument("--out", required=True, help="output directory")

    sp = add("train", cmd_train, "train on the audit set and record per-example learning curves")
    sp.add_argument("--dataset", required=True, help=DATASET_HELP)
    sp.add_argument("--seed", type=non_negative_int, required=True, help=SEED_HELP)
    sp.add_argument("--probes", required=True, help="probe-suite directory (`mapd probes`)")
    sp.add_argument(
        "--out", required=True, help="run directory (loss.npy, correct.npy, metrics.json, model.pt)"
    )
    sp.add_argument(
        "--partial",
        help="in-progress state (checkpoint), resumed when present "
        "(default: the results layout's partial/runs/<dataset>/seed<S>)",
    )

    sp = add("assign", cmd_assign, "k-NN metadata assignment and the held-out probe check")
    sp.add_argument("--dataset", required=True, help=DATASET_HELP)
    sp.add_argument("--probes", required=True, help="probe-suite directory (`mapd probes`)")
    sp.add_argument("--run", required=True, help="run directory (`mapd train`)")
    sp.add_argument(
        "--out", required=True, help="output directory (metadata.parquet/.csv, heldout.json)"
    )

    sp = add(
        "figures",
        cmd_figures,
        "Figs. 3 and 4 of one data set across seeds (PNG, SVG, CSV)",
        config=False,
    )
    sp.add_argument("--probes", nargs="+", required=True, help="probe-suite directory per seed")
    sp.add_argument("--runs", nargs="+", required=True, help="run directory per seed")
    sp.add_argument("--assign", nargs="+", required=True, help="assign directory per seed")
    sp.add_argument("--out", required=True, help="output directory")

    sp = add(
        "issues",
        cmd_issues,
        "label_issues.csv: every training example ranked by how likely its label is wrong",
    )
    sp.add_argument("--dataset", required=True, help=DATASET_HELP)
    sp.add_argument("--probes", nargs="+", required=True, help="probe-suite directory per seed")
    sp.add_argument("--runs", nargs="+", required=True, help="run directory per seed")
    sp.add_argument("--assign", nargs="+", required=True, help="assign directory per seed")
    sp.add_argument("--out", required=True, help="output directory (label_issues.csv/.parquet)")

    sp = add(
        "report",
        cmd_report,
        "the self-contained HTML report of every active experiment family, and their metrics",
    )
    sp.add_argument("--out", required=True, help="output HTML file")

    sp = add(
        "dvc",
        cmd_dvc,
        "write dvc.yaml for a config: its outputs, metrics and plots from the results layout",
        config=False,
    )
    sp.add_argument("--config", required=True, help="YAML config the DVC stage runs")
    sp.add_argument("--out", help="output file (default: print)")

    sp = add(
        "plan",
        cmd_plan,
        "expected GPU-hours and wall time of a config's grid, from a measured run's timings",
        config=False,
    )
    sp.add_argument("--config", required=True, help="the config to plan (e.g. config/paper.yaml)")
    sp.add_argument(
        "--measured",
        required=True,
        help="the config of a finished run whose timings/ and logs/ are the measurements",
    )
    sp.add_argument(
        "--gpus", type=positive_int, help="GPUs to plan the wall time for (default: report/plan)"
    )

    sp = add(
        "audit",
        cmd_audit,
        "the whole audit in one process: a config, or just an image folder",
        config=False,
    )
    sp.add_argument("--config", help="YAML config (all data sets and seeds in it)")
    sp.add_argument(
        "--imagefolder",
        help="ROOT/<class>/<image> tree (or ROOT/<split>/<class>/...) or a CSV manifest",
    )
    sp.add_argument("--out", help="results folder (default: the config's, or results/imagefolder)")
    sp.add_argument(
        "--seeds",
        type=non_negative_int,
        nargs="+",
        default=[0],
        help="seeds (with --imagefolder; default 0)",
    )
    sp.add_argument(
        "--epochs", type=positive_int, help="training epochs (with --imagefolder; default 20)"
    )
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    sp.add_argument("--threads", type=positive_int, help=THREADS_HELP)

    _add_family_commands(add)

    sp = add(
        "fetch",
        cmd_fetch,
        "download a data set or a published C-score file (hosts with internet)",
        config=False,
    )
    sp.add_argument("target", help="data-set name, or cscores:cifar10 / cscores:cifar100")
    sp.add_argument("--root", required=True, help="directory to put it in")

    sp = add(
        "bench",
        cmd_bench,
        "speed benchmarks of the engine and the k-NN -> OUT/*.json",
        config=False,
    )
    sp.add_argument(
        "--out", default="results/bench", help="output directory (default results/bench)"
    )
    sp.add_argument(
        "--quick", action="store_true", help="small sizes (smoke test), not the acceptance sizes"
    )
    sp.add_argument(
        "--cifar10-root", help="time on the real CIFAR-10 (cifar-10-batches-py under this root)"
    )
    return p


def _add_family_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Each experiment family's own subcommands (``mapd noise-train``, ...), which take the
    validated config as their second argument."""
    from mapd.experiments.detection import cli as detection_cli
    from mapd.experiments.groups import cli as groups_cli
    from mapd.experiments.noise import cli as noise_cli
    from mapd.experiments.prioritized import cli as prioritized_cli

    def add_with_config(name: str, fn, help: str) -> argparse.ArgumentParser:
        return add(name, lambda args: fn(args, _config(args)), help)

    ints = {"positive": positive_int, "non_negative": non_negative_int}
    noise_cli.add_commands(add_with_config, ints)
    detection_cli.add_commands(add_with_config, ints)
    prioritized_cli.add_commands(add_with_config, ints)
    groups_cli.add_commands(add_with_config, ints)


# outputs each subcommand writes, checked to be writable before any work
_OUTPUTS = {
    "data": ("out", "summary file"),
    "cscores": ("out", "C-score file"),
    "probes": ("out", "probe-suite folder"),
    "train": ("out", "run folder"),
    "assign": ("out", "assignment folder"),
    "figures": ("out", "figures folder"),
    "issues": ("out", "label-issues folder"),
    "report": ("out", "report file"),
    "noise-suite": ("out", "training-set folder"),
    "noise-train": ("out", "run folder"),
    "noise-table": ("out", "table file"),
    "noise-figures": ("out", "figures folder"),
    "det-suite": ("out", "training-set folder"),
    "det-train": ("out", "run folder"),
    "det-aum": ("out", "run folder"),
    "det-fold": ("out", "fold folder"),
    "det-scores": ("out", "scores folder"),
    "det-table": ("out", "table file"),
    "det-figures": ("out", "figures folder"),
    "prio-data": ("out", "training-pool folder"),
    "prio-holdout": ("out", "run folder"),
    "prio-train": ("out", "run folder"),
    "prio-table": ("out", "table file"),
    "prio-figures": ("out", "figures folder"),
    "groups-erm": ("out", "run folder"),
    "groups-scores": ("out", "scores folder"),
    "groups-retrain": ("out", "run folder"),
    "groups-tables": ("detection", "table file"),
    "groups-figures": ("out", "figures folder"),
}


def _job(args: argparse.Namespace) -> str:
    """``train digits/seed0``: what the terminal lines of this process are tagged with."""
    from mapd.paths import dataset_job, seed_job

    parts = [args.command]
    if getattr(args, "job_of", None):  # a family's subcommand names its own jobs
        return f"{args.command} {args.job_of(args)}"
    if getattr(args, "dataset", None):
        seed = getattr(args, "seed", None)
        parts.append(dataset_job(args.dataset) if seed is None else seed_job(args.dataset, seed))
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    from mapd.runtime import exit_with_parent, log_to, terminate_cleanly, writable_output

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start data-parallel ranks
    terminate_cleanly()
    if args.exit_with_parent:
        exit_with_parent()
    try:
        with log_to(args.log, job=_job(args)):
            try:
                if args.gpu_slots and "LOCAL_RANK" not in os.environ:  # before CUDA starts; ranks
                    # of a data-parallel job inherit their launcher's devices
                    from mapd.slots import pin_gpus

                    pin_gpus(args.gpu_slots, log=lambda m: print(m, file=sys.stderr, flush=True))
                if args.command in _OUTPUTS:
                    attr, what = _OUTPUTS[args.command]
                    writable_output(getattr(args, attr), what=what)
                args.fn(args)
            except MapdError as e:
                print(f"mapd: error: {e}", file=sys.stderr)
                return 2
            except OSError as e:  # a file system refusal found during the work
                where = f" {e.filename}" if e.filename else ""
                print(f"mapd: error: {e.strerror or e}:{where}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print("mapd: interrupted", file=sys.stderr)
                return 130
    except MapdError as e:  # the log file itself cannot be written
        print(f"mapd: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
