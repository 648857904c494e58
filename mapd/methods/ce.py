"""Cross-entropy on the given labels (ERM): the engine's base method, by name."""

from __future__ import annotations

from mapd.engine.method import Method
from mapd.methods import register_method


@register_method
class CrossEntropy(Method):
    name = "ce"
