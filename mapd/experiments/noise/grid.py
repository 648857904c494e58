"""The label-noise experiment's grid: data set x noise level x method x warm-up x seed.

Each method runs at its own ``warmup`` setting (the Fig. 6 run); Fig. 7's methods also run at
the other ``noise/fig7/warmups``. Methods without a warm-up run once, at warm-up 0. Levels are
kept as whole percents in paths and tables (0.2 -> 20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapd.config import dataset_settings
from mapd.errors import ConfigError
from mapd.experiments.noisy_data import refuse_file_labels


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid."""

    dataset: str
    level: int  # percent of examples whose label is redrawn
    method: str
    warmup: int
    seed: int

    @property
    def rate(self) -> float:
        return self.level / 100.0


def percent(rate: float) -> int:
    return round(rate * 100)


def uses_warmup(method: str) -> bool:
    from mapd.methods import METHODS

    return bool(getattr(METHODS[method], "uses_warmup", False))


def datasets(config: dict[str, Any]) -> list[str]:
    return list(config["noise"]["datasets"] or config["datasets"])


def seeds(config: dict[str, Any]) -> list[int]:
    return list(config["noise"]["seeds"] or config["seeds"])


def levels(config: dict[str, Any]) -> list[int]:
    return [percent(r) for r in config["noise"]["levels"]]


def own_warmup(config: dict[str, Any], dataset: str, method: str) -> int:
    """The method's warm-up setting (its Fig. 6 run), 0 for methods without one."""
    if not uses_warmup(method):
        return 0
    return int(dataset_settings(config, dataset)["methods"][method]["warmup"])


def warmups(config: dict[str, Any], dataset: str, method: str) -> list[int]:
    """Every warm-up a method runs at: its own, plus Fig. 7's for Fig. 7's methods."""
    out = [own_warmup(config, dataset, method)]
    if method in config["noise"]["fig7"]["methods"] and uses_warmup(method):
        out += [w for w in config["noise"]["fig7"]["warmups"] if w not in out]
    return out


def methods(config: dict[str, Any]) -> list[str]:
    """The configured methods, plus ``ce`` when forward/backward need its model."""
    m = list(config["noise"]["methods"])
    if {"forward", "backward"} & set(m) and "ce" not in m:
        m.insert(0, "ce")
    return m


def cells(config: dict[str, Any]) -> list[Cell]:
    out = []
    for d in datasets(config):
        for level in levels(config):
            for m in methods(config):
                for w in warmups(config, d, m):
                    out += [Cell(d, level, m, w, s) for s in seeds(config)]
    return out


def suites(config: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(data set, level, seed) of every training set the grid needs."""
    return sorted({(c.dataset, c.level, c.seed) for c in cells(config)})


def reference(cell: Cell) -> Cell | None:
    """The run whose model estimates forward/backward's transition matrix: the ``ce`` run of
    the same data, noise and seed."""
    if cell.method in ("forward", "backward"):
        return Cell(cell.dataset, cell.level, "ce", 0, cell.seed)
    return None


def figures_of(config: dict[str, Any]) -> list[str]:
    """The figures this grid makes: Fig. 6 always; Fig. 7 when a Fig. 7 method runs at more
    than one warm-up; Fig. 11 when both MAP-D variants run."""
    out = ["fig6"]
    if any(len(warmups(config, d, m)) > 1 for d in datasets(config) for m in methods(config)):
        out.append("fig7")
    if {"mapd", "mapd_binary"} <= set(config["noise"]["methods"]):
        out.append("fig11")
    return out


def check(config: dict[str, Any]) -> None:
    """Settings that would only fail at a run: one clear message before any job starts."""
    n = config["noise"]
    if unknown := [d for d in datasets(config) if d not in config["datasets"]]:
        raise ConfigError(f"noise/datasets: {unknown} are not keys of datasets")
    refuse_file_labels(config, "noise", datasets(config))
    if unknown := [m for m in n["fig7"]["methods"] if m not in n["methods"]]:
        raise ConfigError(f"noise/fig7/methods: {unknown} are not in noise/methods")
    probes = n["probes"]
    for d in datasets(config):
        s = dataset_settings(config, d)
        epochs = {**s["train"], **n["train"]}["epochs"]
        for m in methods(config):
            for w in warmups(config, d, m):
                if w >= epochs:
                    raise ConfigError(
                        f"noise: {m} warms up for {w} epochs but {d} trains for {epochs}: "
                        "the warm-up must end before training does"
                    )
        if {"mapd", "mapd_binary"} & set(n["methods"]):
            k = s["assign"]["k"]
            if probes["size"] < 1:
                raise ConfigError(
                    "noise/probes/size: MAP-D needs its clean and noisy probes, got 0"
                )
            if 2 * probes["size"] < k:
                raise ConfigError(
                    f"noise/probes/size: MAP-D's k-NN needs k = {k} (assign/k) probes, got "
                    f"2 x {probes['size']}"
                )
