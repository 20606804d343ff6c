"""The queue: which jobs run where and when, with one set of rules for every benchmark.

- A job whose finished record is in the store is reused, never rerun (resume after a kill, or a
  record from another machine).
- `shard=(i, n)` takes every n-th job from the i-th, for processes or machines that share nothing.
- A job is claimed before it runs; one held by another live process (on this machine or another that
  shares the store's filesystem) is left to it.
- `deadline`: a job expected to end after it is not started (postponed), so a session or batch slot
  that ends then cuts nothing short; a job of unknown length starts while any time is left.
- A job that fails is recorded with its error and the others still run; the caller lists the failed
  ones and exits non-zero. `run_job` turns its own failure into a record with an "error" (and keeps
  the traceback there); anything it raises (a kill, a bug in the runner) stops the pass.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aihf.errors import InputError, RunFailed
from aihf.experiments.jobs import Job
from aihf.experiments.store import Store

RunJob = Callable[[Job], dict[str, Any]]


class JobsFailed(RunFailed):
    """Raised after a pass in which some jobs failed (every other job ran, the report is written); the
    CLI prints it as one line and exits with code 1, also from inside `aihf quickstart`."""

    def __init__(self, names: list[str], where: str) -> None:
        super().__init__(f"{len(names)} job(s) failed: {', '.join(names)} (tracebacks in {where})")
        self.names = names


@dataclass
class Outcome:
    """What a pass over the queue did: the records of the selected jobs that are finished (reused
    or run now, in job order) and the names of those that failed, were postponed or were held."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def parse_shard(text: str, flag: str = "--shard") -> tuple[int, int]:
    """ "I/N" -> (I, N) with 0 <= I < N."""
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise InputError(f"{flag} {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


def select(jobs: Sequence[Job], shard: tuple[int, int] | None = None) -> list[Job]:
    """This shard's jobs: every n-th from the i-th (all of them without a shard)."""
    return [job for i, job in enumerate(jobs) if not shard or i % shard[1] == shard[0]]


def run_queue(
    jobs: Sequence[Job],
    run_job: RunJob,
    store: Store,
    selected: Iterable[Job] | None = None,
    train: bool = True,
    deadline: float | None = None,
    expected: Callable[[Job], float | None] | None = None,
    label: str | None = "bench",
) -> Outcome:
    """One pass over `selected` (default: every job): reuse, postpone, claim and run.

    `train=False` runs nothing (a report of what has finished). `expected(job)`: the seconds a job
    should take, None if unknown (for `deadline`, a `time.time()` value). `label` prefixes the
    progress lines ("[bench 3/47] NAME"); None prints only what is postponed or held.
    """
    outcome = Outcome()
    for job in jobs if selected is None else selected:
        if label:
            print(f"[{label} {jobs.index(job) + 1}/{len(jobs)}] {job.name}", flush=True)
        done = store.finished(job)
        if done is not None:
            if label:
                print(f"[{label}] reusing the finished {job.name}", flush=True)
            outcome.records.append(done)
        elif not train:
            continue
        elif deadline is not None and ends_late(
            job, deadline, expected(job) if expected else None, label or "queue"
        ):
            outcome.postponed.append(job.name)
        elif not store.claim(job):
            holder = store.owner(job) or "another worker"
            print(f"[{label or 'queue'}] {job.name} runs in {holder}: left to it", flush=True)
            outcome.held.append(job.name)
        else:
            record = _run_claimed(job, run_job, store)
            outcome.records.append(record)
            if "error" in record:
                outcome.failed.append(job.name)
    return outcome


def _run_claimed(job: Job, run_job: RunJob, store: Store) -> dict[str, Any]:
    """`run_job(job)`, its lock released whatever happens."""
    try:
        return run_job(job)
    finally:
        store.release(job)


def failure(err: Exception) -> dict[str, Any]:
    """The record of a job that raised `err` (for a domain's `run_job`): one line and its traceback."""
    trace = traceback.format_exc()
    print(trace, flush=True)
    return {"error": f"{type(err).__name__}: {err}", "traceback": trace}


def ends_late(job: Job, deadline: float, expected: float | None, label: str = "bench") -> bool:
    """True (and says so) when `job` would end after `deadline`. A job whose length is not known yet
    starts while any time is left."""
    left = deadline - time.time()
    if left > (expected or 0.0):
        return False
    guess = f"expected {expected / 60:.0f} min" if expected is not None else "length unknown"
    print(f"[{label}] not starting {job.name}: {guess}, {max(left, 0) / 60:.0f} min left", flush=True)
    return True


def work(
    plan: Callable[[], list[tuple[Job | None, str]]],
    done: Callable[[Job], bool],
    run_job: RunJob,
    store: Store,
    wait: float = 60.0,
    deadline: float | None = None,
    expected: Callable[[Job], float | None] | None = None,
) -> list[str]:
    """Claim and run the ready jobs of a staged protocol until none is left; return the failed ones.

    `plan()` lists every job in priority order with why it cannot start yet ('' when it can; a None
    job stands for jobs not known yet, e.g. waiting on a budget). It is asked again after each job,
    so a finished stage unlocks the next. When every ready job is held by other workers, this one
    waits `wait` seconds; when none is ready at all (only failed or blocked ones), it stops.
    With a `deadline` (a `time.time()` value), a ready job `expected(job)` seconds long that would end
    after it is passed over for the next one in priority that fits (`ends_late`), and the worker stops
    when none fits: a session that ends then cuts no job short and leaves its core to shorter jobs.
    """
    failed: list[str] = []
    late: set[str] = set()  # time only runs out: a job that would end late stays late
    while True:
        pending = [(job, why) for job, why in plan() if job is None or not done(job)]
        if not pending:
            print("every job has finished", flush=True)
            return failed
        ready = [job for job, why in pending if job is not None and not why and job.name not in failed]
        if not ready:
            for job, why in pending:
                print(f"cannot start {job.name if job else 'the next stage'}: {why or 'failed'}", flush=True)
            return failed
        for job in ready:  # the first in priority that fits the deadline (lengths asked only this far)
            if deadline is not None and job.name not in late:
                length = expected(job) if expected else None
                if ends_late(job, deadline, length, "queue"):
                    late.add(job.name)
            if job.name in late:
                continue
            if store.claim(job):
                start = time.time()
                print(f"{time.strftime('%H:%M:%S')} start {job.name}", flush=True)
                if "error" in _run_claimed(job, run_job, store):
                    failed.append(job.name)
                print(
                    f"{time.strftime('%H:%M:%S')} done {job.name} in {time.time() - start:.0f} s", flush=True
                )
                break
        else:
            if all(job.name in late for job in ready):
                print(f"{len(late)} job(s) left for a later call (--time-limit)", flush=True)
                return failed
            time.sleep(wait)  # every ready job that fits is taken by another worker: wait for one to finish


def run_workers(names: Sequence[str], count: int, target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """`names` on one queue that `count` fresh processes take from (`target(*args, names)` with
    `names` an iterator over the queue): a worker that finishes early takes the next job instead of
    waiting on a fixed share. A worker that dies leaves its jobs to the caller's next pass."""
    import multiprocessing

    from aihf.threads import limit_threads, share

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
    queue = context.Queue()
    count = min(count, len(names))
    limit_threads(share(count))  # the children inherit the environment: each its share of the cores
    for name in [*names, *[None] * count]:  # one stop sign per worker
        queue.put(name)
    processes = [context.Process(target=_worker, args=(target, args, queue)) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()


def _worker(target: Callable[..., None], args: tuple[Any, ...], queue: Any) -> None:
    target(*args, iter(queue.get, None))
