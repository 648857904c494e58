"""``mapd``: one subcommand per pipeline step, each with explicit input and output paths."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mapd.errors import MapdError


def _config(args: argparse.Namespace) -> dict:
    from mapd.config import load_config

    cfg = load_config(args.config)
    if getattr(args, "device", None):
        cfg["device"] = args.device
    return cfg


def cmd_datasets(args: argparse.Namespace) -> None:
    from mapd.data import available, get_spec

    for name in available():
        spec = get_spec(name)
        print(f"{name:16s} {spec.description}\n{'':16s} splits: {', '.join(spec.splits)}; source: {spec.source}")


def cmd_data(args: argparse.Namespace) -> None:
    from mapd import steps

    steps.data_summary(_config(args), args.dataset, args.out)


def cmd_cscores(args: argparse.Namespace) -> None:
    from mapd import steps

    steps.cscores(_config(args), args.dataset, args.out)


def cmd_probes(args: argparse.Namespace) -> None:
    from mapd import steps

    steps.probes(_config(args), args.dataset, args.seed, args.cscores, args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from mapd import steps

    steps.train(_config(args), args.dataset, args.seed, args.probes, args.out)


def cmd_assign(args: argparse.Namespace) -> None:
    from mapd import steps

    steps.assign(_config(args), args.dataset, args.probes, args.run, args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mapd", description="Metadata Archaeology via Probe Dynamics (MAP-D)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help: str, *, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if config:
            sp.add_argument("--config", required=True, help="YAML config (validated against the schema)")
            sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
        return sp

    add("datasets", cmd_datasets, "list the registered data sets", config=False)

    sp = add("data", cmd_data, "load and validate a data set; write its summary (counts per class/group/split)")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--out", required=True, help="summary JSON")

    sp = add("cscores", cmd_cscores, "C-scores of the training split: published file or estimate")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--out", required=True, help=".npz with labels, scores, index, method")

    sp = add("probes", cmd_probes, "build the probe suite (audit set) of a data set")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--cscores", help="C-score .npz from `mapd cscores` (needed for typical/atypical)")
    sp.add_argument("--out", required=True, help="output directory")

    sp = add("train", cmd_train, "train on the audit set and record per-example learning curves")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--probes", required=True, help="probe-suite directory")
    sp.add_argument("--out", required=True, help="run directory (loss.npy, correct.npy, metrics.json, model.pt)")

    sp = add("assign", cmd_assign, "k-NN metadata assignment and the held-out probe check")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--probes", required=True)
    sp.add_argument("--run", required=True)
    sp.add_argument("--out", required=True, help="output directory (metadata.parquet/.csv, heldout.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except MapdError as e:
        print(f"mapd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mapd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
