"""Empirical risk minimisation with cross-entropy: the engine's base method, by name."""

from __future__ import annotations

from mapd.engine.method import Method
from mapd.methods import register_method


@register_method
class ERM(Method):
    name = "erm"
