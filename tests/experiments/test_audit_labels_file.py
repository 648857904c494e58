"""A labels file in the CIFAR-10N format (a torch-saved dict of label arrays with ``clean_label``)
drives an audit end to end: the audit trains on the file's labels, and label_issues.csv is
measured against the data set's own labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mapd.config import validate_config
from mapd.data import load_dataset
from mapd.errors import ConfigError, DataError
from mapd.experiments import family, preflight
from mapd.paths import Layout
from mapd.pipeline import load_split

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_cifar_n(path: Path, rate: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """digits' labels as ``clean_label`` and a ``worse_label`` set with ``rate`` of them moved
    to the next class (the release's layout: numpy arrays in a dict saved by torch.save)."""
    clean = load_dataset("digits", "train").labels
    rng = np.random.default_rng(3)
    worse = clean.copy()
    flip = rng.random(len(clean)) < rate
    worse[flip] = (clean[flip] + 1) % 10
    torch.save({"clean_label": clean, "worse_label": worse, "aggre_label": clean.copy()}, path)
    return clean, worse


def _cfg(tmp: Path, labels: dict) -> dict:
    return validate_config(
        {
            "results": str(tmp / "results"),
            "seeds": [0],
            "device": "cpu",
            "defaults": {
                "cscores": {"method": "learning_speed", "epochs": 2},
                "train": {"model": "small_cnn", "model_options": {"width": 8}, "epochs": 6,
                          "batch_size": 64, "lr": 0.05, "crop_padding": 1, "flip": False},
                "probes": {"train_size": 20, "heldout_size": 10, "ood_blur_kernel": 3,
                           "keep_sources": True},
                "assign": {"k": 10},
            },
            "datasets": {"digits": {"subset": 500, "labels": labels}},
        }
    )  # fmt: skip


def test_a_cifar_n_file_drives_the_audit(tmp_path: Path) -> None:
    clean, worse = _write_cifar_n(tmp_path / "digits_human.pt")
    cfg = _cfg(tmp_path, {"path": str(tmp_path / "digits_human.pt"), "key": "worse_label"})
    ds = load_split(cfg, "digits", "train")
    # the file's rows follow the split's official order; the subset is taken after that
    full_index = load_dataset("digits", "train").index
    position = dict(zip(full_index.tolist(), range(len(full_index)), strict=True))
    pos = np.array([position[i] for i in ds.index])
    assert (ds.labels == worse[pos]).all() and (ds.attrs["orig_label"] == clean[pos]).all()
    family("audit").run(cfg)
    lay = Layout.of(cfg)
    table = pd.read_csv(Path(lay.issues("digits")) / "label_issues.csv")
    assert len(table) == 500 and table["score"].notna().all()
    pos = np.array([position[i] for i in table["orig_index"]])
    assert (table["label"].to_numpy() == worse[pos]).all()
    assert (table["true_label"].to_numpy() == clean[pos]).all()
    assert (table["is_noisy"].to_numpy() == (worse != clean)[pos]).all()
    truth = json.loads((Path(lay.issues("digits")) / "truth_metrics.json").read_text())
    assert truth["n"] == 500 and truth["noisy"] == int(table["is_noisy"].sum()) > 80
    from sklearn.metrics import roc_auc_score

    assert truth["auroc"] == pytest.approx(roc_auc_score(table["is_noisy"], table["score"]))
    assert truth["auroc"] > 0.6  # the ranking finds the wrong labels better than chance


def test_a_labels_file_that_disagrees_with_the_data_set_is_refused(tmp_path: Path) -> None:
    clean, worse = _write_cifar_n(tmp_path / "f.pt")
    torch.save({"clean_label": np.roll(clean, 1), "worse_label": worse}, tmp_path / "f.pt")
    cfg = _cfg(tmp_path, {"path": str(tmp_path / "f.pt"), "key": "worse_label"})
    with pytest.raises(DataError, match="clean_label"):
        load_split(cfg, "digits", "train")


def test_the_noise_families_refuse_a_data_set_with_file_labels(tmp_path: Path) -> None:
    _write_cifar_n(tmp_path / "f.pt")
    cfg = _cfg(tmp_path, {"path": str(tmp_path / "f.pt"), "key": "worse_label"})
    cfg["detection"]["activate"] = True
    with pytest.raises(ConfigError, match="train on labels from a file"):
        preflight(cfg)
