"""The results layout: the one source of every results path (steps, API, rules, dvc.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mapd.paths import TEMPLATES, Layout, dataset_job, seed_job

REPO = Path(__file__).resolve().parent.parent


def test_paths_and_wildcard_patterns() -> None:
    lay = Layout("res")
    assert lay.run("digits", 3) == "res/runs/digits/seed3"
    assert lay.run() == "res/runs/{dataset}/seed{seed}"
    assert lay.probes("d") == "res/probes/d/seed{seed}"
    assert lay.figure(None, "fig3.png") == "res/figures/{dataset}/fig3.png"
    assert lay.partial(lay.run("d", 0)) == "res/partial/runs/d/seed0"
    assert lay.log("train", seed_job()) == "res/logs/train/{dataset}/seed{seed}.log"
    assert lay.timing("data", dataset_job("d")) == "res/timings/data/d.tsv"
    assert lay.metrics("audit") == "res/metrics/audit.json"
    assert lay.folder("run") == "res/runs" and lay.folder("report") == "res/report/index.html"
    assert Layout.of({"results": "x/y"}).report() == "x/y/report/index.html"
    with pytest.raises(KeyError, match="unknown results path kind"):
        lay.path("nope")


def test_in_progress_state_is_outside_every_output_folder() -> None:
    # DVC deletes its outputs before a run: a checkpoint inside one would be lost
    lay = Layout("r")
    partial = lay.partial(lay.run("d", 0))
    for kind in ("summary", "cscores", "probes", "run", "assign", "figures"):
        assert not partial.startswith(lay.folder(kind) + "/")


def _folders() -> set[str]:
    """The literal top folders of the layout: data, runs, probes, ..."""
    return {t.split("/", 1)[0] for t in TEMPLATES.values()} | {"benchmarks"}


def test_no_results_path_is_spelled_outside_the_layout_module() -> None:
    folders = "|".join(sorted(_folders()))
    patterns = [
        # a string literal that spells a layout folder as a path component
        re.compile(rf"[\"'](?:[^\"'\s]*/)?(?:{folders})/[^\"']*[\"']"),
        # a pathlib join onto a layout folder: ... / "runs"
        re.compile(rf"/\s*[\"'](?:{folders})[\"']"),
        # the per-seed folder name
        re.compile(r"seed\{"),
        re.compile(r"[\"']\.partial[\"']"),
    ]
    # not results paths: config keys (datasets/<name>/train/...), URLs, Snakemake's caption files
    allowed = re.compile(
        r"datasets/|defaults/|://|\.\./report/|noise/(datasets|fig7|probes|methods|levels)"
        r"|detection/(datasets|sources|scores|probes|train|folds)"
        r"|prioritized/(datasets|reference|scorers|probes|train|validation|noise|splits|holdout)"
        r"|groups/(datasets|seeds|detectors|jtt_sweep|threshold|train)"
    )
    files = [
        p
        for p in [*REPO.joinpath("mapd").rglob("*.py"), *REPO.joinpath("workflow").rglob("*.smk")]
        if p.name != "paths.py" and "data" not in p.relative_to(REPO).parts[1:2]
    ]
    files.append(REPO / "Snakefile")
    assert len(files) > 20
    hits = []
    for path in files:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in patterns) and not allowed.search(code):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert hits == [], "results paths spelled outside mapd/paths.py:\n" + "\n".join(hits)


def test_the_grep_finds_a_spelled_path(tmp_path: Path) -> None:
    folders = "|".join(sorted(_folders()))
    pattern = re.compile(rf"[\"'](?:[^\"'\s]*/)?(?:{folders})/[^\"']*[\"']")
    assert pattern.search('out = f"{R}/runs/{d}/x"')
    assert pattern.search("Path('results/assign/x')")
    assert not pattern.search('"row", "orig_index"')
