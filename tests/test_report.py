"""The generic self-contained HTML report: embedding, escaping, tables, galleries, step times."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


# --------------------------------------------------------------------------------------------
# Building blocks
