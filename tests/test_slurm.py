"""The DAG on a real (one-node) SLURM through ``profiles/slurm``: every job goes through sbatch,
the outputs equal a local run's bit for bit, a training job cancelled by the scheduler resumes
from its checkpoint when resubmitted, and a GPU config's training jobs ask SLURM for GPUs.

Skipped (with the reason) where SLURM cannot run: not root, no apt-get to install it, or a
host with its own SLURM configuration.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from slurm_cluster import Cluster, Unavailable, start_cluster
from test_workflow import _env, _snakemake_cmd, _tiny_config

from mapd.paths import Layout, seed_job

pytestmark = pytest.mark.slow

# what README's SLURM section runs (plus -s/--directory: the test works in a temp folder);
# status checks every few seconds instead of the plugin's 40 s: the jobs here are short
SLURM_OPTIONS = ["--slurm-init-seconds-before-status-checks", "2"]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
EPOCHS = 12


def _slurm_cmd(repo: Path, workdir: Path, config: Path, *args: str) -> list[str]:
    return [
        *_snakemake_cmd(repo, workdir, config)[:5],  # snakemake -s Snakefile --directory DIR
        "--profile",
        str(repo / "profiles" / "slurm"),
        "--configfile",
        str(config),
        *SLURM_OPTIONS,
        *args,
    ]


def _submissions(log: str) -> list[tuple[str, str]]:
    """(rule, SLURM job id) of every submission in a Snakemake log."""
    return [(re.search(r"/rule_([^/]+)/", p).group(1), j) for j, p in SUBMITTED.findall(log)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    try:
        c = start_cluster(tmp_path_factory.mktemp("slurm"))
    except Unavailable as e:
        pytest.skip(str(e))
    yield c
    c.stop()  # also when a test failed: every daemon it started, by process id


@pytest.fixture(scope="module")
def runs(cluster: Cluster, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A local run and a SLURM run of the tiny config (training up to the runs); the SLURM
    run's training job is cancelled by ``scancel`` after its first checkpoint."""
    local_dir, slurm_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("onslurm")
    configs = {}
    for d in (local_dir, slurm_dir):
        configs[d] = _tiny_config(d, epochs=EPOCHS, subset=600)
    local_log = local_dir / "snakemake.log"
    log_file = slurm_dir / "snakemake.log"
    with open(local_log, "w") as local_out, open(log_file, "w") as out:
        local = subprocess.Popen(
            _snakemake_cmd(repo_root, local_dir, configs[local_dir], "all_train"),
            stdout=local_out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        proc = subprocess.Popen(
            _slurm_cmd(repo_root, slurm_dir, configs[slurm_dir], "all_train"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        try:
            lay = Layout(str(slurm_dir / "results"))
            checkpoint = Path(lay.partial(lay.run("digits", 0))) / "checkpoint.pt"
            deadline = time.time() + 600
            while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            train_jobs = [j for r, j in _submissions(log_file.read_text()) if r == "train"]
            assert checkpoint.exists() and train_jobs, log_file.read_text()[-3000:]
            subprocess.run(["scancel", train_jobs[0]], check=True)
            rc = proc.wait(timeout=900)
            assert local.wait(timeout=900) == 0, local_log.read_text()[-3000:]
        finally:  # on failure: no Snakemake left polling a cluster that is going away
            for p in (local, proc):
                if p.poll() is None:
                    p.terminate()
                    p.wait(60)
    log = log_file.read_text()
    assert rc == 0, log[-4000:]
    return {
        "local": Layout(str(local_dir / "results")),
        "slurm": lay,
        "slurm_dir": slurm_dir,
        "config": configs[slurm_dir],
        "log": log,
        "cancelled": train_jobs[0],
    }


def test_every_job_went_through_sbatch(runs: dict, cluster: Cluster) -> None:
    subs = _submissions(runs["log"])
    # the DAG up to the runs: C-scores, the probe suite, training (cancelled, then resubmitted)
    assert sorted({r for r, _ in subs}) == ["cscores", "probes", "train"], runs["log"][-3000:]
    assert len(subs) == 4 and [r for r, _ in subs].count("train") == 2
    # no rule ran outside SLURM: every job Snakemake ran is one of the submissions
    ran = re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", runs["log"], flags=re.M)
    assert sorted(r for r in ran if r != "all_train") == ["cscores", "probes", "train"]
    for rule, jobid in subs:
        shown = cluster.show_job(jobid)
        state = re.search(r"JobState=(\w+)", shown).group(1)
        want = "CANCELLED" if jobid == runs["cancelled"] else "COMPLETED"
        assert state == want, (rule, jobid, shown)
        partition = re.search(r"Partition=(\w+)", shown).group(1)
        assert partition == ("gpu" if rule in ("train", "cscores") else "cpu")
    print("SLURM job ids:", ", ".join(f"{r}={j}" for r, j in subs))


def test_outputs_equal_the_local_run(runs: dict) -> None:
    local, slurm = runs["local"], runs["slurm"]
    a = np.load(local.cscores("digits"))
    b = np.load(slurm.cscores("digits"))
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    for name in ("examples.parquet",):
        pd.testing.assert_frame_equal(
            pd.read_parquet(Path(local.probes("digits", 0)) / name),
            pd.read_parquet(Path(slurm.probes("digits", 0)) / name),
        )
    for curve in ("loss", "correct", "margin", "pred"):
        x = np.load(Path(local.run("digits", 0)) / f"{curve}.npy")
        y = np.load(Path(slurm.run("digits", 0)) / f"{curve}.npy")
        assert x.shape == (len(x), EPOCHS) and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)  # bit for bit on the CPU


def test_cancelled_training_resumed_from_its_checkpoint(runs: dict) -> None:
    slurm = runs["slurm"]
    log = Path(slurm.log("train", seed_job("digits", 0))).read_text()
    resumed = re.findall(r"resuming from \S+ after epoch (\d+)/(\d+)", log)
    assert resumed, log[-2000:]
    done, total = map(int, resumed[-1])
    assert 1 <= done < total == EPOCHS  # it was cancelled mid-training, not after it


def test_gpu_config_requests_gpus_from_slurm(runs: dict, cluster: Cluster, repo_root: Path) -> None:
    """A config on CUDA with 2 data-parallel processes: the training job asks SLURM for 2 GPUs.
    A dry submission: the job is queued held (the node's GPUs are fake), inspected, cancelled."""
    cfg = yaml.safe_load(runs["config"].read_text())
    cfg["device"] = "cuda"
    cfg["defaults"]["train"]["processes"] = 2
    gpu_config = runs["slurm_dir"] / "config_gpu.yaml"
    gpu_config.write_text(yaml.safe_dump(cfg))
    cmd = [
        *_slurm_cmd(repo_root, runs["slurm_dir"], gpu_config, "all_train", "--retries", "0"),
        # the data set's train section changed, which the C-scores depend on too: keep them
        # (and the probes), submit only the training job
        *("--rerun-triggers", "mtime", "--forcerun", "train"),
        *("--set-resources", "train:slurm_partition=gpu", "train:slurm_extra='--hold'"),
    ]
    log_file = runs["slurm_dir"] / "snakemake_gpu.log"
    with open(log_file, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())
        try:
            deadline = time.time() + 300
            while not _submissions(log_file.read_text()) and proc.poll() is None:
                assert time.time() < deadline, log_file.read_text()[-3000:]
                time.sleep(0.5)
            subs = _submissions(log_file.read_text())
            assert [rule for rule, _ in subs] == ["train"], log_file.read_text()[-3000:]
            shown = cluster.show_job(subs[0][1])
            subprocess.run(["scancel", subs[0][1]], check=True)  # Snakemake sees it fail
            proc.wait(300)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C: Snakemake cancels its jobs
                proc.wait(120)
    assert re.search(r"TresPerJob=\S*gpu[:=]2", shown), shown
    assert "Partition=gpu" in shown and "JobHeldUser" in shown
    assert "--gpus 2 train" in log_file.read_text()  # the job pins its 2 GPUs (mapd.slots)
