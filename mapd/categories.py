"""The probe categories (paper Sec. 2.2): the one list, with their plotting colour and name.

The config schema's list of allowed categories, the probe-suite builder, figures and reports all
read :data:`CATEGORIES` from here. Kept free of heavy imports: the Snakefile reads it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mapd.errors import ConfigError


@dataclass(frozen=True)
class Category:
    name: str
    title: str  # human-readable name in figures and reports
    color: str  # fixed colour, so a category looks the same in every figure
    from_data: bool  # inputs come from real training examples, which leave the data


_ALL = (
    Category("typical", "Typical", "#1b9e77", True),
    Category("atypical", "Atypical", "#7570b3", True),
    Category("random_labels", "Random labels", "#d95f02", True),
    Category("random_inputs", "Random inputs & labels", "#e7298a", False),
    Category("corrupted", "Corrupted", "#1f78b4", True),
    Category("ood", "Out-of-distribution", "#a6761d", True),
    Category("random_sample", "Random sample", "#666666", True),
)
BY_NAME: dict[str, Category] = {c.name: c for c in _ALL}
# the paper's order; figures and tables list categories in it
CATEGORIES: tuple[str, ...] = tuple(c.name for c in _ALL)
FROM_DATA: frozenset[str] = frozenset(c.name for c in _ALL if c.from_data)
_FALLBACK_COLORS = ("#e6ab02", "#66a61e", "#a6cee3", "#fb9a99", "#cab2d6", "#b15928")


def n_from_data(categories: Iterable[str]) -> int:
    """How many of ``categories`` draw their inputs from the training data."""
    return sum(c in FROM_DATA for c in categories)


def category_color(category: str) -> str:
    """The fixed colour of a category; unknown names get a stable colour from their hash."""
    if category in BY_NAME:
        return BY_NAME[category].color
    return _FALLBACK_COLORS[zlib.crc32(category.encode()) % len(_FALLBACK_COLORS)]


def category_name(category: str) -> str:
    """Human-readable name of a category (``random_labels`` -> ``Random labels``)."""
    if category in BY_NAME:
        return BY_NAME[category].title
    return category.replace("_", " ").capitalize()


def sort_categories(categories: Iterable[str]) -> list[str]:
    """Unique categories in the paper's order; unknown ones follow, alphabetically."""
    uniq = {str(c) for c in categories if str(c) != ""}
    known = [c for c in CATEGORIES if c in uniq]
    return known + sorted(uniq - set(known))


def check_probe_budget(categories: Sequence[str], *, per_cat: int, n: int, name: str) -> None:
    """Refuse probe sizes whose source examples (train + held-out, for every category that
    draws from the data) would take all ``n`` training examples of data set ``name``."""
    from_data = [c for c in categories if c in FROM_DATA]
    need = per_cat * len(from_data)
    if need >= n:
        raise ConfigError(
            f"{name}: {len(from_data)} probe categories drawn from the data "
            f"({', '.join(from_data)}) x {per_cat} probes (train_size + heldout_size) need "
            f"{need} source examples, but "
            f"{name} has only {n} training examples: lower probes/train_size and heldout_size"
        )
