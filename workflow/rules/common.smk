# Helpers shared by the rules: the validated config, the results layout and the target lists.
import yaml
from pathlib import Path

from mapd.config import dataset_settings, fingerprint, validate_config

# Validated and default-filled with mapd's own schema (workflow/schemas/config.schema.yaml is the
# same file): unknown keys and bad values stop the workflow here with one clear message.
CFG = validate_config(config)
R = CFG["results"]
DATASETS = list(CFG["datasets"])
SEEDS = CFG["seeds"]

# The CLI steps read the resolved config from one file, so `--config key=value` overrides reach
# them too. It is rewritten only when its content changes; rules depend on the fingerprints of
# the settings they use (params), so a change re-runs exactly the affected steps.
CONFIG_FILE = Path(R) / "config.resolved.yaml"
_text = yaml.safe_dump(CFG, sort_keys=False)
if not CONFIG_FILE.exists() or CONFIG_FILE.read_text() != _text:
    CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
    CONFIG_FILE.write_text(_text)

REPORT = f"{R}/report/index.html"

# every step's Snakemake benchmark file, for the run-time table of the report (a fixed list,
# so that the report's params do not change between runs)
BENCHMARKS = sorted(
    [f"{R}/benchmarks/{step}/{d}.tsv" for step in ("data", "cscores", "figures") for d in DATASETS]
    + [f"{R}/benchmarks/{step}/{d}/seed{s}.tsv" for step in ("probes", "train", "assign")
       for d in DATASETS for s in SEEDS]
)

wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",


def settings(wildcards, section):
    """Fingerprint of one section of the data set's effective settings (a rerun trigger)."""
    s = dataset_settings(CFG, wildcards.dataset)
    return fingerprint({"section": section, "value": s[section], "loader": s["loader"],
                        "options": s["options"], "subset": s["subset"]})


def per_seed(pattern, dataset):
    return expand(pattern, r=R, dataset=dataset, seed=SEEDS)
