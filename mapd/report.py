"""The generic writer of the self-contained HTML report, and its building blocks (tables, image
galleries, the step run-time table). Experiment families supply the sections.

The file works offline when opened from disk: images are embedded as base64 PNG data URIs,
the CSS is inline and the only script is a tiny inline check that every image decoded
(it sets ``data-images-ok`` on ``<body>``, which a headless browser test reads back).
All user-provided text is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mapd.errors import DataError
from mapd.io import atomic_path, load_table

PathLike = str | os.PathLike
TableLike = pd.DataFrame | str | os.PathLike

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0;color:#1d2330;background:#f6f7f9;line-height:1.45}
header{background:#1d2330;color:#fff;padding:1.2em 2em}
header h1{margin:0 0 .2em 0;font-size:1.6em}
header .meta{margin:0;color:#c9cfdb;font-size:.9em}
nav{background:#fff;border-bottom:1px solid #dde1e8;padding:.6em 2em;font-size:.92em}
nav a{margin-right:1.2em;color:#2456a6;text-decoration:none}
main{max-width:1400px;margin:0 auto;padding:1em 2em 3em}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:1.2em 0;
padding:.4em 1.4em 1.2em}
h2{border-bottom:2px solid #e4e7ee;padding-bottom:.3em}
figure{margin:1em 0;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid #e4e7ee;background:#fff}
figcaption{font-size:.85em;color:#5a6275}
table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:.88em}
th,td{border:1px solid #d5d9e2;padding:.25em .6em;text-align:right}
th{background:#eef1f6}
td:first-child,th:first-child,td.txt{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
pre{background:#f1f3f7;border:1px solid #dde1e8;padding:1em;overflow:auto;font-size:.85em}
.tablewrap{overflow-x:auto}
"""

# Sets data-images-ok once the page has loaded: "true" iff every <img> decoded.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (im) { return im.complete && im.naturalWidth > 0; });
  document.body.dataset.imagesCount = String(imgs.length);
  document.body.dataset.imagesOk = ok ? "true" : "false";
});
"""


# --------------------------------------------------------------------------------------------
# Small building blocks
# --------------------------------------------------------------------------------------------


def _png_data_uri(path: PathLike) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"report image missing: {path}")
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise DataError(f"report image is not a PNG file: {path}")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _as_table(table: TableLike) -> tuple[pd.DataFrame, str]:
    """A DataFrame and its caption (``df.attrs['caption']`` or the CSV's file name)."""
    if isinstance(table, pd.DataFrame):
        return table, str(table.attrs.get("caption", ""))
    path = Path(table)
    return load_table(path), path.name


def _table_html(table: TableLike, caption: str | None = None) -> str:
    df, default_caption = _as_table(table)
    cap = caption if caption is not None else default_caption

    def fmt(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td{_align(v)}>{html.escape(_cell(v, fmt))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False, name=None)
    )
    cap_html = f"<caption>{html.escape(cap)}</caption>" if cap else ""
    return (
        f'<div class="tablewrap"><table>{cap_html}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _cell(value: Any, fmt: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, np.generic):
        value = value.item()
    return fmt(value)


def _align(value: Any) -> str:
    # Numbers right-aligned (the CSS default), text left-aligned.
    return "" if isinstance(value, int | float | np.number) else ' class="txt"'


def _text_html(text: str) -> str:
    paras = [p.strip() for p in str(text).split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paras)


def _slug(i: int) -> str:
    return f"sec{i}"


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def write_report(
    out_html: PathLike,
    *,
    title: str,
    sections: Sequence[Mapping[str, Any]],
    config_text: str = "",
    versions: Mapping[str, Any] | None = None,
    step_times: pd.DataFrame | Sequence[tuple[str, float]] | None = None,
    tables: Mapping[str, TableLike] | None = None,
) -> None:
    """Write one self-contained HTML report (atomically).

    Args:
        out_html: output file.
        title: page title.
        sections: each ``{"heading": str, "text": str, "images": [PNG path or
            (PNG path, caption), ...], "tables": [DataFrame or CSV path, ...]}``; only
            ``heading`` is required. A DataFrame's caption is ``df.attrs["caption"]``.
        config_text: the run's YAML config, shown verbatim.
        versions: software versions and provenance (e.g. :func:`environment_versions`).
        step_times: a DataFrame with at least ``step`` and ``seconds`` (e.g.
            :func:`collect_step_times`) or a list of ``(step, seconds)``.
        tables: extra summary tables, caption -> DataFrame or CSV path, shown first.

    Raises:
        DataError: an image is missing or not a PNG, or a table file cannot be read.
    """
    parts: list[tuple[str, str]] = []  # (heading, inner html)
    if tables:
        parts.append(
            ("Summary", "".join(_table_html(t, caption=str(c)) for c, t in tables.items()))
        )
    for sec in sections:
        inner = _text_html(sec.get("text", ""))
        for img in sec.get("images", ()):
            path, caption = img if isinstance(img, tuple) else (img, Path(img).name)
            inner += (
                f'<figure><img src="{_png_data_uri(path)}" alt="{html.escape(str(caption))}">'
                f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
            )
        inner += "".join(_table_html(t) for t in sec.get("tables", ()))
        parts.append((str(sec["heading"]), inner))
    if step_times is not None:
        st = (
            step_times
            if isinstance(step_times, pd.DataFrame)
            else pd.DataFrame(list(step_times), columns=["step", "seconds"])
        )
        if len(st):
            total = pd.DataFrame([{"step": "total", "seconds": float(st["seconds"].sum())}])
            st = pd.concat([st, total], ignore_index=True)
            parts.append(("Step run times", _table_html(st, caption="Wall-clock seconds per step")))
    if config_text:
        parts.append(("Configuration", f"<pre>{html.escape(config_text)}</pre>"))
    if versions:
        vt = pd.DataFrame({"item": list(versions), "value": [str(v) for v in versions.values()]})
        parts.append(("Software versions", _table_html(vt, caption="")))

    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{_slug(i)}">{html.escape(h)}</a>' for i, (h, _) in enumerate(parts))
    body = "".join(
        f'<section id="{_slug(i)}"><h2>{html.escape(h)}</h2>{inner}</section>'
        for i, (h, inner) in enumerate(parts)
    )
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><p class="meta">Generated {now}</p></header>'
        f"<nav>{nav}</nav><main>{body}</main><script>{_CHECK_SCRIPT}</script></body></html>\n"
    )
    with atomic_path(out_html) as tmp:
        tmp.write_text(doc, encoding="utf-8")


def collect_step_times(
    timing_files: Mapping[str, PathLike] | Iterable[PathLike],
) -> pd.DataFrame:
    """Read Snakemake ``benchmark:`` TSV files (mapd's timing files) into one table, one row each.

    A timing file is tab-separated with a header ``s  h:m:s  max_rss  max_vms  max_uss
    max_pss  io_in  io_out  mean_load  cpu_time`` (memory in MB, ``NA`` where unknown) and one
    row per repeat. Given a mapping, its keys name the steps; given paths, the step name is the
    file's path relative to the files' common folder, without its extension
    (e.g. ``train/cifar10/seed0``).

    Returns:
        Columns ``step``, ``seconds`` (mean over repeats), ``repeats``, ``max_rss_mb``,
        ``cpu_time`` and ``mean_load`` (NaN where the file has no value).
    """
    if isinstance(timing_files, Mapping):
        named = {str(k): Path(v) for k, v in timing_files.items()}
    else:
        files = [Path(f) for f in timing_files]
        root = Path(os.path.commonpath([str(f.resolve().parent) for f in files])) if files else None
        named = {f.resolve().relative_to(root).with_suffix("").as_posix(): f for f in files}
    if not named:
        return pd.DataFrame(
            columns=["step", "seconds", "repeats", "max_rss_mb", "cpu_time", "mean_load"]
        )
    rows = []
    for step, f in named.items():
        if not f.is_file():
            raise DataError(f"timing file missing: {f}")
        try:
            df = pd.read_csv(f, sep="\t", na_values=["NA", "-", ""])
        except Exception as e:  # pandas raises several types for a malformed file
            raise DataError(f"cannot read timing file {f}: {e}") from e
        if "s" not in df.columns or df.empty:
            raise DataError(f"timing file {f}: expected a column 's' and at least one row")

        def col(name: str, frame: pd.DataFrame = df) -> float:
            if name not in frame.columns:
                return float("nan")
            return float(pd.to_numeric(frame[name], errors="coerce").mean())

        rows.append(
            {
                "step": step,
                "seconds": col("s"),
                "repeats": len(df),
                "max_rss_mb": col("max_rss"),
                "cpu_time": col("cpu_time"),
                "mean_load": col("mean_load"),
            }
        )
    return pd.DataFrame(rows)


def gallery_png(
    images: np.ndarray,
    labels: Sequence[str],
    out_png: PathLike,
    *,
    ncols: int = 8,
    title: str | None = None,
) -> None:
    """Tile images with a caption under each into one PNG (written atomically).

    Args:
        images: (N, H, W, C) uint8 with C in {1, 3, 4}, N >= 1.
        labels: N captions.
        out_png: output PNG path.
        ncols: images per row.
        title: optional title above the grid.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"gallery images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}"
        )
    if len(images) == 0 or len(labels) != len(images):
        raise DataError(
            f"gallery needs N >= 1 images and N labels, got {len(images)} / {len(labels)}"
        )
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(1.55 * ncols, 1.75 * nrows + (0.4 if title else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, lab in zip(axes, images, labels, strict=False):
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(str(lab), fontsize=8, y=-0.2)
    if title:
        fig.suptitle(title, fontsize=11)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
