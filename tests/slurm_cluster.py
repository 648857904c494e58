"""A one-node SLURM cluster on 127.0.0.1 for tests: Debian's slurm-wlm and munge, daemons
started in the foreground from a temporary folder and stopped by process id.

Clients (sbatch, squeue, srun inside jobs) find the configuration at the default path
``/etc/slurm/slurm.conf``: the Snakemake plugin's job steps drop every ``SLURM_*`` variable,
``SLURM_CONF`` included, before their nested ``srun``. So the cluster links its files there and
refuses to start when a configuration already exists (a real SLURM host is never touched).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ETC = Path("/etc/slurm")
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
FAKE_GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full")


class Unavailable(Exception):
    """Why SLURM cannot run here (the test skips with this reason)."""


def install() -> None:
    """apt-get install slurm-wlm and munge unless their daemons are already there."""
    if all(shutil.which(d) for d in DAEMONS) and shutil.which("sbatch"):
        return
    if os.geteuid() != 0:
        raise Unavailable("SLURM is not installed and installing it needs root")
    if shutil.which("apt-get") is None:
        raise Unavailable("SLURM is not installed and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            raise Unavailable(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            # below what slurmd measures, or it marks the node invalid
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise Unavailable("no MemTotal in /proc/meminfo")


def slurm_conf(folder: Path, *, node: str, cpus: int, memory_mb: int, gpus: int) -> str:
    ctl, d = _free_port(), _free_port()
    return f"""\
ClusterName=mapdci
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctl}
SlurmdPort={d}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
# squeue must still list finished jobs when Snakemake asks (it polls every few seconds)
MinJobAge=3600
ReturnToService=2
# GPUs that do not exist (File=/dev/null): jobs asking for them are scheduled and their
# request is visible (scontrol show job), they just find no CUDA device
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    folder: Path
    node: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    linked: list[Path] = field(default_factory=list)

    def start(self, *, gpus: int = 2) -> None:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        conf = self.folder / "slurm.conf"
        conf.write_text(
            slurm_conf(
                self.folder,
                node=self.node,
                cpus=os.cpu_count() or 1,
                memory_mb=_memory_mb(),
                gpus=gpus,
            )
        )
        # one distinct existing device file per fake GPU (slurmd refuses duplicates)
        gres = "AutoDetect=off\n" + "".join(
            f"NodeName={self.node} Name=gpu File={dev}\n" for dev in FAKE_GPU_FILES[:gpus]
        )
        (self.folder / "gres.conf").write_text(gres)
        ETC.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            (ETC / name).symlink_to(self.folder / name)
            self.linked.append(ETC / name)
        f = self.folder
        self._spawn(
            "munged",
            ["munged", "-F", "-f", f"--socket={f}/munge.socket", f"--key-file={key}",
             f"--pid-file={f}/munged.pid", f"--log-file={f}/munged.log",
             f"--seed-file={f}/munged.seed"],
            ready=lambda: (f / "munge.socket").exists(),
        )  # fmt: skip
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"], ready=self._controller_up)
        self._spawn("slurmd", ["slurmd", "-D"], ready=self._node_idle)

    def _spawn(self, name: str, cmd: list[str], *, ready) -> None:
        out = open(self.folder / f"{name}.out", "wb")  # the daemon writes it
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.tail(name)}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not come up within 60 s: {self.tail(name)}")

    def tail(self, name: str) -> str:
        return (self.folder / f"{name}.out").read_text(errors="replace")[-2000:]

    def _controller_up(self) -> bool:
        return (
            subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.find("UP")
            >= 0
        )

    def _node_idle(self) -> bool:
        state = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True
        ).stdout
        return "idle" in state

    def show_job(self, jobid: str) -> str:
        return subprocess.run(
            ["scontrol", "show", "job", jobid], capture_output=True, text=True
        ).stdout

    def stop(self) -> None:
        """Cancel the cluster's jobs, stop each daemon it started (by pid), unlink its files."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in self.linked:
            path.unlink(missing_ok=True)


def start_cluster(folder: Path) -> Cluster:
    if os.geteuid() != 0:
        raise Unavailable("the SLURM test starts munged, slurmctld and slurmd: run it as root")
    if not Path("/proc/meminfo").exists():
        raise Unavailable("not a Linux host")
    install()
    for name in ("slurm.conf", "gres.conf"):
        if (ETC / name).is_symlink() and not (ETC / name).exists():
            (ETC / name).unlink()  # left by a test run killed before its clean-up
        if (ETC / name).exists():
            raise Unavailable(f"{ETC / name} exists: this host has its own SLURM set-up")
    cluster = Cluster(folder, socket.gethostname().split(".")[0])
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
