"""The minority-group experiment's cells (data set x seed), its detectors and start-up checks."""

from __future__ import annotations

from typing import Any

from mapd.config import dataset_settings, section
from mapd.errors import ConfigError, DataError

# the attributes a data set must annotate its examples with
GROUP_ATTRS = ("group", "minority")


def datasets(config: dict[str, Any]) -> list[str]:
    return list(config["groups"]["datasets"] or config["datasets"])


def seeds(config: dict[str, Any]) -> list[int]:
    return list(config["groups"]["seeds"] or config["seeds"])


def detectors(config: dict[str, Any]) -> list[str]:
    """The detectors whose sets are upweighted in the second stage."""
    return list(config["groups"]["detectors"])


def train_settings(config: dict[str, Any], dataset: str, *, record: str) -> dict[str, Any]:
    """The data set's train section with the experiment's overrides; ``record`` eval for the
    ERM run (an eval pass records every row, validation included), none for the second stage."""
    train = {**dataset_settings(config, dataset)["train"], **config["groups"]["train"]}
    return section("train", {**train, "record": record, "record_probs": []})


def jtt_epoch(config: dict[str, Any], dataset: str) -> int:
    """JTT's T of the second stage (``scores/jtt/epoch``)."""
    return int(dataset_settings(config, dataset)["scores"]["jtt"]["epoch"])


def jtt_epochs(config: dict[str, Any], dataset: str) -> list[int]:
    """Every T whose error set is scored: the sweep and the second stage's, ascending."""
    return sorted({*config["groups"]["jtt_sweep"], jtt_epoch(config, dataset)})


def check(config: dict[str, Any]) -> None:
    """Settings that would only fail at a job: one clear message before any job starts."""
    if unknown := [n for n in datasets(config) if n not in config["datasets"]]:
        raise ConfigError(f"groups/datasets: {unknown} are not keys of datasets")
    for name in datasets(config):
        s = dataset_settings(config, name)
        if s["labels"]:
            raise ConfigError(f"groups: {name} trains on labels from a file; groups needs its own")
        epochs = train_settings(config, name, record="eval")["epochs"]
        if too_late := [t for t in jtt_epochs(config, name) if t > epochs]:
            raise ConfigError(
                f"groups: JTT's T {too_late} of {name} exceeds its {epochs} ERM epochs "
                "(scores/jtt/epoch, groups/jtt_sweep)"
            )
        up = s["methods"]["upweight"]
        if up["mode"] == "upsample" and int(up["lambda_up"]) != up["lambda_up"]:
            raise ConfigError(
                f"groups: {name}: methods/upweight/lambda_up {up['lambda_up']} must be an "
                "integer with mode upsample (each detected row repeated lambda_up times)"
            )


def check_weights(config: dict[str, Any], name: str) -> None:
    """The pretrained weights file of the data set's model exists (``ConfigError``)."""
    from pathlib import Path

    options = train_settings(config, name, record="eval")["model_options"]
    if options.get("weights_file") and not Path(options["weights_file"]).expanduser().is_file():
        raise ConfigError(
            f"groups: {name}: train/model_options/weights_file {options['weights_file']} does "
            "not exist: put torchvision's ResNet-50 IMAGENET1K_V2 file (resnet50-11ad3fa6.pth, "
            "https://download.pytorch.org/models/resnet50-11ad3fa6.pth) there"
        )


def check_data(config: dict[str, Any], name: str, *, absent_ok: bool = False) -> bool:
    """The data set has a validation split whose examples carry group annotations, and enough
    of them for MAP-D's k nearest curves (``DataError`` otherwise). With ``absent_ok`` (the
    start-up check) a data set whose files are not on this host passes (returns False): its
    data job says so, and a dry run still plans the grid."""
    from mapd.data import get_spec
    from mapd.pipeline import load_split

    s = dataset_settings(config, name)
    if not {"val", "test"} <= set(get_spec(s["loader"]).splits):
        raise DataError(f"groups: {name} has no val and test splits (it needs both)")
    try:
        val = load_split(config, name, "val")
    except DataError:
        if absent_ok:
            return False
        raise
    if missing := [a for a in GROUP_ATTRS if a not in val.attrs]:
        raise DataError(
            f"groups: {name} has no group annotations ({missing} missing from its attrs); "
            "use a data set with groups (waterbirds, celeba, spurious_digits, spurious_mnist)"
        )
    k = s["assign"]["k"]
    if "mapd_minority" in config["groups"]["detectors"] and len(val) < k:
        raise DataError(f"groups: {name}'s val split has {len(val)} examples, fewer than k = {k}")
    return True
