"""Configuration: one YAML file, validated against ``mapd/schemas/config.schema.yaml``.

The schema is the single source of truth for settings and their defaults: the CLI, the Python
API and the Snakemake workflow all read a config through :func:`load_config`, and per-data-set
settings through :func:`dataset_settings` (``defaults`` deep-merged with the data set's entry).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mapd.errors import ConfigError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
# the per-data-set settings sections (``defaults``, overridable under ``datasets/<name>``)
SECTIONS = ("cscores", "probes", "train", "methods", "scores", "assign")


# MAP-D's k-NN against other probe sets, scored by the detection family beside registered scores
MAPD_VARIANTS = ("mapd_paper", "mapd_audit4", "mapd_audit6")

# settings sections that registries may extend at run time (a test's toy method or score)
_EXTRA: dict[str, dict[str, dict[str, Any]]] = {"methods": {}, "scores": {}}


@cache
def _schema_file() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def register_schema(kind: str, name: str, fragment: dict[str, Any]) -> None:
    """Add the settings section ``<kind>/<name>`` (JSON schema with defaults) to the schema.

    Used by :func:`mapd.methods.register_method` and :func:`mapd.scores.register_score` for
    methods and scores that the schema file does not list (e.g. a test's toy method).
    """
    if kind not in _EXTRA:
        raise ValueError(f"kind must be one of {sorted(_EXTRA)}, got {kind!r}")
    if name in _schema_file()["definitions"][kind]["properties"]:
        raise ConfigError(f"{kind}/{name} is already defined by the schema file")
    _EXTRA[kind][name] = copy.deepcopy(fragment)


def schema() -> dict[str, Any]:
    """The config schema: the YAML file plus the names that live in code.

    Added here: the probe categories (:data:`mapd.categories.CATEGORIES`) as the allowed
    category names, the method and score names (the sections of ``methods`` and ``scores``,
    including registered ones) as the allowed ``train/method`` and ``assign/scores`` values.
    """
    from mapd.categories import CATEGORIES

    sch = copy.deepcopy(_schema_file())
    defs = sch["definitions"]
    defs["categories"]["items"]["enum"] = list(CATEGORIES)
    for kind in ("methods", "scores"):
        props = defs[kind]["properties"]
        props.update(copy.deepcopy(_EXTRA[kind]))
        for sub in props.values():
            sub.setdefault("default", {})  # so that every section gets its defaults filled
    methods = list(defs["methods"]["properties"])
    defs["train"]["properties"]["method"]["enum"] = methods
    defs["assign"]["properties"]["scores"]["items"]["enum"] = list(defs["scores"]["properties"])
    noise = sch["properties"]["noise"]["properties"]
    noise["methods"]["items"]["enum"] = methods
    noise["fig7"]["properties"]["methods"]["items"]["enum"] = methods
    detection = sch["properties"]["detection"]["properties"]
    detection["scores"]["items"]["enum"] = [*defs["scores"]["properties"], *MAPD_VARIANTS]
    return sch


def _fill_defaults(node: Any, sch: dict[str, Any], root: dict[str, Any]) -> None:
    """Insert schema defaults into ``node`` (in place), recursing into object properties."""
    if "$ref" in sch:
        sch = _resolve(sch["$ref"], root)
    if not isinstance(node, dict):
        return
    for sub in sch.get("allOf", []):
        _fill_defaults(node, sub, root)
    for key, prop in sch.get("properties", {}).items():
        if key not in node and "default" in prop:
            node[key] = copy.deepcopy(prop["default"])
        if key in node:
            _fill_defaults(node[key], prop, root)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` against the schema and return a copy with defaults filled in."""
    if not isinstance(config, dict):
        raise ConfigError("config must be a mapping at the top level")
    cfg = copy.deepcopy(config)
    sch = schema()
    _fill_defaults(cfg, sch, sch)
    validator = jsonschema.Draft7Validator(sch)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"invalid config at {where}: {e.message}{more}")
    for name in cfg["datasets"]:
        _check_dataset(cfg, name)
    return cfg


def _check_dataset(cfg: dict[str, Any], name: str) -> None:
    from mapd.data import get_spec

    s = dataset_settings(cfg, name)
    try:
        get_spec(s["loader"])
    except ConfigError as e:
        where = "loader" if "loader" in (cfg["datasets"][name] or {}) else "(its name)"
        raise ConfigError(f"datasets/{name}/{where}: {e}") from e
    use = s["assign"]["use"]
    cats = set(s["probes"]["categories"])
    if use not in s["assign"]["settings"]:
        raise ConfigError(
            f"datasets/{name}/assign/use: {use!r} is not one of the settings "
            f"{sorted(s['assign']['settings'])}"
        )
    for setting, members in s["assign"]["settings"].items():
        missing = set(members) - cats
        if missing and setting == use:
            raise ConfigError(
                f"datasets/{name}/assign/settings/{setting}: categories {sorted(missing)} "
                "are not built "
                f"(probes/categories is {sorted(cats)})"
            )
    k, train_size = s["assign"]["k"], s["probes"]["train_size"]
    for setting, members in s["assign"]["settings"].items():
        if set(members) <= cats and k > train_size * len(members):
            raise ConfigError(
                f"datasets/{name}/assign/k: the k-NN needs k = {k} neighbours, but the setting "
                f"{setting!r} has only {len(members)} categories x {train_size} training probes "
                f"= {len(members) * train_size}: lower assign/k or raise probes/train_size"
            )
    issues = cfg["audit"]["label_issues"]["score"]
    if cfg["audit"]["activate"] and issues not in s["assign"]["scores"]:
        raise ConfigError(
            f"audit/label_issues/score: {issues!r} is not computed for {name} "
            f"(assign/scores is {s['assign']['scores']})"
        )
    if s["cscores"]["method"] == "file" and not s["cscores"]["file"]:
        raise ConfigError(f"datasets/{name}/cscores: method 'file' needs cscores/file")
    if {"typical", "atypical"} & cats and s["cscores"]["method"] is None:
        raise ConfigError(f"datasets/{name}/cscores/method must be set for typical/atypical probes")
    if s["probes"]["ood_blur_kernel"] % 2 == 0:
        raise ConfigError(
            f"datasets/{name}/probes/ood_blur_kernel must be odd, "
            f"got {s['probes']['ood_blur_kernel']}"
        )


def section(name: str, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``defaults`` section (e.g. ``train``) from a partial dict: validated, defaults filled.

    For API callers that give only some settings; the values come from the schema alone.
    """
    sch = schema()
    props = sch["properties"]["defaults"]["properties"]
    if name not in props:
        raise ConfigError(f"unknown settings section {name!r}; known: {sorted(props)}")
    node = copy.deepcopy(partial or {})
    sub = props[name]
    _fill_defaults(node, sub, sch)
    validator = jsonschema.Draft7Validator({**sub, "definitions": sch["definitions"]})
    errors = sorted(validator.iter_errors(node), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join([name, *(str(p) for p in e.absolute_path)])
        raise ConfigError(f"invalid settings at {where}: {e.message}")
    return node


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read, validate and default-fill a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {_yaml_problem(e)}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path} cannot be read: {e}") from e
    return validate_config(raw or {})


def _yaml_problem(e: yaml.YAMLError) -> str:
    """``line 3, column 7: mapping values are not allowed here``: the parser's error in one line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("settings",):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dataset_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The effective settings of data set ``name``: ``defaults`` overridden by its entry."""
    if name not in config["datasets"]:
        raise ConfigError(
            f"data set {name!r} is not in the config; it has {sorted(config['datasets'])}"
        )
    entry = config["datasets"][name] or {}
    merged = deep_merge(
        config["defaults"],
        {k: v for k, v in entry.items() if k in SECTIONS},
    )
    merged["loader"] = entry.get("loader", name)
    merged["options"] = copy.deepcopy(entry.get("options", {}))
    merged["subset"] = entry.get("subset")
    merged["test_subset"] = entry.get("test_subset")
    merged["labels"] = copy.deepcopy(entry.get("labels"))
    return merged


def section_fingerprint(settings: dict[str, Any], name: str) -> str:
    """Fingerprint of one section of a data set's effective settings, with what it depends on:
    the loader, its options and the subset (the data), and for ``train`` the chosen method's
    settings. The workflow re-runs a step when the fingerprint of its section changes."""
    value = settings[name]
    extra = {}
    if name == "train":
        extra["method"] = settings["methods"][value["method"]]
    return fingerprint(
        {
            "section": name,
            "value": value,
            **extra,
            "loader": settings["loader"],
            "options": settings["options"],
            "subset": settings["subset"],
            "test_subset": settings["test_subset"],
            "labels": settings["labels"],
        }
    )


def fingerprint(obj: Any) -> str:
    """Short stable hash of a JSON-able settings object (used to refuse resuming a changed run)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
