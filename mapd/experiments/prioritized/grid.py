"""The prioritized-training grid: data set x scorer x seed, plus one irreducible-loss (holdout)
model per data set and seed when RHO-Loss is among the scorers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapd.config import dataset_settings
from mapd.errors import ConfigError
from mapd.experiments.noisy_data import refuse_file_labels

BALANCED = "_balanced"


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    scorer: str  # a score of methods/select, with _balanced for the class-balanced choice
    seed: int

    @property
    def score(self) -> str:
        return self.scorer.removesuffix(BALANCED)

    @property
    def balanced(self) -> bool:
        return self.scorer.endswith(BALANCED)


def datasets(config: dict[str, Any]) -> list[str]:
    return list(config["prioritized"]["datasets"] or config["datasets"])


def seeds(config: dict[str, Any]) -> list[int]:
    return list(config["prioritized"]["seeds"] or config["seeds"])


def scorers(config: dict[str, Any]) -> list[str]:
    return list(config["prioritized"]["scorers"])


def cells(config: dict[str, Any]) -> list[Cell]:
    return [
        Cell(d, sc, s) for d in datasets(config) for sc in scorers(config) for s in seeds(config)
    ]


def needs_holdout(config: dict[str, Any]) -> bool:
    return any(Cell("", sc, 0).score == "rho_loss" for sc in scorers(config))


def check(config: dict[str, Any]) -> None:
    """Settings that would only fail at a job: one clear message before any job starts."""
    p = config["prioritized"]
    if unknown := [n for n in datasets(config) if n not in config["datasets"]]:
        raise ConfigError(f"prioritized/datasets: {unknown} are not keys of datasets")
    if p["reference"] not in p["scorers"]:
        raise ConfigError(
            f"prioritized/reference: {p['reference']!r} is not one of prioritized/scorers"
        )
    if p["noise"]:
        refuse_file_labels(config, "prioritized", datasets(config))
    for d in datasets(config):
        s = dataset_settings(config, d)
        train = {**s["train"], **p["train"]}
        keep = s["methods"]["select"]["keep"]
        if keep > train["batch_size"]:
            raise ConfigError(
                f"prioritized ({d}): methods/select/keep = {keep} exceeds the large batch "
                f"(train/batch_size = {train['batch_size']})"
            )
        if any(Cell(d, sc, 0).score == "mapd" for sc in p["scorers"]):
            if s["assign"]["k"] > 2 * p["probes"]["size"]:
                raise ConfigError(
                    f"prioritized ({d}): assign/k = {s['assign']['k']} exceeds the "
                    f"{2 * p['probes']['size']} probes (prioritized/probes/size x 2)"
                )
