"""Config loading: schema validation, defaults, per-data-set overrides, clear errors."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapd.config import dataset_settings, fingerprint, load_config, schema, validate_config
from mapd.errors import ConfigError

MINIMAL: dict[str, Any] = {"seeds": [0], "datasets": {"digits": {}}}


def _write(tmp_path: Path, cfg: dict[str, Any] | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (default MINIMAL) with ``value`` set at the '/'-separated ``path``."""
    cfg = copy.deepcopy(MINIMAL if base is None else base)
    node = cfg
    *parents, last = path.split("/")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


def test_repo_default_config_loads_and_fills_defaults(repo_root: Path) -> None:
    cfg = load_config(repo_root / "config" / "config.yaml")
    assert cfg["name"] == "default"
    assert cfg["seeds"] == [0, 1]
    assert cfg["device"] == "auto" and cfg["results"] == "results"
    d = cfg["defaults"]
    # values from the file
    assert d["train"]["epochs"] == 15 and d["train"]["lr"] == 0.05 and d["train"]["flip"] is False
    assert d["probes"]["train_size"] == 25 and d["probes"]["ood_blur_kernel"] == 3
    assert d["cscores"] == {
        "method": "learning_speed",
        "epochs": 15,
        "file": None,
        "ratios": [0.25, 0.5, 0.75],
        "runs_per_ratio": 2,
    }
    # values filled from the schema
    assert d["train"]["optimizer"] == "sgd" and d["train"]["momentum"] == 0.9
    assert d["train"]["record"] == "eval" and d["train"]["schedule"] == "cosine"
    assert d["probes"]["corrupted_std"] == 0.1 and d["probes"]["random_inputs"] == "uniform"
    assert d["assign"]["k"] == 20 and d["assign"]["use"] == "6-probe"
    assert cfg["report"] == {
        "title": "MAP-D audit",
        "gallery_per_category": 8,
        "plan": {"config": "config/paper.yaml", "gpus": 8},
    }
    s = dataset_settings(cfg, "digits")
    assert s["loader"] == "digits" and s["options"] == {} and s["subset"] is None
    assert s["train"]["epochs"] == 15


def test_minimal_config_gets_every_schema_default(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL))
    props = schema()["properties"]["defaults"]["properties"]
    for section in ("cscores", "probes", "train", "assign"):
        for key, prop in props[section]["properties"].items():
            assert cfg["defaults"][section][key] == prop["default"], f"{section}/{key}"
    assert cfg["defaults"]["probes"]["categories"] == [
        "typical",
        "atypical",
        "random_labels",
        "random_inputs",
        "corrupted",
        "ood",
    ]
    # validation does not modify its input
    raw = copy.deepcopy(MINIMAL)
    validate_config(raw)
    assert raw == MINIMAL


@pytest.mark.parametrize(
    ("path", "where", "key"),
    [
        ("colour", "(top level)", "colour"),
        ("defaults/train/epoch", "defaults/train", "epoch"),
        ("defaults/probes/train_sizes", "defaults/probes", "train_sizes"),
        ("datasets/digits/train/lrr", "datasets/digits/train", "lrr"),
        ("datasets/digits/root", "datasets/digits", "root"),
        ("report/titel", "report", "titel"),
    ],
)
def test_unknown_key_rejected_naming_its_path(
    tmp_path: Path, path: str, where: str, key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, _with(path, 1)))
    msg = str(err.value)
    assert f"at {where}:" in msg
    assert repr(key) in msg and "not allowed" in msg


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("defaults/train/epochs", -3, ["defaults/train/epochs", "-3", "minimum"]),
        ("datasets/digits/train/epochs", 0, ["datasets/digits/train/epochs", "0", "minimum"]),
        ("defaults/train/record", "sometimes", ["defaults/train/record", "'sometimes'", "eval"]),
        ("defaults/train/lr", 0, ["defaults/train/lr", "0"]),
        ("defaults/probes/categories", ["typical", "weird"], ["categories/1", "'weird'"]),
        ("defaults/probes/categories", ["typical"], ["defaults/probes/categories", "short"]),
        ("defaults/cscores/method", "magic", ["defaults/cscores/method", "'magic'"]),
        ("datasets/digits/subset", 5, ["datasets/digits/subset", "5"]),
        ("seeds", [], ["seeds"]),
        ("device", "tpu", ["device", "'tpu'"]),
    ],
)
def test_bad_schema_values_rejected(
    tmp_path: Path, path: str, value: Any, words: list[str]
) -> None:
    with pytest.raises(ConfigError, match="invalid config at") as err:
        load_config(_write(tmp_path, _with(path, value)))
    for w in words:
        assert w in str(err.value)


def test_even_blur_kernel_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"datasets/digits/probes/ood_blur_kernel must be odd, got 4"
    ):
        load_config(_write(tmp_path, _with("defaults/probes/ood_blur_kernel", 4)))
    # also when only one data set overrides it
    cfg = _with("datasets/cifar10/probes/ood_blur_kernel", 6)
    with pytest.raises(ConfigError, match=r"datasets/cifar10/probes/ood_blur_kernel must be odd"):
        validate_config(cfg)


def test_assign_use_must_be_a_setting(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"datasets/digits/assign/use: '8-probe' is not one of"
    ) as e:
        load_config(_write(tmp_path, _with("defaults/assign/use", "8-probe")))
    assert "4-probe" in str(e.value) and "6-probe" in str(e.value)
    # the used setting must only name categories that are built
    cfg = _with("defaults/probes/categories", ["typical", "atypical", "corrupted", "random_labels"])
    with pytest.raises(ConfigError, match=r"\['ood', 'random_inputs'\] are not built"):
        validate_config(cfg)
    cfg["defaults"]["assign"] = {"use": "4-probe"}
    assert validate_config(cfg)["defaults"]["assign"]["use"] == "4-probe"


def test_cscores_method_file_needs_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"datasets/digits/cscores: method 'file' needs cscores/file"
    ):
        load_config(_write(tmp_path, _with("defaults/cscores/method", "file")))
    cfg = _with("datasets/digits/cscores", {"method": "file", "file": "scores.npz"})
    assert dataset_settings(validate_config(cfg), "digits")["cscores"]["file"] == "scores.npz"


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "seeds: [0\ndatasets: {"))
    with pytest.raises(ConfigError, match="'datasets' is a required property"):
        load_config(_write(tmp_path, ""))
    with pytest.raises(ConfigError, match="top level"):
        validate_config(["seeds"])  # type: ignore[arg-type]


def test_per_dataset_overrides_deep_merge() -> None:
    cfg = validate_config(
        {
            "seeds": [0, 1],
            "defaults": {
                "train": {"epochs": 7, "lr": 0.2, "model_options": {"width": 16, "depth": 1}},
                "probes": {"train_size": 10},
            },
            "datasets": {
                "digits": {"train": {"lr": 0.01, "model_options": {"depth": 3}}},
                "cifar10": {
                    "loader": "cifar10",
                    "options": {"root": "/data", "reencoded_ok": True},
                    "subset": 500,
                    "probes": {"heldout_size": 3},
                    "assign": {"settings": {"two": ["typical", "atypical"]}, "use": "two"},
                },
            },
        }
    )
    d = dataset_settings(cfg, "digits")
    assert d["train"]["lr"] == 0.01  # overridden
    assert d["train"]["epochs"] == 7  # from defaults
    assert d["train"]["optimizer"] == "sgd"  # from the schema
    assert d["train"]["model_options"] == {"width": 16, "depth": 3}  # merged, not replaced
    assert d["probes"]["train_size"] == 10 and d["probes"]["heldout_size"] == 250
    c = dataset_settings(cfg, "cifar10")
    assert c["train"]["lr"] == 0.2 and c["train"]["model_options"] == {"width": 16, "depth": 1}
    assert c["probes"] == {**d["probes"], "heldout_size": 3}
    assert c["options"] == {"root": "/data", "reencoded_ok": True} and c["subset"] == 500
    # named settings are replaced as a whole (a setting list is not merged element-wise)
    assert c["assign"]["settings"] == {"two": ["typical", "atypical"]}
    assert d["assign"]["settings"].keys() == {"4-probe", "6-probe"}
    # the config itself is untouched by the merge
    assert cfg["defaults"]["train"]["lr"] == 0.2
    with pytest.raises(ConfigError, match="'mnist' is not in the config"):
        dataset_settings(cfg, "mnist")


def test_fingerprint_stable_and_sensitive() -> None:
    a = {"lr": 0.1, "epochs": 3}
    assert fingerprint(a) == fingerprint({"epochs": 3, "lr": 0.1})
    assert fingerprint(a) != fingerprint({"lr": 0.1, "epochs": 4})
    assert len(fingerprint(a)) == 16


def _config_files(repo_root: Path) -> list[Path]:
    return sorted(p for ext in ("*.yaml", "*.yml") for p in (repo_root / "config").rglob(ext))


def test_every_config_in_repo_validates(repo_root: Path) -> None:
    files = _config_files(repo_root)
    assert repo_root / "config" / "config.yaml" in files
    problems = []
    for path in files:
        try:
            cfg = load_config(path)
            for name in cfg["datasets"]:
                dataset_settings(cfg, name)
        except ConfigError as e:
            problems.append(f"{path.relative_to(repo_root)}: {e}")
    assert not problems, "\n".join(problems)


# --- the schema is the only place a default value is written -----------------------------------


def _schema_defaults(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Walk a schema node (``allOf`` + ``$ref`` + ``properties``) and collect its defaults."""
    out: dict[str, Any] = {}
    parts = [node, *node.get("allOf", [])]
    for part in parts:
        if "$ref" in part:
            ref = root
            for key in part["$ref"].lstrip("#/").split("/"):
                ref = ref[key]
            parts.append(ref)
            continue
        for key, prop in part.get("properties", {}).items():
            if "default" in prop and key not in out:
                out[key] = copy.deepcopy(prop["default"])
            if isinstance(out.get(key), dict):
                out[key] = {**_schema_defaults(prop, root), **out[key]}
    return out


@pytest.mark.parametrize("name", ["cscores", "probes", "train", "methods", "scores", "assign"])
def test_an_empty_section_gets_exactly_the_schema_defaults(name: str) -> None:
    from mapd.config import section

    sch = schema()
    expected = _schema_defaults(sch["properties"]["defaults"]["properties"][name], sch)
    assert expected, name
    assert section(name, {}) == expected
    assert validate_config(MINIMAL)["defaults"][name] == expected


def test_settings_objects_take_their_defaults_from_the_schema() -> None:
    from mapd.config import section
    from mapd.engine.stream import StreamSettings
    from mapd.engine.trainer import TrainSettings
    from mapd.methods import build_method

    train = section("train", {})
    ts = TrainSettings.from_config({})
    for field in TrainSettings.__dataclass_fields__:
        assert getattr(ts, field) == train[field], field
    ss = StreamSettings.from_config({"image_size": 32})
    assert (ss.crop_padding, ss.flip, ss.normalize) == (
        train["crop_padding"],
        train["flip"],
        train["normalize"],
    )
    assert (ss.workers, ss.stats_sample, ss.train_transform) == (
        train["workers"],
        train["stats_sample"],
        train["train_transform"],
    )
    assert list(ss.crop_scale) == train["crop_scale"]
    mixup = section("methods", {})["mixup"]
    assert build_method("mixup", mixup).settings == mixup == {"alpha": 1.0, "record": "clean"}


def test_no_code_default_for_a_config_setting(repo_root: Path) -> None:
    """`.get("<setting>", <default>)` on a settings section would be a second default."""
    sch = schema()
    keys = set()
    for sec in ("cscores", "probes", "train", "assign"):
        keys |= set(sch["definitions"][sec]["properties"])
    pattern = re.compile(r"\.get\(\s*[\"'](" + "|".join(sorted(keys)) + r")[\"']\s*,")
    hits = [
        f"{p.relative_to(repo_root)}:{i}"
        for p in (repo_root / "mapd").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []


def test_partial_sections_are_validated() -> None:
    from mapd.config import section

    with pytest.raises(ConfigError, match="train/record"):
        section("train", {"record": "sometimes"})
    with pytest.raises(ConfigError, match="unknown settings section"):
        section("nope", {})
    with pytest.raises(ConfigError, match="train/method"):
        validate_config(_with("defaults/train/method", "no_such_method"))


# --- everything checkable from the config and the data sizes is checked at the start ----------


def test_k_larger_than_the_training_probes_is_refused() -> None:
    cfg = _with("defaults/probes/train_size", 4)
    cfg = _with("defaults/assign/k", 20, cfg)
    with pytest.raises(ConfigError, match=r"assign/k: .* '4-probe' has only 4 categories x 4"):
        validate_config(cfg)
    cfg = _with("defaults/assign/k", 16, cfg)  # 4 x 4 = 16 fits both settings
    validate_config(cfg)


def test_a_data_set_without_a_loader_is_refused_at_validation() -> None:
    with pytest.raises(ConfigError, match=r"datasets/nope/\(its name\): unknown data set 'nope'"):
        validate_config({"seeds": [0], "datasets": {"nope": {}}})
    with pytest.raises(ConfigError, match=r"datasets/mine/loader: unknown data set 'imagefoldr'"):
        validate_config({"seeds": [0], "datasets": {"mine": {"loader": "imagefoldr"}}})


def test_probe_sizes_beyond_the_data_are_refused_before_any_job() -> None:
    from mapd.experiments import preflight

    small = _with("defaults/probes/train_size", 10, _with("datasets/digits/subset", 300))
    preflight(validate_config(_with("defaults/probes/heldout_size", 10, small)))  # 5 x 20 < 300
    big = _with("defaults/probes/train_size", 30, _with("datasets/digits/subset", 300))
    big = _with("defaults/probes/heldout_size", 30, big)
    with pytest.raises(ConfigError) as e:
        preflight(validate_config(big))
    msg = str(e.value)
    # random_inputs draws nothing from the data: 5 categories are counted, not 6
    assert "5 probe categories drawn from the data" in msg and "300 training examples" in msg
    assert "random_inputs" not in msg
    cifar = validate_config(
        {"seeds": [0], "datasets": {"cifar10": {"options": {"root": "nowhere"}}}}
    )
    preflight(cifar)  # official size (50,000) known without the files
