"""One job done once, however many runs share an outdir: a claim file per job being worked on.

Before working on a job a run creates `outdir/.lama-refine/claims/<job>.claim` with
`O_CREAT | O_EXCL`, holding its host, pid, start time and a run id; the create either makes the
file or fails because it exists, for exactly one of any number of runs at once. The claim is
removed when the job ends (done or failed). Another run that finds it skips the job (`N claimed by
another run`), unless the claim is stale:

- on the same host, its process is gone (killed, or a requeued shard whose first run died);
- on any host, its heartbeat is older than `STALE_AFTER_S`: while a run holds a claim a thread
  touches the file every `HEARTBEAT_S`, so only a dead or frozen holder stops refreshing it.
  The heartbeat is compared with the claims folder's own clock (a file touched there), so clocks
  that differ between machines do not matter.

A stale claim is renamed away (one contender wins the rename), checked to be the claim judged
stale, and the job claimed afresh. Before writing its output a run checks that the claim is
still its own, so in the rare race that hands one job to two runs only one writes it.

The exclusive create is atomic on local disks, NFSv3 and later (v2 clients emulate it with a
window), Lustre, GPFS and CephFS; not on some FUSE and object-store mounts (s3fs, gcsfuse),
where two runs may both do a job (no output is damaged: outputs are renamed into place).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("lama_refine")

CLAIMS = Path(".lama-refine") / "claims"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 20 missed heartbeats: a holder that is only slow (NFS hiccups) keeps its job
SUFFIX = ".claim"


def claim_name(job_key: str) -> str:
    """A file name for the job whose output is `job_key` (relative to outdir), unique per key."""
    name = quote(job_key, safe="") + SUFFIX
    if len(name) > 200:  # file names stop at 255 bytes
        import hashlib

        name = hashlib.sha256(job_key.encode()).hexdigest() + SUFFIX
    return name


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


class Claims:
    """The claims of one run in `folder` (`outdir/.lama-refine/claims`). Use as a context
    manager: the heartbeat thread runs inside it."""

    def __init__(self, folder: Path, heartbeat_s: float | None = None, stale_after_s: float | None = None):
        self.folder = folder
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
        self.host = socket.gethostname()
        self.run_id = uuid.uuid4().hex
        self.held: dict[Path, str] = {}  # claim file -> the token written into it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._skew = 0.0  # the claims folder's clock minus ours

    # --- the run ---------------------------------------------------------------------------------

    def __enter__(self) -> Claims:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._skew = self._measure_skew()
        self._thread = threading.Thread(target=self._beat, name="lama-refine-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for path in list(self.held):
            self.release(path)

    def _measure_skew(self) -> float:
        probe = self.folder / f".clock.{self.run_id}"
        try:
            probe.touch()
            skew = probe.stat().st_mtime - time.time()
            probe.unlink()
            return skew
        except OSError:
            return 0.0

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                held = list(self.held)
            for path in held:
                try:
                    os.utime(path)
                except OSError as e:  # taken over, or the folder is gone: the write check will tell
                    log.debug("cannot refresh the claim %s (%s)", path, e)

    # --- one job ---------------------------------------------------------------------------------

    def path(self, job_key: str) -> Path:
        return self.folder / claim_name(job_key)

    def acquire(self, job_key: str) -> Path | None:
        """Claim the job: the claim file, or None where a live claim of another run holds it."""
        path = self.path(job_key)
        for _ in range(3):
            token = uuid.uuid4().hex
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale(path):
                    return None
                continue
            try:
                os.write(
                    fd,
                    json.dumps(
                        {
                            "host": self.host,
                            "pid": os.getpid(),
                            "run": self.run_id,
                            "token": token,
                            "start": time.time(),
                        }
                    ).encode(),
                )
            finally:
                os.close(fd)
            with self._lock:
                self.held[path] = token
            return path
        return None

    def owns(self, path: Path) -> bool:
        """Whether the claim file is still this run's (nobody took it over)."""
        holder = read_claim(path)
        return holder is not None and holder.get("token") == self.held.get(path)

    def release(self, path: Path) -> None:
        with self._lock:
            token = self.held.pop(path, None)
        holder = read_claim(path)
        if token is not None and holder is not None and holder.get("token") == token:
            path.unlink(missing_ok=True)

    # --- other runs' claims ----------------------------------------------------------------------

    def is_stale(self, holder: dict | None, mtime: float) -> bool:
        """A claim is stale when its heartbeat is older than the timeout, or, on this host, its
        process is gone. A claim not yet written (`holder` None, its creator between the create and
        the write) is judged by its age alone."""
        if time.time() + self._skew - mtime > self.stale_after_s:
            return True
        if holder is None or holder.get("host") != self.host:
            return False
        try:
            pid = int(holder["pid"])
        except (KeyError, TypeError, ValueError):
            return False
        return pid != os.getpid() and not pid_alive(pid)

    def _take_over_if_stale(self, path: Path) -> bool:
        """Remove a stale claim so that the job can be claimed again; False where the claim is live.
        True also where the claim vanished meanwhile (its holder finished): try again."""
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return True
        holder = read_claim(path)
        if not self.is_stale(holder, mtime):
            return False
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True  # another run took it over first; its fresh claim decides on the next try
        moved = read_claim(aside)
        if (moved or {}).get("token") != (holder or {}).get("token"):
            # A fresh claim made between our look and the rename: put it back, unless yet another
            # run has claimed the job since (then that one holds it, and the fresh claim's owner
            # finds its claim gone before it writes).
            try:
                os.link(aside, path)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    log.debug("cannot restore the claim %s (%s)", path, e)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.info("%s: taking over a stale claim (%s)", path.name, describe(holder))
        return True


def read_claim(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(holder: dict | None) -> str:
    if holder is None:
        return "an unreadable claim"
    return f"host {holder.get('host')}, pid {holder.get('pid')}"


__all__ = ["CLAIMS", "Claims", "HEARTBEAT_S", "STALE_AFTER_S", "claim_name", "pid_alive", "read_claim"]
