"""The audit's report section and metrics, from synthetic outputs in the pipeline's formats, and
the whole report in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from support import assert_self_contained, b64
from test_audit_figures import write_synthetic_audit  # synthetic pipeline outputs, same formats

from mapd.errors import DataError
from mapd.experiments.audit.figures import write_fig3, write_fig4
from mapd.experiments.audit.report import dataset_section, load_outputs
from mapd.report import collect_step_times, write_report

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
CHROMIUM = Path("/usr/bin/chromium")


def _section(dirs: dict[str, list[Path]], figs: Path, gallery: Path):
    seeds = load_outputs(dirs["probes"], dirs["runs"], dirs["assign"])
    return dataset_section(
        "synthetic", seeds, figures=figs, gallery_dir=gallery, per_category=8, train=None
    )


@pytest.fixture(scope="module")
def audit_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    dirs = write_synthetic_audit(root / "in")
    figs = root / "figures" / "synthetic"
    write_fig3(dirs["probes"], dirs["runs"], figs)
    write_fig4(dirs["probes"], dirs["runs"], dirs["assign"], figs, n_sampled=10)
    timing = root / "timings" / "train.tsv"
    timing.parent.mkdir()
    timing.write_text(BENCH_HEADER + "42.0\t0:00:42\t100\t200\t90\t95\t1\t1\t99\t41\n")
    out = root / "report" / "index.html"
    section, accuracies = _section(dirs, figs, root / "galleries")
    write_report(
        out,
        title="test",
        sections=[section],
        config_text="datasets: [synthetic]\nseeds: [0, 1]\nknn: {k: 20}\n",
        step_times=collect_step_times({"train": timing}),
    )
    return {"html": out, "figures": figs, "root": root, "accuracies": accuracies}


def test_audit_section_contents(audit_report: dict[str, Path]) -> None:
    out = audit_report["html"]
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]
    doc = out.read_text(encoding="utf-8")
    assert_self_contained(doc)
    figs = audit_report["figures"]
    assert b64(figs / "fig3.png") in doc and b64(figs / "fig4.png") in doc
    assert doc.count("<img ") == 2 + 3  # two figures and one probe gallery per category
    for cat in ("Typical", "Atypical", "Random labels"):
        assert f"Probe examples (cf. Fig. 2): {cat}" in doc
    # Held-out accuracy: per seed (83.3% = 25/30, 86.7% = 26/30) and mean ± sample std.
    assert "83.3%" in doc and "86.7%" in doc
    assert "85.0 ± 2.4%" in doc and "90.0 ± 7.1%" in doc
    assert audit_report["accuracies"]["3-probe"] == pytest.approx([25 / 30, 26 / 30])
    # Final test accuracy per seed, training seconds (8 epochs x 2 s), recording mode.
    assert "<td>0.9</td>" in doc and "<td>0.91</td>" in doc and "<td>16</td>" in doc
    # Assigned-category counts of the 30 data rows: row % 3 -> typical/atypical/random_labels.
    seed0 = re.search(r"<tr><td>0</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>", doc)
    assert seed0 is not None and sum(map(int, seed0.groups())) == 30
    assert "Training examples per class (rows) and assigned category, seed 0" in doc
    assert '<tr><td>2</td><td class="txt">cls2</td>' in doc  # class names from meta.json
    assert "train</td><td>42</td>" in doc  # step time
    assert "knn: {k: 20}" in doc  # config


def test_gallery_size_follows_the_setting(audit_report: dict[str, Path], tmp_path: Path) -> None:
    from mapd.experiments.audit.galleries import probe_galleries

    root = audit_report["root"]
    seeds = load_outputs(
        *(sorted((root / "in" / k).iterdir()) for k in ("probes", "runs", "assign"))
    )
    suite = seeds[0][1]
    (_, path), *_ = probe_galleries(suite, tmp_path, per_category=3)
    with Image.open(path) as three:
        w3 = three.width
    (_, path8), *_ = probe_galleries(suite, tmp_path / "b", per_category=8)
    with Image.open(path8) as eight:
        assert eight.width > w3
    assert probe_galleries(suite, tmp_path / "c", per_category=0) == []


def test_audit_section_needs_the_figures_and_aligned_seeds(
    audit_report: dict[str, Path], tmp_path: Path
) -> None:
    root = audit_report["root"]
    dirs = {k: sorted((root / "in" / k).iterdir()) for k in ("probes", "runs", "assign")}
    section, _ = _section(dirs, tmp_path / "nofigs", tmp_path / "g")
    with pytest.raises(DataError, match=r"fig3\.png"):
        write_report(tmp_path / "r.html", title="t", sections=[section])
    with pytest.raises(DataError, match="equally many"):
        load_outputs(dirs["probes"], dirs["runs"][:1], dirs["assign"])
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
