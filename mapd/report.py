"""One self-contained HTML report of an audit run.

The file works offline when opened from disk: images are embedded as base64 PNG data URIs,
the CSS is inline and the only script is a tiny inline check that every image decoded
(it sets ``data-images-ok`` on ``<body>``, which a headless browser test reads back).
All user-provided text is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mapd.errors import DataError
from mapd.figures import category_name, read_heldout, sort_categories
from mapd.io import atomic_path, load_json, load_npy, load_table

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


def collect_step_times(benchmark_files: Iterable[PathLike]) -> pd.DataFrame:
    """Read Snakemake ``benchmark:`` TSV files into one table, one row per file.

    A benchmark file is tab-separated with a header ``s  h:m:s  max_rss  max_vms  max_uss
    max_pss  io_in  io_out  mean_load  cpu_time`` (memory in MB, ``NA`` where unknown) and one
    row per repeat. The step name is the file's path relative to the files' common folder,
    without its extension (e.g. ``train/cifar10/seed0``).

    Returns:
        Columns ``step``, ``seconds`` (mean over repeats), ``repeats``, ``max_rss_mb``,
        ``cpu_time`` and ``mean_load`` (NaN where the file has no value).
    """
    files = [Path(f) for f in benchmark_files]
    if not files:
        return pd.DataFrame(
            columns=["step", "seconds", "repeats", "max_rss_mb", "cpu_time", "mean_load"]
        )
    parents = [str(f.resolve().parent) for f in files]
    root = Path(os.path.commonpath(parents))
    rows = []
    for f in files:
        if not f.is_file():
            raise DataError(f"benchmark file missing: {f}")
        try:
            df = pd.read_csv(f, sep="\t", na_values=["NA", "-", ""])
        except Exception as e:  # pandas raises several types for a malformed file
            raise DataError(f"cannot read benchmark file {f}: {e}") from e
        if "s" not in df.columns or df.empty:
            raise DataError(f"benchmark file {f}: expected a column 's' and at least one row")

        def col(name: str, frame: pd.DataFrame = df) -> float:
            if name not in frame.columns:
                return float("nan")
            return float(pd.to_numeric(frame[name], errors="coerce").mean())

        step = f.resolve().relative_to(root).with_suffix("").as_posix()
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


def _git_commit(start: Path) -> str:
    """HEAD commit of the repository containing ``start``, read from .git without running git."""
    for folder in [start, *start.parents]:
        dot = folder / ".git"
        if dot.is_file():  # a worktree: "gitdir: <path>"
            text = dot.read_text().strip()
            if not text.startswith("gitdir:"):
                return "unknown"
            gitdir = (folder / text.split(":", 1)[1].strip()).resolve()
        elif dot.is_dir():
            gitdir = dot
        else:
            continue
        head = (gitdir / "HEAD").read_text().strip() if (gitdir / "HEAD").is_file() else ""
        if not head.startswith("ref:"):
            return head or "unknown"
        ref = head.split(":", 1)[1].strip()
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
        return f"none yet ({ref})"
    return "unknown (not a git checkout)"


def environment_versions() -> dict[str, str]:
    """Python, platform, key package versions and the git commit of the mapd checkout."""
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
    }
    for pkg in (
        "mapd",
        "numpy",
        "pandas",
        "torch",
        "torchvision",
        "scikit-learn",
        "matplotlib",
        "seaborn",
        "pyarrow",
        "pillow",
        "snakemake",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["git_commit"] = _git_commit(Path(__file__).resolve().parent)
    return out


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


# --------------------------------------------------------------------------------------------
# The audit report
# --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{100 * arr.mean():.1f} ± {100 * std:.1f}%"


def _seed_label(probe_dir: Path, position: int) -> Any:
    meta_path = probe_dir / "meta.json"
    meta = load_json(meta_path) if meta_path.is_file() else {}
    return meta.get("seed", position) if isinstance(meta, dict) else position


def _class_names(probe_dir: Path) -> list[str] | None:
    """Class names from the probe suite's meta.json (``classes``), if it lists them."""
    meta_path = probe_dir / "meta.json"
    meta = load_json(meta_path) if meta_path.is_file() else {}
    classes = meta.get("classes") if isinstance(meta, dict) else None
    return [str(c) for c in classes] if isinstance(classes, list) else None


def _probe_galleries(
    probe_dir: Path, out_dir: Path, per_category: int = 8
) -> list[tuple[str, Path]]:
    """One gallery PNG per probe category from ``probe_images.npy`` (paper Fig. 2)."""
    examples = load_table(probe_dir / "examples.parquet")
    for c in ("category", "role", "label", "orig_label", "probe_row"):
        if c not in examples.columns:
            raise DataError(f"{probe_dir / 'examples.parquet'}: missing column {c!r}")
    images = load_npy(probe_dir / "probe_images.npy", mmap=True)
    classes = _class_names(probe_dir)

    def name(label: int) -> str:
        if classes is not None and 0 <= label < len(classes):
            return str(classes[label])
        return f"class {label}"

    probes = examples[(examples["category"].fillna("") != "") & (examples["probe_row"] >= 0)]
    if len(probes) and int(probes["probe_row"].max()) >= len(images):
        raise DataError(
            f"{probe_dir}: probe_row exceeds the {len(images)} rows of probe_images.npy"
        )
    out = []
    for cat in sort_categories(probes["category"].astype(str).unique()):
        sub = probes[probes["category"] == cat]
        train = sub[sub["role"] == "probe_train"]
        sub = train if len(train) else sub
        # Evenly spaced picks rather than the first few, for a little variety.
        pick = np.unique(np.linspace(0, len(sub) - 1, min(per_category, len(sub))).astype(int))
        sub = sub.iloc[pick]
        labels = []
        for lab, orig in zip(sub["label"], sub["orig_label"], strict=True):
            text = name(int(lab))
            if int(orig) >= 0 and int(orig) != int(lab):
                text += f"\n(was {name(int(orig))})"
            labels.append(text)
        imgs = np.asarray(images[sub["probe_row"].to_numpy(dtype=np.int64)])
        path = out_dir / f"probes_{cat}.png"
        gallery_png(imgs, labels, path, title=f"{category_name(cat)} probes")
        out.append((cat, path))
    return out


def _dataset_section(name: str, spec: Mapping[str, Any], gallery_dir: Path) -> dict[str, Any]:
    probes = [Path(p) for p in spec.get("probes", ())]
    runs = [Path(p) for p in spec.get("runs", ())]
    assign = [Path(p) for p in spec.get("assign", ())]
    figures = spec.get("figures")
    if isinstance(figures, list | tuple):
        figures = figures[0] if len(figures) == 1 else None
    if not probes or not (len(probes) == len(runs) == len(assign)) or figures is None:
        raise DataError(
            f"report data set {name!r}: need equally many probe/run/assign dirs (got "
            f"{len(probes)}/{len(runs)}/{len(assign)}) and one 'figures' folder"
        )
    figures = Path(figures)
    seeds = [_seed_label(p, i) for i, p in enumerate(probes)]

    heldout = [read_heldout(a / "heldout.json") for a in assign]
    settings = list(heldout[0])
    acc_rows = []
    for s, h in zip(seeds, heldout, strict=True):
        acc_rows.append({"seed": s, **{k: _pct(h[k]["accuracy"]) for k in settings if k in h}})
    acc_rows.append(
        {
            "seed": "mean ± std",
            **{k: _mean_std([h[k]["accuracy"] for h in heldout if k in h]) for k in settings},
        }
    )
    acc_table = pd.DataFrame(acc_rows)
    acc_table.attrs["caption"] = "Held-out probe accuracy of the k-NN assignment per seed"

    train_rows = []
    for s, r in zip(seeds, runs, strict=True):
        m = load_json(r / "metrics.json")
        if not isinstance(m, dict) or "final_test_acc" not in m:
            raise DataError(f"{r / 'metrics.json'}: missing 'final_test_acc'")
        epochs = m.get("epochs") or []
        train_rows.append(
            {
                "seed": s,
                "epochs": len(epochs),
                # None when the data set has no test split (e.g. an image folder)
                "final_test_acc": float("nan")
                if m["final_test_acc"] is None
                else float(m["final_test_acc"]),
                "train_seconds": float(sum(float(e.get("seconds", 0.0)) for e in epochs)),
                "recording": str(m.get("recording", "")),
            }
        )
    train_table = pd.DataFrame(train_rows)
    train_table.attrs["caption"] = "Training run per seed (final test accuracy as recorded)"

    count_rows, crosstab = [], None
    for i, (s, a) in enumerate(zip(seeds, assign, strict=True)):
        md_path = a / "metadata.parquet"
        md = load_table(md_path)
        for c in ("role", "label", "assigned"):
            if c not in md.columns:
                raise DataError(f"{md_path}: missing column {c!r}")
        data = md[md["role"] == "data"]
        counts = data["assigned"].astype(str).value_counts()
        count_rows.append(
            {"seed": s, **{c: int(counts.get(c, 0)) for c in sort_categories(counts.index)}}
        )
        if i == 0:
            crosstab = pd.crosstab(data["label"], data["assigned"].astype(str))
            crosstab = crosstab[sort_categories(crosstab.columns)].reset_index()
            classes = _class_names(probes[0])
            if classes is not None:
                crosstab.insert(
                    1,
                    "class",
                    [classes[k] if 0 <= k < len(classes) else "" for k in crosstab["label"]],
                )
            crosstab.attrs["caption"] = (
                f"Training examples per class (rows) and assigned category, seed {s}"
            )
    count_table = pd.DataFrame(count_rows).fillna(0)
    count_table.attrs["caption"] = "Training examples (role 'data') per assigned category"

    images: list[Any] = [
        (figures / "fig3.png", "Fig. 3: probe accuracy, first- and consistently-learned, losses"),
        (figures / "fig4.png", "Fig. 4: loss trajectories and held-out confusion matrices"),
    ]
    images += [(Path(p), str(c)) for p, c in spec.get("surfaced", ())]
    images += [
        (p, f"Probe examples (cf. Fig. 2): {category_name(c)}")
        for c, p in _probe_galleries(probes[0], gallery_dir / name)
    ]
    text = (
        f"{len(seeds)} seed(s): {', '.join(str(s) for s in seeds)}. Fig. 3: probe learning "
        "dynamics, mean ± std over seeds. Fig. 4: loss trajectories and confusion matrices of "
        "the held-out probes (the paper reports ~81.9% with 4 probes and ~78% with 6 for "
        "ResNet-50 on ImageNet). Probe examples are drawn from the first seed's probe suite; "
        "captions give the label trained on (and the original one where it was changed)."
    )
    tables = [acc_table, train_table, count_table]
    if crosstab is not None:
        tables.append(crosstab)
    return {
        "heading": f"Data set: {name}",
        "text": text,
        "images": images,
        "tables": tables,
        "_accuracy": {k: [h[k]["accuracy"] for h in heldout if k in h] for k in settings},
    }


def build_audit_report(
    out_html: PathLike,
    *,
    config_path: PathLike,
    datasets: Mapping[str, Mapping[str, Any]],
    benchmark_files: Iterable[PathLike] = (),
    title: str = "MAP-D audit report",
) -> None:
    """The audit report: Figs. 3/4 (already on disk), accuracy/count tables, probe galleries.

    Args:
        out_html: output HTML file.
        config_path: the run's YAML config (shown verbatim).
        datasets: name -> ``{"probes": [dir per seed], "runs": [...], "assign": [...],
            "figures": dir holding fig3.png and fig4.png}``.
        benchmark_files: Snakemake benchmark TSVs for the step-time table.
    """
    config_path = Path(config_path)
    if not config_path.is_file():
        raise DataError(f"config file missing: {config_path}")
    with tempfile.TemporaryDirectory(prefix="mapd-report-") as tmp:
        sections = [_dataset_section(n, spec, Path(tmp)) for n, spec in datasets.items()]
        summary_rows = []
        for name, sec in zip(datasets, sections, strict=True):
            row: dict[str, Any] = {"data set": name}
            for setting, accs in sec.pop("_accuracy").items():
                row[setting] = _mean_std(accs)
            row["seeds"] = len(datasets[name]["probes"])
            summary_rows.append(row)
        summary = pd.DataFrame(summary_rows)
        write_report(
            out_html,
            title=title,
            sections=sections,
            config_text=config_path.read_text(),
            versions=environment_versions(),
            step_times=collect_step_times(benchmark_files),
            tables={"Held-out probe accuracy (mean ± std over seeds)": summary},
        )
