"""The one list of probe categories: order, colours, names, and its use by the schema."""

from __future__ import annotations

from mapd.categories import (
    BY_NAME,
    CATEGORIES,
    FROM_DATA,
    category_color,
    category_name,
    n_from_data,
    sort_categories,
)
from mapd.config import schema


def test_category_order_and_colours_are_fixed() -> None:
    assert sort_categories(["ood", "zzz", "typical", "", "random_inputs"]) == [
        "typical",
        "random_inputs",
        "ood",
        "zzz",
    ]
    assert category_color("typical") != category_color("random_labels")
    assert category_color("my_probe") == category_color("my_probe")
    assert category_name("random_labels") == "Random labels"
    assert category_name("my_probe") == "My probe"


def test_every_category_has_a_distinct_colour_and_a_name() -> None:
    assert set(BY_NAME) == set(CATEGORIES)
    assert len({category_color(c) for c in CATEGORIES}) == len(CATEGORIES)
    assert all(category_name(c) != c for c in CATEGORIES)


def test_only_random_inputs_do_not_draw_from_the_data() -> None:
    assert set(CATEGORIES) - FROM_DATA == {"random_inputs"}
    assert n_from_data(["typical", "random_inputs", "ood"]) == 2


def test_the_schema_takes_its_category_names_from_here() -> None:
    enum = schema()["definitions"]["categories"]["items"]["enum"]
    assert enum == list(CATEGORIES)
