#!/usr/bin/env python3
"""A real one-node SLURM cluster from Debian's packages, started without systemd, for the tests
(tests/batch/test_slurm.py) and for trying README's SLURM sweep on one machine.

    tools/slurm-local start [DIR]    # prints `export SLURM_CONF=DIR/slurm.conf`
    tools/slurm-local status [DIR]   # sinfo, squeue, sacct
    tools/slurm-local stop [DIR]     # every daemon and every job of this cluster
    tools/slurm-local packages       # the Debian packages it needs (.ci/run installs them)

Needs root and `apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server`.
Everything lives in DIR (default /tmp/lama-refine-slurm): the munge key and socket, a MariaDB
database for the accounting (so `sacct` gives real job states, as submitit needs), slurmdbd,
slurmctld and slurmd on free ports, their logs and pid files. Nothing under /etc is used or
changed, so a machine's own SLURM or munge, if any, is left alone.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("LAMA_REFINE_SLURM_DIR", "/tmp/lama-refine-slurm"))
CLUSTER = "lamarefine"
# README's sweep names this partition (hydra.launcher.partition=gpu); it is only a name here.
PARTITION = "gpu"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
PROGRAMS = (
    "munged",
    "mariadb-install-db",
    "mariadbd",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
)
DB_USER, DB_PASS = "slurm", "lama-refine-local"
# The order they start in; stopped in reverse.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


class ClusterError(RuntimeError):
    pass


def missing_programs() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [p for p in PROGRAMS if shutil.which(p, path=path) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}

    def pidfile(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    def log(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    # --- start ----------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Start every daemon and wait until the node is idle; on failure stop what started."""
        if os.geteuid() != 0:
            raise ClusterError("slurm-local runs the daemons as root: run it as root (or in a root container)")
        missing = missing_programs()
        if missing:
            raise ClusterError(f"missing {', '.join(missing)}: apt-get install -y {' '.join(PACKAGES)}")
        if self.running():
            raise ClusterError(f"a cluster is already running in {self.root}: tools/slurm-local stop {self.root}")
        if self.root.exists():
            shutil.rmtree(self.root)
        for sub in ("etc", "run", "log", "munge", "db", "ctld", "spool"):
            (self.root / sub).mkdir(parents=True, mode=0o755)
        self.root.chmod(0o755)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        ports = {name: free_port() for name in ("ctld", "d", "dbd", "db")}
        self._start_munge()
        self._start_mariadb(ports["db"], deadline=time.monotonic() + timeout)
        self._write_configs(ports)
        self._daemon("slurmdbd")
        self._wait(
            lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0,
            "slurmdbd to answer",
            timeout,
        )
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self._daemon("slurmctld", "-c")  # -c: no state from an earlier cluster in this folder
        self._daemon("slurmd")
        self._wait(
            lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle",
            "the node to be idle in sinfo",
            timeout,
        )

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={m / 'munge.socket'}",
                f"--pid-file={self.pidfile('munged')}",
                f"--log-file={self.log('munged')}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        self._wait(lambda: self.pidfile("munged").exists() and (m / "munge.socket").exists(), "munged", 30)

    def _start_mariadb(self, port: int, deadline: float) -> None:
        data, sock = self.root / "db" / "data", self.root / "db" / "mysqld.sock"
        self.run(
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            timeout=120,
        )
        # Small InnoDB files and buffers: this database holds a few job records.
        with open(self.log("mariadbd"), "ab") as out:
            proc = subprocess.Popen(
                [
                    "mariadbd",
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={sock}",
                    f"--port={port}",
                    "--bind-address=127.0.0.1",
                    "--user=root",
                    f"--pid-file={self.pidfile('mariadbd')}",
                    "--innodb-buffer-pool-size=16M",
                    "--innodb-log-file-size=8M",
                    "--skip-log-bin",
                    "--performance-schema=OFF",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        self.pidfile("mariadbd").write_text(f"{proc.pid}\n")

        def ready() -> bool:
            if proc.poll() is not None:
                raise ClusterError(f"mariadbd exited {proc.returncode}; see {self.log('mariadbd')}")
            return (
                self.run(
                    "mariadb-admin", "--no-defaults", f"--socket={sock}", "-u", "root", "ping", check=False
                ).returncode
                == 0
            )

        self._wait(ready, "MariaDB", max(1.0, deadline - time.monotonic()))
        sql = (
            f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASS}'; "
            f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'127.0.0.1';"
        )
        self.run("mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql)

    def _write_configs(self, ports: dict[str, int]) -> None:
        node = self.run("slurmd", "-C").stdout.splitlines()[0]  # this host's CPUs, sockets, memory
        host = re.search(r"NodeName=(\S+)", node).group(1)
        hardware = node.replace(f"NodeName={host}", "").strip()
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.root / 'munge' / 'munge.socket'}\n"
        r = self.root
        self.conf.write_text(f"""\
# Written by tools/slurm-local: a one-node cluster in {r}.
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports["ctld"]}
SlurmdPort={ports["d"]}
{auth}CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / "ctld"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={self.pidfile("slurmctld")}
SlurmdPidFile={self.pidfile("slurmd")}
SlurmctldLogFile={self.log("slurmctld")}
SlurmdLogFile={self.log("slurmd")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports["dbd"]}
# The munge socket for the connections to slurmdbd (AuthInfo covers the others).
AccountingStoragePass={self.root / "munge" / "munge.socket"}
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or out of time.
KillWait=5
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        dbd = self.conf.parent / "slurmdbd.conf"  # read from SLURM_CONF's folder
        dbd.write_text(f"""\
{auth}DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports["dbd"]}
SlurmUser=root
PidFile={self.pidfile("slurmdbd")}
LogFile={self.log("slurmdbd")}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports["db"]}
StorageUser={DB_USER}
StoragePass={DB_PASS}
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read (it holds the password)

    def _spawn(self, daemon: str, cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ClusterError(
                f"{daemon} did not start ({proc.returncode}): {proc.stderr.strip()}; see {self.log(daemon)}"
            )

    def _daemon(self, daemon: str, *args: str) -> None:
        """Start a SLURM daemon (it forks and writes its pid file)."""
        self._spawn(daemon, [daemon, *args])
        self._wait(lambda: self.pid(daemon) is not None, f"{daemon}'s pid file", 30)

    def _wait(self, ready, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > end:
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {self.root / 'log'}")
            time.sleep(0.3)

    # --- status and stop ------------------------------------------------------------------------

    def pid(self, daemon: str) -> int | None:
        """The daemon's pid while that process runs."""
        try:
            pid = int(self.pidfile(daemon).read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def running(self) -> list[str]:
        return [d for d in DAEMONS if self.pid(d) is not None]

    def members(self) -> list[int]:
        """Every process this cluster's daemons started: job steps (slurmstepd) and jobs with
        their children, i.e. those whose environment names this cluster's slurm.conf and either
        a SLURM job or slurmstepd. A user's shell or sweep that merely exported SLURM_CONF is not
        one of them."""
        marker = f"SLURM_CONF={self.conf}".encode()
        daemons = {self.pid(d) for d in DAEMONS}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in daemons or int(entry.name) == os.getpid():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                stepd = (entry / "comm").read_text().strip() == "slurmstepd"
            except OSError:
                continue
            if marker in env and (stepd or any(v.startswith(b"SLURM_JOB_ID=") for v in env)):
                found.append(int(entry.name))
        return found

    def status(self) -> str:
        lines = [f"cluster in {self.root}: running {', '.join(self.running()) or 'nothing'}"]
        if self.pid("slurmctld"):
            for cmd in (("sinfo",), ("squeue",), ("sacct", "-a", "-X", "-o", "JobID,JobName,State,ExitCode,Elapsed")):
                proc = self.run(*cmd, check=False)
                lines += [f"$ {' '.join(cmd)}", (proc.stdout + proc.stderr).rstrip()]
        return "\n".join(lines)

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job, then stop the daemons in reverse order; whatever does not end on
        SIGTERM gets SIGKILL. Afterwards no process of this cluster runs."""
        if self.pid("slurmctld") is not None:
            self.run("scancel", "--full", "--user=root", check=False)
        for daemon in reversed(DAEMONS):
            pid = self.pid(daemon)
            if pid is not None:
                _terminate([pid], timeout)
        _terminate(self.members(), timeout)
        if self.running() or self.members():
            raise ClusterError(f"could not stop {self.running() + self.members()}")


def _terminate(pids: list[int], timeout: float) -> None:
    for pid in pids:
        with _gone():
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while pids and time.monotonic() < end:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    for pid in pids:
        with _gone():
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        while _alive(pid) and time.monotonic() < end + 5:
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class _gone:
    """Ignore a process that ended meanwhile."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is ProcessLookupError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slurm-local", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status", "packages"))
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR, help=f"state folder (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    if args.command == "packages":
        print(" ".join(PACKAGES))
        return 0
    cluster = Cluster(args.dir.resolve())
    try:
        if args.command == "start":
            cluster.start()
            print(cluster.status())
            print(f"\nexport SLURM_CONF={cluster.conf}")
        elif args.command == "stop":
            cluster.stop()
            print(f"stopped the cluster in {cluster.root}")
        else:
            print(cluster.status())
    except ClusterError as e:
        print(f"slurm-local: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
