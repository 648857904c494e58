"""End-to-end runs of the Snakemake DAG and the DVC stage on a tiny digits config."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mapd.config import validate_config
from mapd.experiments.report import all_jobs
from mapd.paths import Layout, seed_job

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is fastest and avoids oversubscription
    return env


def _tiny_config(tmp: Path, *, epochs: int = 2, subset: int = 300, name: str = "tiny") -> Path:
    cfg = {
        "name": name,
        "seeds": [0],
        "device": "cpu",
        "results": str(tmp / "results"),
        "defaults": {
            "cscores": {"method": "learning_speed", "epochs": 2},
            "probes": {"train_size": 5, "heldout_size": 5, "ood_blur_kernel": 3},
            "train": {
                "model": "small_cnn",
                "model_options": {"width": 8},
                "epochs": epochs,
                "batch_size": 64,
                "lr": 0.05,
                "crop_padding": 1,
                "flip": False,
            },
        },
        "datasets": {"digits": {"subset": subset}},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake_cmd(repo: Path, workdir: Path, config: Path, *args: str) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "-s",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(repo / "profiles" / "default"),
        "--configfile",
        str(config),
        "--cores",
        "2",
        *args,
    ]


def _snakemake(
    repo: Path, workdir: Path, config: Path, *args: str, **kw
) -> subprocess.CompletedProcess:
    cmd = _snakemake_cmd(repo, workdir, config, *args)
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), **kw)


def _start_until(cmd: list[str], marker: Path, *, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group and return once ``marker`` exists."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=cwd,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{cmd[0]} ended (exit {proc.returncode}) before {marker}")
        time.sleep(0.2)
    if not marker.exists():
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"no {marker} within the time limit")
    return proc


def test_dag_end_to_end_then_nothing_to_do(repo_root: Path, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path)
    first = _snakemake(repo_root, tmp_path, config)
    assert first.returncode == 0, first.stderr[-3000:]
    lay = Layout(str(tmp_path / "results"))
    for path in (
        lay.report(),
        lay.metrics("audit"),
        lay.figure("digits", "fig3.png"),
        lay.figure("digits", "fig4.png"),
        lay.figure("digits", "fig3.svg"),
        f"{lay.assign('digits', 0)}/metadata.parquet",
        f"{lay.run('digits', 0)}/loss.npy",
        lay.summary("digits"),
        lay.cscores("digits"),
    ):
        assert Path(path).is_file(), path
    metrics = json.loads(Path(lay.metrics("audit")).read_text())
    assert 0.0 <= metrics["digits"]["heldout_6-probe"]["mean"] <= 1.0
    html = Path(lay.report()).read_text()
    assert html.count("data:image/png;base64,") >= 2 and "Held-out probe accuracy" in html
    # every job of the DAG wrote its log and its timing file, and the report lists exactly them
    cfg = validate_config(yaml.safe_load(config.read_text()))
    jobs = all_jobs(cfg)
    expected = {"data", "cscores", "probes", "train", "assign", "figures", "issues"}
    assert {s for s, _ in jobs} >= expected
    for step, job in jobs:
        assert Path(lay.log(step, job)).is_file() and Path(lay.timing(step, job)).is_file(), job
    written = sorted(Path(lay.folder("timing")).rglob("*.tsv"))
    assert written == sorted(Path(lay.timing(s, j)) for s, j in jobs)
    for step, job in jobs:
        assert f'<td class="txt">{step}/{job}</td>' in html
    again = _snakemake(repo_root, tmp_path, config, "-n")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_killed_training_resumes_from_checkpoint(repo_root: Path, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, epochs=6, subset=600)
    lay = Layout(str(tmp_path / "results"))
    partial = Path(lay.partial(lay.run("digits", 0)))
    proc = _start_until(
        _snakemake_cmd(repo_root, tmp_path, config, "all_train"), partial / "checkpoint.pt"
    )
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: snakemake and its `mapd train` child
    proc.wait(timeout=120)
    assert not Path(lay.run("digits", 0)).exists()
    rerun = _snakemake(repo_root, tmp_path, config, "all_train")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = Path(lay.log("train", seed_job("digits", 0))).read_text()
    assert "resuming from" in log
    loss = np.load(Path(lay.run("digits", 0)) / "loss.npy")
    rows = len(pd.read_parquet(Path(lay.probes("digits", 0)) / "examples.parquet"))
    assert loss.shape == (rows, 6) and np.isfinite(loss).all()
    assert not partial.exists()


def test_paper_config_dry_run_lists_full_dag(repo_root: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-n",
            "--configfile",
            str(repo_root / "config/paper.yaml"),
            "--config",
            f"results={tmp_path}/paper",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    cfg = validate_config(yaml.safe_load((repo_root / "config/paper.yaml").read_text()))
    n = len(cfg["datasets"]) * len(cfg["seeds"])
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in text.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    for rule in ("train", "probes", "assign"):
        assert counts.get(rule) == n, f"{rule} x{n} not in the DAG: {counts}"
    # the label-noise grid: 2 data sets x 6 levels x (9 methods + 2 Fig. 7 runs) x 3 seeds
    from mapd.experiments.noise import grid

    assert counts.get("noise_train") == len(grid.cells(cfg)) == 2 * 6 * 11 * 3
    assert counts.get("noise_suite") == 2 * 6 * 3
    assert counts.get("noise_figures") == 2
    # detection: 2 data sets x 3 noise sources x 3 seeds; per cell a main run, AUM's threshold
    # run and 4 confident-learning folds
    cells = 2 * 3 * 3
    for rule, per_cell in (("det_train", 1), ("det_aum", 1), ("det_fold", 4), ("det_scores", 1)):
        assert counts.get(rule) == cells * per_cell, f"{rule}: {counts}"
    # prioritized training (Fig. 8): Clothing1M x 8 scorers x 3 seeds, one pool and one
    # irreducible-loss model per seed
    assert cfg["prioritized"]["datasets"] == ["clothing1m"]
    assert counts.get("prio_train") == 8 * 3 and counts.get("prio_figures") == 1
    assert counts.get("prio_data") == counts.get("prio_holdout") == 3
    # minority groups (Fig. 9): Waterbirds and CelebA x 3 seeds, one ERM run and a second stage
    # per detector (JTT, MAP-D) each
    assert cfg["groups"]["datasets"] == ["waterbirds", "celeba"]
    assert counts.get("groups_erm") == counts.get("groups_scores") == 2 * 3
    assert counts.get("groups_retrain") == 2 * 3 * 2 and counts.get("groups_figures") == 2


def test_lint_has_no_errors(repo_root: Path) -> None:
    out = subprocess.run(
        [str(BIN / "snakemake"), "--lint"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_invalid_config_stops_the_workflow_with_a_clear_message(
    repo_root: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"seeds": [0], "datasets": {"digits": {"train": {"epochs": -1}}}})
    )
    out = _snakemake(repo_root, tmp_path, bad, "-n")
    assert out.returncode != 0
    assert "datasets/digits/train/epochs" in out.stdout + out.stderr


@pytest.mark.skipif(
    shutil.which("git") is None, reason="git is needed to clone the repository for dvc"
)
def test_dvc_repro_runs_the_default_stage_then_is_a_no_op(repo_root: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo_root), str(clone)], check=True)
    # keep the default config's structure (digits, default results folder) but make it tiny
    cfg = yaml.safe_load((clone / "config/config.yaml").read_text())
    cfg["seeds"] = [0]
    cfg["defaults"]["cscores"]["epochs"] = 2
    cfg["defaults"]["train"].update(epochs=2, model_options={"width": 8})
    cfg["defaults"]["probes"].update(train_size=5, heldout_size=5)
    cfg["datasets"]["digits"] = {"subset": 300}
    # DVC's mechanics need one family; the audit trains
    for name in ("noise", "detection", "prioritized", "groups"):
        cfg[name]["activate"] = False
    (clone / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    env = _env()
    # the stage's outputs follow the active families: regenerate it as a user would
    dvc_yaml = [str(BIN / "mapd"), "dvc", "--config", "config/config.yaml", "--out", "dvc.yaml"]
    subprocess.run(dvc_yaml, cwd=clone, check=True, env=env)
    first = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=clone, capture_output=True, text=True, env=env
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (clone / "results/report/index.html").is_file() and (clone / "dvc.lock").is_file()
    second = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=clone, capture_output=True, text=True, env=env
    )
    assert second.returncode == 0
    assert "didn't change, skipping" in second.stdout or "up to date" in second.stdout, (
        second.stdout
    )
    # `dvc repro -f` interrupted mid-training, then run again: DVC deleted its outputs before
    # running, but the checkpoint lives outside them, so training resumes
    cfg["defaults"]["train"]["epochs"] = 30
    (clone / "config/config.yaml").write_text(yaml.safe_dump(cfg))
    lay = Layout(str(clone / "results"))
    ckpt = Path(lay.partial(lay.run("digits", 0))) / "checkpoint.pt"
    proc = _start_until([str(BIN / "dvc"), "repro", "-f"], ckpt, cwd=clone)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    assert not (Path(lay.run("digits", 0)) / "loss.npy").exists()
    third = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=clone, capture_output=True, text=True, env=env
    )
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "resuming from" in Path(lay.log("train", seed_job("digits", 0))).read_text()
    assert np.load(Path(lay.run("digits", 0)) / "loss.npy").shape[1] == 30


def test_a_dry_run_lint_or_unlock_writes_nothing(repo_root: Path, tmp_path: Path) -> None:
    config = _tiny_config(tmp_path)
    for args in (["-n"], ["--lint"], ["--unlock"]):
        out = _snakemake(repo_root, tmp_path, config, *args)
        assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_a_second_invocation_cannot_change_a_running_jobs_settings(
    repo_root: Path, tmp_path: Path
) -> None:
    """The reproduction of the config race: run A trains 6 epochs; while it runs, a dry run and
    a run B of 3 epochs on the same results folder (refused by the lock) must not change what
    A's jobs read."""
    config_a = _tiny_config(tmp_path, epochs=6, subset=600)
    other = tmp_path / "b"
    other.mkdir()
    config_b = _tiny_config(other, epochs=3, subset=600)
    cfg_b = yaml.safe_load(config_b.read_text())
    cfg_b["results"] = str(tmp_path / "results")  # the same results folder as A
    config_b.write_text(yaml.safe_dump(cfg_b))
    lay = Layout(str(tmp_path / "results"))
    proc = _start_until(
        _snakemake_cmd(repo_root, tmp_path, config_a, "all_train"),
        Path(lay.partial(lay.run("digits", 0))) / "checkpoint.pt",
    )
    os.killpg(proc.pid, signal.SIGSTOP)  # hold A mid-training while B comes and goes
    try:
        configs_before = sorted(Path(lay.folder("config")).iterdir())
        assert len(configs_before) == 1
        dry = _snakemake(repo_root, tmp_path, config_b, "all_train", "-n")
        assert dry.returncode == 0, dry.stderr[-2000:]
        refused = _snakemake(repo_root, tmp_path, config_b, "all_train")
        assert refused.returncode != 0
        assert "lock" in (refused.stdout + refused.stderr).lower()
        assert sorted(Path(lay.folder("config")).iterdir()) == configs_before
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=300) == 0
    loss = np.load(Path(lay.run("digits", 0)) / "loss.npy")
    assert loss.shape[1] == 6  # A's setting, not B's
    again = _snakemake(repo_root, tmp_path, config_a, "all_train", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_results_path_with_spaces_and_no_venv_on_path(repo_root: Path, tmp_path: Path) -> None:
    """Every path is quoted, and jobs run this interpreter's mapd without an activated venv."""
    work = tmp_path / "my work"
    work.mkdir()
    config = _tiny_config(work)
    cfg = yaml.safe_load(config.read_text())
    cfg["results"] = str(work / "my results")
    config.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in _env().items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # no venv: `mapd` is not on PATH
    cmd = _snakemake_cmd(repo_root, work, config)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lay = Layout(cfg["results"])
    assert Path(lay.report()).is_file()
    assert sorted(p.name for p in work.iterdir()) == [".snakemake", "config.yaml", "my results"]
    assert not (work / "my").exists()
    # the terminal shows one progress line per epoch, tagged with its job; the log has them too
    assert "[mapd" in out.stderr and "train digits/seed0] epoch 2/2" in out.stderr
    assert "epoch 2/2" in Path(lay.log("train", seed_job("digits", 0))).read_text()


def test_probe_sizes_beyond_the_data_stop_the_workflow_at_once(
    repo_root: Path, tmp_path: Path
) -> None:
    config = _tiny_config(tmp_path, subset=50)  # 5 data categories x 10 probes = 50: too many
    out = _snakemake(repo_root, tmp_path, config, "-n")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "need 50 source examples, but digits has only 50 training examples" in text
    assert not (tmp_path / "results").exists()
