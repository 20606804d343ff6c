"""Where a benchmark's runs and records live, and who is running what.

A run writes its record (JSON) into its own directory; a finished record is reused instead of
running again when its job's spec matches, whether it lies in the run directory or in `records`
(the records committed from another machine). Claims are lock directories holding the worker's pid:
a lock whose process is gone is taken over, so a killed worker never blocks its job for good. Locks
rely on pids, so the workers of one store share one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.experiments.jobs import Job, Portable
from aihf.io import write_json


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
    # a record as read, brought to the current key names (records written before a rename still match)
    canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def read(self, path: Path) -> dict[str, Any]:
        record = read_record(path)
        return self.canonical(record) if self.canonical else record

    def run_dir(self, job: Job) -> Path:
        return self.layout(self.root, job) if self.layout else self.root / "runs" / job.name

    def record_path(self, job: Job) -> Path:
        return self.run_dir(job) / self.record_name

    def finished(self, job: Job) -> dict[str, Any] | None:
        """The finished record of `job` (same spec, no error): its run's, else its copy in `records`."""
        paths = [self.record_path(job)]
        paths += [self.records / f"{job.name}.json"] if self.records else []
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
        write_json(directory / f"{job.name}.json", record)

    # --- claims ------------------------------------------------------------------------------------

    def lock_path(self, job: Job) -> Path:
        return self.root / "locks" / re.sub(r"[^\w.=,-]+", "_", job.name)

    def claim(self, job: Job) -> bool:
        """Take `job` for this process; False when a live process holds it."""
        lock = self.lock_path(job)
        lock.parent.mkdir(parents=True, exist_ok=True)
        if lock.exists() and holder(lock) is None:  # its worker died: take the stale lock away atomically
            stale = lock.with_name(f".stale-{lock.name}-{os.getpid()}")
            try:
                lock.rename(stale)
                shutil.rmtree(stale)
            except OSError:
                return False
        try:
            lock.mkdir()
        except FileExistsError:
            return False
        (lock / "pid").write_text(str(os.getpid()))
        return True

    def release(self, job: Job) -> None:
        lock = self.lock_path(job)
        shutil.rmtree(lock, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last lock out leaves no empty locks/ behind
            lock.parent.rmdir()

    def holder(self, job: Job) -> int | None:
        return holder(self.lock_path(job))


def holder(lock: Path) -> int | None:
    """The pid of the live process holding `lock`, else None."""
    try:
        pid = int((lock / "pid").read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid
