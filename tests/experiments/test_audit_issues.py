"""label_issues.csv: every training example ranked, merged over seeds, how each verdict was made."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from mapd.data import ImageDataset
from mapd.experiments.audit.issues import COLUMNS, issue_galleries, label_issues
from mapd.probes import ProbeSuite


def _dataset(n: int = 8) -> ImageDataset:
    rng = np.random.default_rng(0)
    return ImageDataset(
        name="toy",
        split="train",
        images=rng.integers(0, 256, (n, 6, 6, 1), dtype=np.uint8),
        labels=np.arange(n) % 2,
        classes=("a", "b"),
        index=np.arange(10, 10 + n),
    )


def _seed(
    seed: int, data_rows: list[int], scores: list[float], noisy_source: int | None, keep: bool
):
    """A seed whose data rows are the examples ``data_rows`` (orig_index) with ``scores``, plus a
    random-label probe copied from ``noisy_source``."""
    n = len(data_rows)
    rows = [
        {
            "row": i,
            "orig_index": o,
            "category": "",
            "role": "data",
            "label": o % 2,
            "orig_label": o % 2,
            "probe_row": -1,
        }
        for i, o in enumerate(data_rows)
    ]
    if noisy_source is not None:
        probe = {"row": n, "orig_index": noisy_source, "category": "random_labels"}
        probe.update(role="probe_train", label=1 - noisy_source % 2, orig_label=noisy_source % 2)
        rows.append({**probe, "probe_row": 0})
    table = pd.DataFrame(rows)
    suite = ProbeSuite(
        table=table, probe_images=np.zeros((1, 6, 6, 1), np.uint8), meta={"keep_sources": keep}
    )
    md = table[["row", "orig_index", "label", "orig_label", "role", "category"]].copy()
    md["score_mapd"] = list(scores) + ([0.99] if noisy_source is not None else [])
    md["p_typical"] = 1.0 - md["score_mapd"]
    pred = np.tile(((np.arange(len(table)) + seed) % 2).astype(np.int16)[:, None], (1, 3))
    return seed, suite, SimpleNamespace(pred=pred), SimpleNamespace(metadata=md, path=Path("a"))


def test_the_paper_protocol_merges_seeds_and_says_who_has_no_verdict() -> None:
    ds = _dataset()
    # seed 0: example 13 is a probe source; seed 1: 13 is data, 15 is a source; 17 never data
    s0 = _seed(0, [10, 11, 12, 14, 15, 16], [0.1, 0.9, 0.2, 0.3, 0.5, 0.0], 13, keep=False)
    s1 = _seed(1, [10, 11, 12, 13, 14, 16], [0.3, 0.7, 0.2, 0.6, 0.1, 0.0], 15, keep=False)
    table = label_issues([s0, s1], "mapd", ds)
    assert list(table.columns) == list(COLUMNS)
    assert sorted(table["orig_index"]) == list(range(10, 18))  # a row for every example
    by = table.set_index("orig_index")
    assert by.loc[11, "score"] == 0.8 and by.loc[11, "rank"] == 1  # mean over both seeds
    assert by.loc[13, "score"] == 0.6 and by.loc[13, "verdict"] == "data row in seed(s) 1"
    assert by.loc[10, "verdict"] == "data row in seed(s) 0,1"
    assert np.isnan(by.loc[17, "score"]) and by.loc[17, "verdict"] == "probe source in every seed"
    assert table["rank"].tolist() == list(range(1, 9)) and table.iloc[-1]["orig_index"] == 17
    assert by.loc[11, "class"] == "b" and by.loc[11, "label"] == 1


def test_copies_give_every_example_a_verdict_and_flag_the_conflict() -> None:
    ds = _dataset()
    data = list(range(10, 18))
    s0 = _seed(0, data, list(np.linspace(0, 0.7, 8)), 12, keep=True)
    table = label_issues([s0], "mapd", ds)
    assert table["score"].notna().all()
    by = table.set_index("orig_index")
    assert by.loc[12, "verdict"].endswith("also a random-label probe (conflict)")
    assert by.loc[13, "verdict"] == "data row in seed(s) 0"
    assert (np.diff(table["score"].to_numpy()) <= 0).all()  # ranked highest first


def test_galleries(tmp_path: Path) -> None:
    ds = _dataset()
    s0 = _seed(0, list(range(10, 18)), list(np.linspace(0, 0.7, 8)), None, keep=True)
    table = label_issues([s0], "mapd", ds)
    typical = s0[3].metadata.set_index("orig_index")["p_typical"]
    out = issue_galleries(ds, table, typical, tmp_path, per_class=2)
    assert [Path(p).name for p, _ in out] == ["label_issues.png", "fig5.png"]
    assert all(Path(p).is_file() for p, _ in out)
