"""The paper's Fig. 6 numbers for the baselines (REFERENCE.md Sec. 2: test accuracy %, best
over training; Arazo's M-DYR-H from their table, end of training), drawn beside ours, and the
paper's statement about MAP-D at the highest noise."""

from __future__ import annotations

LEVELS = (0, 20, 50, 80, 90)

# data set (loader name) -> method (ours) -> accuracy % per level in LEVELS
FIG6: dict[str, dict[str, tuple[float, ...]]] = {
    "cifar10": {
        "reed_hard": (94.7, 86.8, 79.8, 63.3, 42.9),
        "forward": (94.7, 86.8, 79.8, 63.3, 42.9),
        "mixup": (95.3, 95.6, 87.1, 71.6, 52.2),
        "mdyr_h": (93.6, 94.0, 92.0, 86.8, 40.8),
    },
    "cifar100": {
        "reed_hard": (76.1, 62.1, 46.6, 19.9, 10.2),
        "forward": (75.4, 61.5, 46.6, 19.9, 10.2),
        "mixup": (74.8, 67.8, 57.3, 30.8, 14.6),
        "mdyr_h": (70.3, 68.7, 61.7, 48.2, 12.5),
    },
}
# the paper's names of those rows
PAPER_NAMES = {
    "reed_hard": "Reed et al.",
    "forward": "Patrini et al.",
    "mixup": "Mixup",
    "mdyr_h": "Arazo et al. M-DYR-H",
}
# at the highest noise (90 %): MAP-D vs Arazo, as the paper states (approximate)
HIGHEST_NOISE = {
    "cifar10": {"mapd": 59.0, "mdyr_h": 47.0},
    "cifar100": {"mapd": 16.5, "mdyr_h": 6.5},
}


def paper_rows(loader: str) -> list[dict[str, object]]:
    """Long table of the paper's numbers for a data set's loader (empty for other data)."""
    rows: list[dict[str, object]] = []
    for method, values in FIG6.get(loader, {}).items():
        for level, acc in zip(LEVELS, values, strict=True):
            rows.append(
                {"method": method, "paper_name": PAPER_NAMES[method], "level": level, "acc": acc}
            )
    for method, acc in HIGHEST_NOISE.get(loader, {}).items():
        rows.append(
            {"method": method, "paper_name": f"{method} (text, ~)", "level": 90, "acc": acc}
        )
    return rows
