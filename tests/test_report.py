"""The self-contained HTML report: embedding, escaping, tables, galleries, and a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_figures import write_synthetic_audit  # synthetic pipeline outputs, same formats

from mapd.errors import DataError
from mapd.figures import write_fig3, write_fig4
from mapd.report import (
    build_audit_report,
    collect_step_times,
    environment_versions,
    gallery_png,
    write_report,
)

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
CHROMIUM = Path("/usr/bin/chromium")


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def _b64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _assert_self_contained(doc: str) -> None:
    low = doc.lower()
    for bad in ('src="http', 'href="http', "src='http", "<link", "@import", "url(", "//cdn"):
        assert bad not in low, bad
    # Every <img> is an embedded PNG, every href an in-page anchor.
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', doc))
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', doc))
    assert low.count("<script") == 1  # only the inline image check


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def test_gallery_png_tiles_images_with_captions(tmp_path: Path) -> None:
    imgs = np.zeros((10, 16, 16, 3), dtype=np.uint8)
    imgs[:, :, :, 0] = 255  # all pure red
    out = tmp_path / "g.png"
    gallery_png(imgs, [f"img {i}" for i in range(10)], out, ncols=4, title="Red")
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    assert w == pytest.approx(4 * 155, abs=2) and h > 2 * 155  # 4 columns, 3 rows
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
    assert red.sum() > 10 * 60 * 60  # ten images of at least ~60x60 px each

    gray = np.full((3, 12, 12, 1), 128, dtype=np.uint8)
    gallery_png(gray, ["a", "b", "c"], tmp_path / "gray.png")
    with Image.open(tmp_path / "gray.png") as im:
        arr = np.asarray(im.convert("RGB"))
    assert ((arr == 128).all(axis=-1)).sum() > 3 * 60 * 60


@pytest.mark.parametrize(
    ("images", "labels", "msg"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), ["a", "b"], "uint8"),
        (np.zeros((2, 8, 8, 3), np.uint8), ["a"], "labels"),
        (np.zeros((0, 8, 8, 3), np.uint8), [], "N >= 1"),
    ],
)
def test_gallery_png_rejects_bad_input(tmp_path: Path, images, labels, msg) -> None:
    with pytest.raises(DataError, match=msg):
        gallery_png(images, labels, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_collect_step_times_reads_snakemake_benchmarks(tmp_path: Path) -> None:
    (tmp_path / "bench" / "train" / "cifar10").mkdir(parents=True)
    f1 = tmp_path / "bench" / "train" / "cifar10" / "seed0.tsv"
    f1.write_text(
        BENCH_HEADER + "120.5\t0:02:00\t2048.5\t4096\t2000\t2010\t10.1\t3.2\t180.0\t216.9\n"
    )
    f2 = tmp_path / "bench" / "assign.tsv"
    f2.write_text(
        BENCH_HEADER
        + "1.0\t0:00:01\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t0.5\n" * 1
        + "3.0\t0:00:03\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t1.5\n"
    )
    df = collect_step_times([f1, f2])
    assert df["step"].tolist() == ["train/cifar10/seed0", "assign"]
    assert df["seconds"].tolist() == [120.5, 2.0]
    assert df["repeats"].tolist() == [1, 2]
    assert df.loc[0, "max_rss_mb"] == 2048.5 and np.isnan(df.loc[1, "max_rss_mb"])
    assert df["cpu_time"].tolist() == [216.9, 1.0]
    assert collect_step_times([]).empty

    with pytest.raises(DataError, match="missing"):
        collect_step_times([tmp_path / "nope.tsv"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("wall\tmem\n1\t2\n")
    with pytest.raises(DataError, match="column 's'"):
        collect_step_times([bad])


def test_environment_versions() -> None:
    v = environment_versions()
    assert v["python"] == sys.version.split()[0]
    assert v["numpy"] == np.__version__ and v["pandas"] == pd.__version__
    assert v["mapd"] != "not installed"
    assert v["git_commit"]


def test_write_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    red, blue = _png(tmp_path / "red.png", (255, 0, 0)), _png(tmp_path / "blue.png", (0, 0, 255))
    csv = tmp_path / "counts.csv"
    pd.DataFrame({"category": ["typical", "ood"], "count": [12, 7]}).to_csv(csv, index=False)
    df = pd.DataFrame({"name": ["<b>x</b>", "y & z"], "acc": [0.123456, 0.5]})
    df.attrs["caption"] = "Caption <with> markup"
    out = tmp_path / "out" / "report.html"
    write_report(
        out,
        title="Audit <script>alert(1)</script>",
        sections=[
            {
                "heading": "First",
                "text": "Para one.\n\nPara <two>.",
                "images": [red],
                "tables": [df, csv],
            },
            {"heading": "Second", "images": [(blue, "Blue & caption")]},
        ],
        config_text="model: resnet18  # <comment> & more\n",
        versions={"python": "3.x", "torch": "2.y"},
        step_times=[("probes", 1.5), ("train", 10.0)],
        tables={"Held-out accuracy": pd.DataFrame({"setting": ["4-probe"], "acc": ["81.9%"]})},
    )
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # one file, no leftovers
    doc = out.read_text(encoding="utf-8")
    _assert_self_contained(doc)
    assert f"data:image/png;base64,{_b64(red)}" in doc
    assert f"data:image/png;base64,{_b64(blue)}" in doc
    assert doc.count("<img ") == 2
    # All text is escaped: no live markup from user strings.
    assert "<script>alert(1)" not in doc and "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "&lt;b&gt;x&lt;/b&gt;" in doc and "y &amp; z" in doc
    assert "Caption &lt;with&gt; markup" in doc and "Blue &amp; caption" in doc
    assert "<p>Para one.</p><p>Para &lt;two&gt;.</p>" in doc
    assert "<pre>model: resnet18  # &lt;comment&gt; &amp; more\n</pre>" in doc
    # Tables: values, formatted floats, CSV contents, step times with a total, versions.
    assert "<td>0.1235</td>" in doc and "<td>0.5</td>" in doc
    assert '<td class="txt">typical</td><td>12</td>' in doc
    assert "<caption>counts.csv</caption>" in doc
    assert '<td class="txt">total</td><td>11.5</td>' in doc
    assert '<td class="txt">torch</td><td class="txt">2.y</td>' in doc
    assert "81.9%" in doc
    order = [doc.index(f"<h2>{h}</h2>") for h in ("Summary", "First", "Second", "Step run times")]
    assert order == sorted(order) and order[0] < doc.index("Held-out accuracy") < order[1]


def test_write_report_rejects_missing_or_non_png_images(tmp_path: Path) -> None:
    jpg = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(jpg, format="JPEG")
    for img, msg in ((tmp_path / "none.png", "missing"), (jpg, "not a PNG")):
        with pytest.raises(DataError, match=msg):
            write_report(
                tmp_path / "r.html", title="t", sections=[{"heading": "h", "images": [img]}]
            )
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------------------------
# The audit report from synthetic pipeline outputs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audit_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    dirs = write_synthetic_audit(root / "in")
    figs = root / "figures" / "synthetic"
    write_fig3(dirs["probes"], dirs["runs"], figs)
    write_fig4(dirs["probes"], dirs["runs"], dirs["assign"], figs, n_sampled=10)
    config = root / "config.yaml"
    config.write_text("datasets: [synthetic]\nseeds: [0, 1]\nknn: {k: 20}\n")
    bench = root / "benchmarks" / "train.tsv"
    bench.parent.mkdir()
    bench.write_text(BENCH_HEADER + "42.0\t0:00:42\t100\t200\t90\t95\t1\t1\t99\t41\n")
    out = root / "report" / "index.html"
    build_audit_report(
        out,
        config_path=config,
        datasets={
            "synthetic": {**{k: [str(p) for p in v] for k, v in dirs.items()}, "figures": str(figs)}
        },
        benchmark_files=[bench],
    )
    return {"html": out, "figures": figs, "root": root}


def test_build_audit_report_contents(audit_report: dict[str, Path]) -> None:
    out = audit_report["html"]
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]
    doc = out.read_text(encoding="utf-8")
    _assert_self_contained(doc)
    figs = audit_report["figures"]
    assert _b64(figs / "fig3.png") in doc and _b64(figs / "fig4.png") in doc
    assert doc.count("<img ") == 2 + 3  # two figures and one probe gallery per category
    for cat in ("Typical", "Atypical", "Random labels"):
        assert f"Probe examples (cf. Fig. 2): {cat}" in doc
    # Held-out accuracy: per seed (83.3% = 25/30, 86.7% = 26/30) and mean ± std.
    assert "83.3%" in doc and "86.7%" in doc
    assert "85.0 ± 2.4%" in doc and "90.0 ± 7.1%" in doc
    # Final test accuracy per seed, training seconds (8 epochs x 2 s), recording mode.
    assert "<td>0.9</td>" in doc and "<td>0.91</td>" in doc and "<td>16</td>" in doc
    # Assigned-category counts of the 30 data rows: row % 3 -> typical/atypical/random_labels.
    seed0 = re.search(r"<tr><td>0</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>", doc)
    assert seed0 is not None and sum(map(int, seed0.groups())) == 30
    assert "Training examples per class (rows) and assigned category, seed 0" in doc
    assert '<tr><td>2</td><td class="txt">cls2</td>' in doc  # class names from meta.json
    assert "train</td><td>42</td>" in doc  # step time
    assert "knn: {k: 20}" in doc  # config


def test_build_audit_report_needs_the_figures(
    audit_report: dict[str, Path], tmp_path: Path
) -> None:
    root = audit_report["root"]
    dirs = {
        k: sorted(str(p) for p in (root / "in" / k).iterdir()) for k in ("probes", "runs", "assign")
    }
    with pytest.raises(DataError, match=r"fig3\.png"):
        build_audit_report(
            tmp_path / "r.html",
            config_path=root / "config.yaml",
            datasets={"x": {**dirs, "figures": str(tmp_path / "nofigs")}},
        )
    with pytest.raises(DataError, match="equally many"):
        build_audit_report(
            tmp_path / "r.html",
            config_path=root / "config.yaml",
            datasets={"x": {**dirs, "runs": dirs["runs"][:1], "figures": str(tmp_path)}},
        )
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------------------------
# A real headless browser
# --------------------------------------------------------------------------------------------


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _body_attrs(dom: str) -> dict[str, str]:
    m = re.search(r"<body([^>]*)>", dom)
    assert m is not None, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


@pytest.mark.browser
def test_report_renders_in_headless_chromium(audit_report: dict[str, Path], tmp_path: Path) -> None:
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    html_path = audit_report["html"]

    res = _chromium(["--dump-dom", html_path.as_uri()], tmp_path / "p1")
    assert res.returncode == 0, res.stderr[-2000:]
    body = _body_attrs(res.stdout)
    # The inline script ran after load and found every image decoded.
    assert body.get("data-images-ok") == "true", body
    assert body.get("data-images-count") == "5"
    assert res.stdout.count("<img ") == 5
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console  # the report logs nothing and throws nothing

    shot = tmp_path / "shot.png"
    res = _chromium(
        ["--window-size=1400,4000", f"--screenshot={shot}", html_path.as_uri()], tmp_path / "p2"
    )
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1400, 4000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # figures and text rendered, not a blank page

    # The marker is meaningful: a broken image makes it "false".
    doc = html_path.read_text(encoding="utf-8")
    start = doc.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(doc[:start] + "iVBORw0KGgoAAAA" + doc[doc.index('"', start) :])
    res = _chromium(["--dump-dom", broken.as_uri()], tmp_path / "p3")
    assert _body_attrs(res.stdout).get("data-images-ok") == "false"
