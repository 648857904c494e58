"""The detection experiment's cells: data set x noise source x seed (and K folds each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapd.config import MAPD_VARIANTS, dataset_settings
from mapd.errors import ConfigError
from mapd.experiments.noisy_data import refuse_file_labels, source_id

# MAP-D's k-NN against other probe sets: the probe categories and which of them are suspect
VARIANT_PROBES: dict[str, tuple[str, ...]] = {
    "mapd_paper": ("random_sample", "random_labels"),
    "mapd_audit4": ("typical", "atypical", "corrupted", "random_labels"),
    "mapd_audit6": ("typical", "atypical", "corrupted", "random_labels", "ood", "random_inputs"),
}
assert set(VARIANT_PROBES) == set(MAPD_VARIANTS)


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    source: str  # the noise source's id, e.g. symmetric20
    seed: int


def datasets(config: dict[str, Any]) -> list[str]:
    return list(config["detection"]["datasets"] or config["datasets"])


def seeds(config: dict[str, Any]) -> list[int]:
    return list(config["detection"]["seeds"] or config["seeds"])


def sources(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """id -> noise source, in the configured order."""
    return {source_id(s): s for s in config["detection"]["sources"]}


def cells(config: dict[str, Any]) -> list[Cell]:
    return [
        Cell(d, src, s) for d in datasets(config) for src in sources(config) for s in seeds(config)
    ]


def folds(config: dict[str, Any]) -> list[int]:
    return list(range(config["detection"]["folds"]))


def needs_folds(config: dict[str, Any]) -> bool:
    return "confident_learning" in config["detection"]["scores"]


def needs_aum_run(config: dict[str, Any]) -> bool:
    return "aum" in config["detection"]["scores"]


def early_epoch(config: dict[str, Any], dataset: str, epochs: int) -> int:
    """EL2N's epoch: the configured one, else a tenth of training (Paul et al.: 20 of 200)."""
    e = config["detection"]["early_epoch"]
    return min(epochs, e if e is not None else max(1, round(epochs / 10)))


def check(config: dict[str, Any]) -> None:
    """Settings that would only fail at a job: one clear message before any job starts."""
    d = config["detection"]
    if unknown := [n for n in datasets(config) if n not in config["datasets"]]:
        raise ConfigError(f"detection/datasets: {unknown} are not keys of datasets")
    refuse_file_labels(config, "detection", datasets(config))
    for s in d["sources"]:
        if s["kind"] == "file":
            if "path" not in s:
                raise ConfigError("detection/sources: a file source needs its path")
        elif "rate" not in s:
            raise ConfigError(f"detection/sources: a {s['kind']} source needs its rate")
    ids = [source_id(s) for s in d["sources"]]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"detection/sources: two sources have the same name ({ids})")
    cats = set(d["probes"]["categories"])
    for name in d["scores"]:
        need = set(VARIANT_PROBES.get(name, ()))
        opts = dataset_settings(config, datasets(config)[0])["scores"].get(name, {})
        if "suspect" in opts:  # a score read against reference probes
            need = set(opts["suspect"])
            if not (clean := opts.get("clean", ["random_sample"])) or not set(clean) & cats:
                need |= {" or ".join(clean)}  # at least one clean category
        if missing := need - cats:
            raise ConfigError(
                f"detection/scores: {name} needs the probe categories {sorted(missing)} "
                f"(detection/probes/categories is {sorted(cats)})"
            )
    for name in datasets(config):
        s = dataset_settings(config, name)
        if {"typical", "atypical"} & cats and s["cscores"]["method"] is None:
            raise ConfigError(f"datasets/{name}/cscores/method: typical/atypical probes need it")
