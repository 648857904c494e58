"""The `mapd` command line: the whole pipeline on a tiny digits config, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mapd.cli import main
from mapd.paths import Layout

CATEGORIES = ["typical", "atypical", "random_labels", "random_inputs", "corrupted", "ood"]
SUBSET, PER_ROLE, EPOCHS = 300, 5, 2
N_ROWS = SUBSET - 5 * 2 * PER_ROLE + 6 * 2 * PER_ROLE  # sources leave, all six categories join

TINY = {
    "name": "tiny",
    "seeds": [0],
    "device": "cpu",
    "defaults": {
        "cscores": {"method": "learning_speed", "epochs": 2},
        "probes": {
            "categories": CATEGORIES,
            "train_size": PER_ROLE,
            "heldout_size": PER_ROLE,
            "ood_blur_kernel": 3,
        },
        "train": {
            "model": "small_cnn",
            "model_options": {"width": 8},
            "epochs": EPOCHS,
            "batch_size": 64,
            "lr": 0.05,
            "crop_padding": 1,
            "flip": False,
            "amp": False,
        },
        "assign": {"k": 5},
    },
    "datasets": {"digits": {"subset": SUBSET}},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # tiny models: thread hand-offs cost more than they save, badly so on a busy machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config(tmp: Path, cfg: dict | None = None) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg or TINY))
    return path


def _mapd(*args: str | Path) -> int:
    return main([str(a) for a in args])


def _subprocess(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mapd.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every step of the pipeline once, in process, into the documented layout."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = _config(tmp)
    lay = Layout(str(tmp / "results"))
    paths = {
        "config": cfg,
        "summary": Path(lay.summary("digits")),
        "cscores": Path(lay.cscores("digits")),
        "probes": Path(lay.probes("digits", 0)),
        "run": Path(lay.run("digits", 0)),
        "assign": Path(lay.assign("digits", 0)),
    }
    common = ("--config", cfg, "--dataset", "digits")
    assert _mapd("data", *common, "--out", paths["summary"]) == 0
    assert _mapd("cscores", *common, "--out", paths["cscores"]) == 0
    assert (
        _mapd(
            "probes", *common, "--seed", 0, "--cscores", paths["cscores"], "--out", paths["probes"]
        )
        == 0
    )
    assert (
        _mapd("train", *common, "--seed", 0, "--probes", paths["probes"], "--out", paths["run"])
        == 0
    )
    assert (
        _mapd(
            "assign",
            *common,
            "--probes",
            paths["probes"],
            "--run",
            paths["run"],
            "--out",
            paths["assign"],
        )
        == 0
    )
    return paths


def test_data_summary(pipeline: dict[str, Path]) -> None:
    s = json.loads(pipeline["summary"].read_text())
    assert s["dataset"] == "digits" and set(s["splits"]) == {"train", "test"}
    assert s["splits"]["train"]["n"] == SUBSET  # the configured subset
    assert s["splits"]["test"]["n"] == 1797 - 1438  # sklearn's 1,797 digits minus the train split
    assert sum(s["splits"]["train"]["per_class"].values()) == SUBSET


def test_cscores_file(pipeline: dict[str, Path]) -> None:
    with np.load(pipeline["cscores"], allow_pickle=False) as f:
        assert set(f.files) == {"labels", "scores", "index", "method"}
        assert f["scores"].shape == (SUBSET,) and f["scores"].dtype == np.float64
        assert ((f["scores"] >= 0) & (f["scores"] <= 1)).all()
        assert str(f["method"]) == "learning_speed"


def test_probe_suite_files(pipeline: dict[str, Path]) -> None:
    d = pipeline["probes"]
    assert sorted(p.name for p in d.iterdir()) == [
        "examples.parquet",
        "meta.json",
        "probe_images.npy",
    ]
    t = pd.read_parquet(d / "examples.parquet")
    assert list(t.columns) == [
        "row",
        "orig_index",
        "category",
        "role",
        "label",
        "orig_label",
        "probe_row",
    ]
    assert len(t) == N_ROWS
    counts = t[t.role != "data"].groupby(["category", "role"]).size()
    assert (counts == PER_ROLE).all() and len(counts) == 12
    imgs = np.load(d / "probe_images.npy")
    assert imgs.dtype == np.uint8 and imgs.shape == (6 * 2 * PER_ROLE, 8, 8, 1)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["dataset"] == "digits" and meta["seed"] == 0
    assert meta["categories"] == CATEGORIES
    assert meta["cscore_source"] == "learning_speed"
    assert meta["settings"]["ood_blur_kernel"] == 3


def test_run_files(pipeline: dict[str, Path]) -> None:
    d = pipeline["run"]
    assert {"loss.npy", "correct.npy", "metrics.json", "model.pt"} <= {p.name for p in d.iterdir()}
    assert not d.with_name(d.name + ".partial").exists()  # in-progress state is cleaned up
    loss, correct = np.load(d / "loss.npy"), np.load(d / "correct.npy")
    assert loss.shape == (N_ROWS, EPOCHS) and loss.dtype == np.float32
    assert correct.shape == (N_ROWS, EPOCHS) and correct.dtype == np.bool_
    assert np.isfinite(loss).all()
    m = json.loads((d / "metrics.json").read_text())
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert all({"train_loss", "test_acc", "seconds"} <= e.keys() for e in m["epochs"])
    assert 0 <= m["final_test_acc"] <= 1 and m["recording"] == "eval"
    assert m["dataset"] == "digits" and m["seed"] == 0
    state = torch.load(d / "model.pt", weights_only=True)
    assert state["fc.weight"].shape[0] == 10


def test_assign_files(pipeline: dict[str, Path]) -> None:
    d = pipeline["assign"]
    meta = pd.read_parquet(d / "metadata.parquet")
    cols = ["row", "orig_index", "label", "orig_label", "role", "category"]
    held = json.loads((d / "heldout.json").read_text())
    used = held["settings"]["6-probe"]["categories"]  # the setting that assigns, in its order
    assert sorted(used) == sorted(CATEGORIES)
    scores = ["score_mapd", "score_mapd_knn", "score_loss"]  # the default assign/scores
    assert list(meta.columns) == cols + [f"p_{c}" for c in used] + ["assigned"] + scores
    assert len(meta) == N_ROWS
    # the paper's MAP-D score is p(random_labels) of the same k-NN; the read-out a probability
    np.testing.assert_array_equal(meta["score_mapd_knn"], meta["p_random_labels"])
    assert meta["score_mapd"].between(0, 1).all() and meta["score_mapd"].nunique() > N_ROWS / 2
    loss = np.load(pipeline["run"] / "loss.npy")
    np.testing.assert_allclose(meta["score_loss"], loss.astype(np.float64).mean(1))
    p = meta[[f"p_{c}" for c in used]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(meta["assigned"], np.asarray(used)[p.argmax(1)])
    csv = pd.read_csv(d / "metadata.csv", keep_default_na=False)
    assert len(csv) == N_ROWS and list(csv.columns) == list(meta.columns)
    np.testing.assert_array_equal(csv["assigned"], meta["assigned"])
    assert held["use"] == "6-probe" and held["k"] == 5
    assert set(held["settings"]) == {"4-probe", "6-probe"}
    for res in held["settings"].values():
        n_cat = len(res["categories"])
        conf = np.array(res["confusion"])
        assert conf.shape == (n_cat, n_cat) and conf.sum() == res["n"] == n_cat * PER_ROLE
        assert res["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())


def test_train_in_a_subprocess_reproduces_the_run(
    pipeline: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    res = _subprocess(
        "train",
        "--config",
        pipeline["config"],
        "--dataset",
        "digits",
        "--seed",
        0,
        "--probes",
        pipeline["probes"],
        "--out",
        out,
        "--threads",
        1,
    )
    assert res.returncode == 0, res.stderr
    assert "epoch 2/2" in res.stderr
    np.testing.assert_array_equal(np.load(out / "loss.npy"), np.load(pipeline["run"] / "loss.npy"))


# --- errors: exit code 2 and one line naming the problem ---------------------------------------


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("mapd: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_missing_config_file_subprocess(tmp_path: Path) -> None:
    res = _subprocess(
        "probes", "--config", tmp_path / "nope.yaml", "--dataset", "digits", "--seed", 0,
        "--out", tmp_path / "p",
    )  # fmt: skip
    assert res.returncode == 2
    line = _one_error_line(res.stderr)
    assert "config file not found" in line and "nope.yaml" in line


def test_invalid_config_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = json.loads(json.dumps(TINY))
    bad["defaults"]["train"]["epochs"] = -1
    cfg = _config(tmp_path, bad)
    code = _mapd("cscores", "--config", cfg, "--dataset", "digits", "--out", tmp_path / "c.npz")
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "defaults/train/epochs" in line and "-1" in line
    assert not (tmp_path / "c.npz").exists()


def test_probes_dir_missing(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-probes"
    code = _mapd(
        "train", "--config", pipeline["config"], "--dataset", "digits", "--seed", 0,
        "--probes", missing, "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(missing) in line and "examples.parquet" in line
    assert not (tmp_path / "run").exists()


def _assign(pipeline: dict[str, Path], run: Path, out: Path) -> int:
    return _mapd(
        "assign", "--config", pipeline["config"], "--dataset", "digits",
        "--probes", pipeline["probes"], "--run", run, "--out", out,
    )  # fmt: skip


def test_corrupt_loss_file(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(pipeline["run"], run)
    (run / "loss.npy").write_bytes(b"\x93NUMPY garbage, not an array")
    assert _assign(pipeline, run, tmp_path / "out") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "corrupt .npy file" in line and str(run / "loss.npy") in line
    # a valid array with the wrong number of rows
    np.save(run / "loss.npy", np.zeros((N_ROWS - 1, EPOCHS), dtype=np.float32))
    np.save(run / "correct.npy", np.zeros((N_ROWS - 1, EPOCHS), dtype=bool))
    assert _assign(pipeline, run, tmp_path / "out") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"probe suite has {N_ROWS} rows" in line
    assert not (tmp_path / "out").exists()


def test_nan_trajectories(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(pipeline["run"], run)
    loss = np.load(pipeline["run"] / "loss.npy")
    loss[[4, 9], 1] = np.nan
    np.save(run / "loss.npy", loss)
    assert _assign(pipeline, run, tmp_path / "out") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "NaN/inf in 2 rows" in line
    assert not (tmp_path / "out").exists()


# --- bad input found before any work, in one line ---------------------------------------------


def test_invalid_yaml_names_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0]\ndatasets:\n  digits: {}\n  x: y: z\n")
    assert _mapd("data", "--config", bad, "--dataset", "digits", "--out", tmp_path / "s") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{bad} is not valid YAML: line 4, column 7:" in line


def test_output_under_a_regular_file(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" / "summary.json"
    code = _mapd("data", "--config", pipeline["config"], "--dataset", "digits", "--out", out)
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "summary file" in line and f"{tmp_path / 'afile'} is a file" in line


def test_unwritable_output_folder_before_any_work(
    pipeline: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mapd.runtime as runtime

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(runtime.os, "access", lambda p, m: False if Path(p) == ro else real(p, m))
    called = []
    monkeypatch.setattr("mapd.experiments.audit.steps.train", lambda *a: called.append(a))
    code = _mapd(
        "train", "--config", pipeline["config"], "--dataset", "digits", "--seed", 0,
        "--probes", pipeline["probes"], "--out", ro / "run",
    )  # fmt: skip
    assert code == 2 and called == []  # refused before training
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot write the run folder in {ro}: permission denied" in line


def test_a_file_system_error_during_the_work_is_one_line(
    pipeline: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "x.npy"))

    monkeypatch.setattr("mapd.pipeline.data_summary", disk_full)
    code = _mapd(
        "data", "--config", pipeline["config"], "--dataset", "digits", "--out", tmp_path / "s"
    )
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"mapd: error: No space left on device: {tmp_path / 'x.npy'}"


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (
            ["audit", "--imagefolder", "x", "--epochs", "0"],
            "--epochs: expected a whole number >= 1",
        ),
        (["data", "--config", "c", "--dataset", "d", "--out", "o", "--threads", "-1"], "--threads"),
        (["probes", "--config", "c", "--dataset", "d", "--out", "o", "--seed", "-2"], "--seed"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(
    args: list[str], msg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_every_option_has_help() -> None:
    import argparse

    from mapd.cli import build_parser

    parser = build_parser()
    missing = [a.dest for a in parser._actions if not a.help and a.dest not in ("help", "command")]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in subs.choices.items():
        missing += [f"{name} {a.dest}" for a in sp._actions if not a.help]
    assert missing == []


def test_audit_epochs_go_with_imagefolder_only(
    pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _mapd("audit", "--config", pipeline["config"], "--epochs", "3") == 2
    assert "--epochs goes with --imagefolder" in _one_error_line(capsys.readouterr().err)


def test_a_step_exits_when_its_launching_shell_is_killed(
    pipeline: dict[str, Path], tmp_path: Path
) -> None:
    """A job's shell wrapper killed (e.g. by a scheduler): `mapd train` must not keep running
    as an orphan and write its output later."""
    import signal
    import time

    cfg = json.loads(json.dumps(TINY))
    cfg["defaults"]["train"]["epochs"] = 400
    cfg["results"] = str(tmp_path / "res")
    config = _config(tmp_path, cfg)
    out, partial = tmp_path / "run", tmp_path / "partial"
    cmd = (
        f"{sys.executable} -m mapd.cli --exit-with-parent train --config {config} --threads 1 "
        f"--dataset digits --seed 0 --probes {pipeline['probes']} --out {out} "
        f"--partial {partial} 2> {tmp_path / 'log'}; echo finished"  # not the last: no exec
    )
    shell = subprocess.Popen(["bash", "-c", cmd], start_new_session=True)
    deadline = time.time() + 120
    while not (partial / "checkpoint.pt").exists():
        assert time.time() < deadline and shell.poll() is None, (tmp_path / "log").read_text()
        time.sleep(0.1)
    children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(shell.pid, signal.SIGKILL)
    shell.wait()
    child = Path(f"/proc/{children[0]}")
    deadline = time.time() + 30
    while child.exists() and "Z" not in (child / "stat").read_text().split()[2]:
        assert time.time() < deadline, "mapd train kept running after its shell was killed"
        time.sleep(0.1)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
