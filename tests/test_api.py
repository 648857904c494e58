"""The Python API (`mapd.audit`) and the one-process CLI audit of an image folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mapd
from mapd.data import load_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to a busy machine
    yield
    torch.set_num_threads(before)


def test_audit_in_memory_returns_metadata_for_every_row() -> None:
    train = load_dataset("digits", "train").subset(np.arange(400))
    result = mapd.audit(
        train,
        test=load_dataset("digits", "test"),
        settings={
            "cscores": {"epochs": 2},
            "probes": {"train_size": 5, "heldout_size": 5, "ood_blur_kernel": 3},
            "train": {"epochs": 2, "model_options": {"width": 8}, "crop_padding": 1, "flip": False},
        },
    )
    n = len(result.suite)
    assert result.loss.shape == (n, 2) and result.correct.shape == (n, 2)
    assert len(result.metadata) == n
    probs = result.metadata[[c for c in result.metadata.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert set(result.heldout) == {"4-probe", "6-probe"}
    assert result.heldout["6-probe"]["n"] == 6 * 5
    assert result.metrics["final_test_acc"] is not None


def _write_tree(root: Path, n_per_class: int = 40) -> None:
    ds = load_dataset("digits", "train")
    for k in range(3):  # three classes keep it quick
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(ds.labels == k)[:n_per_class]):
            Image.fromarray(ds.images[i, :, :, 0]).resize((16, 16)).save(folder / f"{j}.png")


def test_cli_audits_an_image_folder_given_only_its_path(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _write_tree(root)
    (root / "class_empty").mkdir()  # a class folder without images: a warning, not silence
    out = tmp_path / "audit"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mapd.cli",
            "audit",
            "--imagefolder",
            str(root),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report" / "index.html").is_file()
    assert "Report:" in proc.stdout
    html = (out / "report" / "index.html").read_text()
    assert "Data warnings" in html and "class &#x27;class_empty&#x27; has no images" in html
    assert "class 'class_empty' has no images" in proc.stderr
    meta = out / "assign" / "imagefolder" / "seed0" / "metadata.csv"
    assert meta.is_file()
    import pandas as pd

    table = pd.read_csv(meta)
    assert (table["role"] == "data").sum() > 0 and "assigned" in table.columns
    assert (out / "figures" / "imagefolder" / "fig4.png").is_file()
    # label_issues.csv ranks every image of the folder (probes are copies), with its path
    issues = pd.read_csv(out / "issues" / "imagefolder" / "label_issues.csv")
    images = sorted(str(p) for p in root.rglob("*.png"))
    assert sorted(issues["path"]) == images and issues["score"].notna().all()
    assert issues["rank"].tolist() == list(range(1, len(images) + 1))
    assert "label_issues.csv ranks them all" in html
