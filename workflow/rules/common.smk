# Helpers shared by the rules: the validated config, the results layout (mapd.paths: every
# path comes from there), the settings each step depends on, and the mapd command.
import shlex
import sys

import yaml

from mapd.config import dataset_settings, fingerprint, section_fingerprint, validate_config
from mapd.experiments import active, family, preflight
from mapd.io import atomic_path
from mapd.paths import Layout, dataset_job, seed_job

# Validated and default-filled with mapd's own schema (workflow/schemas/config.schema.yaml is the
# same file): unknown keys and bad values stop the workflow here with one clear message.
CFG = validate_config(config)
preflight(CFG)  # checks that need data sizes (probes vs data): before any job, not hours later
L = Layout.of(CFG)
DATASETS = list(CFG["datasets"])
SEEDS = CFG["seeds"]
FAMILIES = active(CFG)
# what the report reads: the data summaries and every active family's final outputs
REPORT_INPUTS = [L.summary(d) for d in DATASETS] + [
    t for f in FAMILIES for t in family(f).targets(CFG)
]



class Unversioned:
    """A params value left out of Snakemake's params rerun trigger (it compares builtin values
    only). For the two below, whose change must not re-run finished jobs."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


# The resolved config the jobs read, named by its content: a run only ever reads the settings it
# was scheduled with, however many other invocations share the results folder. It is written
# when the run starts (onstart: not by a dry run, --lint, --unlock or a run refused by the lock)
# and never rewritten. A changed config re-runs only the steps whose settings fingerprints
# (the other params) changed.
_RESOLVED = yaml.safe_dump(CFG, sort_keys=False)
CONFIG_FILE = L.config(fingerprint(_RESOLVED))
CONFIG = Unversioned(CONFIG_FILE)

# the mapd of the interpreter running Snakemake (works without an activated venv)
MAPD = Unversioned(f"{shlex.quote(sys.executable)} -m mapd.cli")


onstart:
    if not os.path.exists(CONFIG_FILE):
        with atomic_path(CONFIG_FILE) as tmp:
            tmp.write_text(_RESOLVED)


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",


def settings(wildcards, section):
    """Fingerprint of one section of the data set's effective settings (a rerun trigger)."""
    return section_fingerprint(dataset_settings(CFG, wildcards.dataset), section)


def noise_suite_settings(wildcards):
    """What a noise cell's training set depends on (a rerun trigger): injection, probes, data."""
    n = CFG["noise"]
    return fingerprint(
        {"injection": n["injection"], "probes": n["probes"], "data": settings(wildcards, "probes")}
    )


def noise_train_settings(wildcards):
    """What a noise run depends on besides its method and training set (a rerun trigger)."""
    n = CFG["noise"]
    return fingerprint(
        {"record": n["record"], "train": n["train"], "data": settings(wildcards, "train")}
    )


def noise_method_settings(wildcards):
    """The settings section of a noise run's method (a rerun trigger)."""
    return fingerprint(dataset_settings(CFG, wildcards.dataset)["methods"][wildcards.method])


def noise_reference_option(wildcards, input):
    return f"--reference {shlex.quote(input.reference)}" if input.reference else ""


def noise_reference(wildcards):
    """forward/backward's input: the ce run of the same cell (its model gives the matrix)."""
    if wildcards.method not in ("forward", "backward"):
        return []
    return L.noise_run(wildcards.dataset, wildcards.level, "ce", 0, wildcards.seed)


def train_gpus(wildcards):
    """GPUs of one training job: one per data-parallel process (train/processes), none on CPU.
    The gpu profile counts them against the host's GPUs, the slurm profile requests them."""
    if CFG["device"] == "cpu":
        return 0
    return dataset_settings(CFG, wildcards.dataset)["train"]["processes"]


def per_seed(pattern_fn, dataset):
    """One path per seed of a data set, e.g. per_seed(L.run, "digits")."""
    return [pattern_fn(dataset, s) for s in SEEDS]


# detection (workflow/rules/detection.smk)
def det_cscores(wildcards):
    cats = CFG["detection"]["probes"]["categories"]
    return L.cscores(wildcards.dataset) if {"typical", "atypical"} & set(cats) else []


def det_cscores_option(wildcards, input):
    return f"--cscores {shlex.quote(input.cscores)}" if input.cscores else ""


def det_settings(wildcards):
    """What a detection run depends on (a rerun trigger): the experiment's section, the data."""
    d = CFG["detection"]
    return fingerprint(
        {"detection": {k: d[k] for k in ("sources", "probes", "train", "early_epoch", "folds")},
         "data": settings(wildcards, "train")}
    )


def det_cell(rule_input, wildcards):
    return L.det(rule_input, wildcards.dataset, wildcards.source, wildcards.seed)


# minority groups (workflow/rules/groups.smk)
def groups_settings(wildcards):
    """What the ERM run depends on (a rerun trigger): the experiment's train overrides, data."""
    return fingerprint({"train": CFG["groups"]["train"], "data": settings(wildcards, "train")})


def groups_score_settings(wildcards):
    """What the detectors depend on: JTT's T values, MAP-D's options and k."""
    s = dataset_settings(CFG, wildcards.dataset)
    return fingerprint(
        {
            "sweep": CFG["groups"]["jtt_sweep"],
            "scores": {n: s["scores"][n] for n in ("jtt", "mapd_minority")},
            "k": s["assign"]["k"],
        }
    )


def groups_upweight_settings(wildcards):
    return fingerprint(dataset_settings(CFG, wildcards.dataset)["methods"]["upweight"])


# prioritized training (workflow/rules/prioritized.smk)
def prio_data_settings(wildcards):
    """What a training pool depends on (a rerun trigger): splits, noise, probes, the data."""
    p = CFG["prioritized"]
    keys = ("splits", "validation", "noise", "probes")
    return fingerprint({"prio": {k: p[k] for k in keys}, "data": settings(wildcards, "probes")})


def prio_holdout_settings(wildcards):
    """What the irreducible-loss model depends on: its train overrides and the data's."""
    p = CFG["prioritized"]
    return fingerprint(
        {"train": p["train"], "holdout": p["holdout"], "data": settings(wildcards, "train")}
    )


def prio_train_settings(wildcards):
    """What a selecting run depends on besides its pool: train section, selection, k."""
    s = dataset_settings(CFG, wildcards.dataset)
    return fingerprint(
        {"train": CFG["prioritized"]["train"], "data": settings(wildcards, "train"),
         "select": s["methods"]["select"], "k": s["assign"]["k"]}
    )


def prio_holdout_input(wildcards):
    """RHO-Loss's input: the irreducible-loss model of the same data set and seed."""
    if not wildcards.scorer.startswith("rho_loss"):
        return []
    return L.prio("holdout", wildcards.dataset, wildcards.seed)
