"""Where a benchmark's runs and records live, and who is running what.

A run writes its record (JSON) into its own directory; a finished record is reused instead of
running again when its job's spec matches, whether it lies in the run directory or in `records`
(the records committed from another machine).

Claims are lock directories holding the worker's pid and host, so the workers of one store may run
on several machines over a shared filesystem (NFS, Lustre). A claim appears complete or not at all
(a filled directory renamed into place: the rename fails when the lock exists, on local disks and
NFS alike). While its job runs, the holder touches the claim every `lease / 10` seconds (its
heartbeat). A claim is stale, and taken over, when its heartbeat is older than `lease`, or when it
was made on this host by a process that is gone; a claim from another host is never judged by a
local pid. Ages are read on the filesystem's own clock, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.experiments.jobs import Job, Portable
from aihf.io import write_json
from aihf.safety import safe_child


def read_record(path: Path) -> dict[str, Any]:
    """A JSON record; a damaged one is named (file and line), not skipped."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: not a JSON job record ({err.msg})") from None


@dataclass
class Store:
    """Runs under `root`; `run_dir(job)` holds `record_name`; `records` is a read-only directory
    of NAME.json copies of finished records (from an earlier machine)."""

    root: Path
    record_name: str = "eval.json"
    records: Path | None = None
    layout: Callable[[Path, Job], Path] | None = None  # default: ROOT/runs/NAME
    portable: Portable | None = None  # how specs compare across machines (Job.matches)
    lease: float = 600.0  # seconds without a heartbeat after which a claim is stale
    _beats: dict[Path, threading.Event] = field(default_factory=dict, init=False, repr=False, compare=False)
    # a record as read, brought to the current key names (records written before a rename still match)
    canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def read(self, path: Path) -> dict[str, Any]:
        record = read_record(path)
        return self.canonical(record) if self.canonical else record

    def run_dir(self, job: Job) -> Path:
        """Where `job` runs; a name that would lead outside the store (`../`, absolute) is refused."""
        if self.layout:
            return safe_child(
                self.root, os.path.relpath(self.layout(self.root, job), self.root), "run directory"
            )
        return safe_child(self.root / "runs", job.name, "job name")

    def record_path(self, job: Job) -> Path:
        return self.run_dir(job) / self.record_name

    def finished(self, job: Job) -> dict[str, Any] | None:
        """The finished record of `job` (same spec, no error): its run's, else its copy in `records`."""
        paths = [self.record_path(job)]
        paths += [safe_child(self.records, f"{job.name}.json", "job name")] if self.records else []
        for path in (p for p in paths if p.is_file()):
            saved = self.read(path)
            if job.matches(saved, self.portable) and "error" not in saved:
                return saved
        return None

    def all_records(self) -> Iterator[dict[str, Any]]:
        """Every record here and in `records` (finished or not), for estimates over past runs."""
        paths = sorted(self.root.glob(f"runs/*/{self.record_name}")) if self.layout is None else []
        paths += sorted(self.records.glob("*.json")) if self.records else []
        return map(self.read, paths)

    def open_run(self, job: Job) -> bool:
        """Mark the run directory as `job`'s (RUN/job.json holds its spec); True when an earlier
        attempt of the same spec was there (its checkpoints may be resumed). Anything a different
        spec left is cleared first, so a run never resumes from another setting's state."""
        run_dir, spec = self.run_dir(job), dict(job.spec)
        path = run_dir / "job.json"
        same = path.is_file() and self.read(path) == spec
        if not same and run_dir.exists():
            shutil.rmtree(run_dir)
        write_json(path, spec)
        return same

    def save(self, job: Job, record: dict[str, Any]) -> None:
        write_json(self.record_path(job), record)

    def export(self, job: Job, record: dict[str, Any], directory: Path) -> None:
        """A finished record copied to DIRECTORY/NAME.json (to commit, and reuse with `records`)."""
        write_json(safe_child(directory, f"{job.name}.json", "job name"), record)

    # --- claims ------------------------------------------------------------------------------------

    def lock_path(self, job: Job) -> Path:
        return self.root / "locks" / re.sub(r"[^\w.=,-]+", "_", job.name)

    def claim(self, job: Job) -> bool:
        """Take `job` for this process; False when a live claim (this host or another) holds it."""
        lock = self.lock_path(job)
        lock.parent.mkdir(parents=True, exist_ok=True)
        if lock.exists() and owner(lock, self.lease) is None and not _take_away(lock):
            return False
        me = Owner(hostname(), os.getpid())
        tmp = lock.with_name(f".claim-{me.pid}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)  # locks/ itself goes when its last claim is released
        (tmp / CLAIM_FILE).write_text(f"{me.pid}\n{me.host}\n")
        try:
            os.rename(tmp, lock)  # atomic: fails when another claim is in place
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        self._beats[lock] = stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(lock, me, self.lease / 10, stop), daemon=True)
        beat.start()
        return True

    def release(self, job: Job) -> None:
        """Drop this process's claim on `job` (one taken over by another worker is left alone)."""
        lock = self.lock_path(job)
        stop = self._beats.pop(lock, None)
        if stop is not None:
            stop.set()
        if read_owner(lock) in (None, Owner(hostname(), os.getpid())):
            _take_away(lock)
        with contextlib.suppress(OSError):  # the last lock out leaves no empty locks/ behind
            lock.parent.rmdir()

    def heartbeat(self, job: Job) -> None:
        """Mark this process's claim on `job` as alive now (the claim's thread does it every lease / 10)."""
        _touch(self.lock_path(job) / CLAIM_FILE)

    def holder(self, job: Job) -> int | None:
        """The pid of the live claim on `job` (on whichever host), else None."""
        found = owner(self.lock_path(job), self.lease)
        return found.pid if found else None

    def owner(self, job: Job) -> Owner | None:
        """The live claim on `job`, else None."""
        return owner(self.lock_path(job), self.lease)


CLAIM_FILE = "pid"  # "PID\nHOST\n"; a claim written before hosts were recorded is one line (this host)


def hostname() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: a process on a host."""

    host: str
    pid: int

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


def read_owner(lock: Path) -> Owner | None:
    """The process named in `lock`, alive or not; None when there is no readable claim."""
    try:
        words = (lock / CLAIM_FILE).read_text().split()
        return Owner(words[1] if len(words) > 1 else hostname(), int(words[0]))
    except (FileNotFoundError, NotADirectoryError, IndexError, ValueError):
        return None


def owner(lock: Path, lease: float = 600.0) -> Owner | None:
    """The live holder of `lock`, else None (no claim, or a stale one).

    Stale: no heartbeat for `lease` seconds, or (this host only) the named process is gone."""
    found = read_owner(lock)
    if found is None:
        return None
    try:
        age = _filesystem_now(lock.parent) - (lock / CLAIM_FILE).stat().st_mtime
    except FileNotFoundError:
        return None
    if age > lease:
        return None
    if found.host != hostname():
        return found  # its pid means nothing here: held while its heartbeat is fresh
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return found


def holder(lock: Path, lease: float = 600.0) -> int | None:
    """The pid of the live process holding `lock`, else None."""
    found = owner(lock, lease)
    return found.pid if found else None


def _take_away(lock: Path) -> bool:
    """Remove the claim `lock` (stale, or this process's own); False if another worker got there first.

    Renamed aside first, so no worker ever sees a half-removed claim; a claim that changed between the
    reading and the rename (another worker's fresh one) is put back."""
    seen = read_owner(lock)
    aside = lock.with_name(f".stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(lock, aside)
    except OSError:
        return False
    if read_owner(aside) != seen:
        with contextlib.suppress(OSError):
            os.rename(aside, lock)
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _heartbeat(lock: Path, me: Owner, every: float, stop: threading.Event) -> None:
    """Touch the claim every `every` seconds until released (or until it is no longer ours)."""
    while not stop.wait(every) and read_owner(lock) == me:
        _touch(lock / CLAIM_FILE)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _filesystem_now(directory: Path) -> float:
    """The current time on the clock that stamps `directory`'s files (the file server's, on NFS)."""
    probe = directory / f".now-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
        return probe.stat().st_mtime
    except OSError:
        return time.time()
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
