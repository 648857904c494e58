"""Training methods: :class:`~mapd.engine.method.Method` subclasses chosen by name.

A method's settings are its section of the config (``methods/<name>``, defaults in the schema).
The config's ``train/method`` picks the method of a data set's runs; experiment families build
theirs with :func:`build_method` from the same sections.

To add a method: subclass :class:`Method`, set ``name``, decorate with :func:`register_method`
and add its settings section under ``definitions/methods`` in the schema (or pass ``schema=``,
e.g. for a test's toy method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mapd.engine.method import Method
from mapd.errors import ConfigError

METHODS: dict[str, type[Method]] = {}


def register_method(
    cls: type[Method] | None = None, *, schema: dict[str, Any] | None = None
) -> Callable[[type[Method]], type[Method]] | type[Method]:
    """Class decorator: make ``cls`` selectable as ``train/method: <cls.name>``.

    ``schema`` (JSON schema of the settings, with defaults) is for methods that the schema file
    does not list; built-in methods have their section there.
    """

    def deco(c: type[Method]) -> type[Method]:
        if not issubclass(c, Method):
            raise TypeError(f"{c!r} is not a Method subclass")
        if c.name in METHODS and METHODS[c.name] is not c:
            raise ConfigError(f"a training method named {c.name!r} is already registered")
        if schema is not None:
            from mapd.config import register_schema

            register_schema("methods", c.name, schema)
        METHODS[c.name] = c
        return c

    return deco(cls) if cls is not None else deco


def build_method(name: str, settings: dict[str, Any] | None = None) -> Method:
    """The method ``name`` with its (validated) settings section ``methods/<name>``."""
    if name not in METHODS:
        raise ConfigError(f"unknown training method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name](**(settings or {}))


def method_for(settings: dict[str, Any]) -> Method:
    """The method of a data set's effective settings (``train/method`` and its section)."""
    name = settings["train"]["method"]
    return build_method(name, settings["methods"][name])


# the built-in methods register themselves on import
from mapd.methods import ce as _ce  # noqa: E402, F401
from mapd.methods import correction as _correction  # noqa: E402, F401
from mapd.methods import dynamic as _dynamic  # noqa: E402, F401
from mapd.methods import mixup as _mixup  # noqa: E402, F401
from mapd.methods import reed as _reed  # noqa: E402, F401
from mapd.methods import selection as _selection  # noqa: E402, F401
from mapd.methods import upweight as _upweight  # noqa: E402, F401

__all__ = ["METHODS", "Method", "build_method", "method_for", "register_method"]
