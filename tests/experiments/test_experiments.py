"""aihf.experiments: the job key, the store, the queue's rules and the report toolkit, on fake jobs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from aihf.errors import InputError
from aihf.experiments import queue
from aihf.experiments import store as store_module
from aihf.experiments.jobs import Job
from aihf.experiments.protocol import read_protocol
from aihf.experiments.report import (
    decide_claims,
    fmt,
    holm,
    iqm,
    markdown_table,
    mean_curve,
    pair_test,
    performance_profile,
    plot_performance_profiles,
    sd,
    stratified_bootstrap_ci,
    verdict,
)
from aihf.experiments.store import Owner, Store, holder


def job(method: str, seed: int, lr: float = 0.1) -> Job:
    return Job(method, seed, (("lr", lr),), f"{method}_s{seed}", {"config": {"lr": lr, "seed": seed}})


def test_a_record_is_reused_only_for_the_same_spec_here_or_in_the_records(tmp_path):
    store = Store(tmp_path / "out", records=tmp_path / "records")
    a = job("a", 0)
    assert store.finished(a) is None
    store.save(a, {"config": {"lr": 0.1, "seed": 0}, "metrics": {"x": 1}})
    assert store.finished(a)["metrics"] == {"x": 1}
    assert store.finished(job("a", 0, lr=0.2)) is None  # another config: not this job's record
    store.save(a, {"config": {"lr": 0.1, "seed": 0}, "error": "boom"})
    assert store.finished(a) is None  # a failed run is run again
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a_s0.json").write_text(json.dumps({"config": {"lr": 0.1, "seed": 0}, "m": 2}))
    assert store.finished(a)["m"] == 2  # another machine's record
    (tmp_path / "records" / "a_s0.json").write_text('{"config":\n')
    with pytest.raises(InputError, match=r"a_s0.json: line 2: not a JSON job record"):
        store.finished(a)
    assert job("a", 0).key == a.key != job("a", 0, lr=0.2).key


def test_a_run_directory_left_by_another_spec_is_cleared(tmp_path):
    store = Store(tmp_path)
    a = job("a", 0)
    assert store.open_run(a) is False
    (store.run_dir(a) / "checkpoint").mkdir()
    assert store.open_run(a) is True and (store.run_dir(a) / "checkpoint").is_dir()
    assert store.open_run(job("a", 0, lr=0.2)) is False
    assert sorted(p.name for p in store.run_dir(a).iterdir()) == ["job.json"]


def test_a_claim_is_held_by_a_live_pid_and_a_dead_ones_is_taken_over(tmp_path):
    store, a = Store(tmp_path), job("a", 0)
    assert store.claim(a) and not store.claim(a) and store.holder(a) == os.getpid()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (store.lock_path(a) / "pid").write_text(str(dead))
    assert holder(store.lock_path(a)) is None and store.claim(a)
    store.release(a)
    assert not (tmp_path / "locks").exists()  # the last lock out leaves nothing behind


def _dead_pid() -> int:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    return dead


def test_a_claim_from_another_host_is_held_until_its_heartbeat_is_older_than_the_lease(tmp_path, monkeypatch):
    """Two machines on one shared store: node-b never judges node-a's claim by a local pid (node-a's
    worker pid is dead here), only by its heartbeat; node-a's own dead worker is taken over at once."""
    store, a = Store(tmp_path, lease=600.0), job("a", 0)
    monkeypatch.setattr(store_module, "hostname", lambda: "node-a")
    assert store.claim(a)
    assert store.owner(a) == Owner("node-a", os.getpid())
    assert (store.lock_path(a) / "pid").read_text() == f"{os.getpid()}\nnode-a\n"
    store._beats.pop(store.lock_path(a)).set()  # node-a's worker dies: no more heartbeats
    claim = store.lock_path(a) / "pid"
    claim.write_text(f"{_dead_pid()}\nnode-a\n")
    monkeypatch.setattr(store_module, "hostname", lambda: "node-b")
    assert not store.claim(a) and store.owner(a).host == "node-a"  # a pid on another host: held
    old = claim.stat().st_mtime - 601
    os.utime(claim, (old, old))  # node-a's last heartbeat is older than the lease
    assert store.owner(a) is None and store.claim(a)
    assert store.owner(a) == Owner("node-b", os.getpid())
    monkeypatch.setattr(store_module, "hostname", lambda: "node-a")
    os.utime(claim, (old, old))
    store.heartbeat(a)  # node-b's worker is alive: its heartbeat renews the lease
    assert store.owner(a) == Owner("node-b", os.getpid()) and not store.claim(a)
    store.release(a)  # node-a's release leaves node-b's claim alone
    assert store.owner(a) == Owner("node-b", os.getpid())
    monkeypatch.setattr(store_module, "hostname", lambda: "node-b")
    store.release(a)
    assert not (tmp_path / "locks").exists()
    monkeypatch.setattr(store_module, "hostname", lambda: "node-a")
    assert store.claim(a)
    claim.write_text(f"{_dead_pid()}\nnode-a\n")  # on its own host a dead pid is stale at once
    assert store.owner(a) is None and store.claim(a)
    store.release(a)


def _claim_all(root: str, names: list[str], host: str, out: str, done: Any) -> None:
    store_module.hostname = lambda: host
    store = Store(Path(root))
    won = [n for n in names if store.claim(job(n, 0))]
    Path(out).write_text(json.dumps(won))
    done.wait()  # alive until every worker has tried: a dead worker's claims are stale on its host


def test_concurrent_claims_from_several_hosts_give_each_job_to_exactly_one_worker(tmp_path):
    """Four workers (two per "host") race for the same 30 jobs on one store: every job is won once, and
    every claim on disk names its winner (no claim is ever visible without its owner)."""
    import multiprocessing

    names = [f"j{i}" for i in range(30)]
    context = multiprocessing.get_context("fork")
    outs = [tmp_path / f"won{i}.json" for i in range(4)]
    done = context.Barrier(4)
    workers = [
        context.Process(target=_claim_all, args=(str(tmp_path), names, f"node-{i % 2}", str(out), done))
        for i, out in enumerate(outs)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers)
    won = [json.loads(out.read_text()) for out in outs]
    assert sorted(n for w in won for n in w) == sorted(names)
    store = Store(tmp_path)
    for worker, names_won in zip(workers, won):
        for name in names_won:
            assert store_module.read_owner(store.lock_path(job(name, 0))).pid == worker.pid
    assert not list((tmp_path / "locks").glob(".*"))  # no half-made or set-aside claims left behind


def test_the_queue_shards_reuses_postpones_and_lists_failures(tmp_path, monkeypatch, capsys):
    jobs = [job(m, s) for m in ("a", "b") for s in (0, 1)]
    assert [j.name for j in queue.select(jobs, (1, 2))] == ["a_s1", "b_s1"]
    store, ran = Store(tmp_path), []

    def run_job(j: Job) -> dict:
        ran.append(j.name)
        record = {"config": dict(j.spec["config"])} | ({"error": "x"} if j.method == "b" else {"ok": 1})
        store.save(j, record)
        return record

    outcome = queue.run_queue(jobs, run_job, store, queue.select(jobs, (0, 2)))
    assert ran == ["a_s0", "b_s0"] and outcome.failed == ["b_s0"] and len(outcome.records) == 2
    outcome = queue.run_queue(jobs, run_job, store, train=False)
    assert ran == ["a_s0", "b_s0"] and [r["ok"] for r in outcome.records] == [1]  # a report: runs nothing
    monkeypatch.setattr(queue.time, "time", lambda: 1000.0)
    outcome = queue.run_queue(jobs, run_job, store, deadline=1000.0 + 60, expected=lambda j: 120.0)
    assert outcome.postponed == ["a_s1", "b_s0", "b_s1"] and ran == ["a_s0", "b_s0"]
    assert "not starting a_s1: expected 2 min, 1 min left" in capsys.readouterr().out
    assert store.claim(jobs[1])  # another worker's job is left to it
    assert queue.run_queue(jobs, run_job, store, [jobs[1]]).held == ["a_s1"]
    assert f"a_s1 runs in process {os.getpid()} on " in capsys.readouterr().out
    for bad in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(InputError, match=r"--shard '.*': expected I/N with 0 <= I < N"):
            queue.parse_shard(bad)
    assert queue.parse_shard("1/3") == (1, 3)


def test_the_staged_loop_runs_what_is_ready_and_stops_when_nothing_can_start(tmp_path):
    store, done, ran = Store(tmp_path), set(), []
    first, second = job("first", 0), job("second", 0)

    def plan():
        return [(first, "")] + ([(second, "")] if "first_s0" in done else [(None, "waits for first")])

    def run_job(j: Job) -> dict:
        ran.append(j.name)
        done.add(j.name)
        return {}

    assert queue.work(plan, lambda j: j.name in done, run_job, store, wait=0) == []
    assert ran == ["first_s0", "second_s0"]
    failing = queue.work(lambda: [(job("bad", 0), "")], lambda j: False, lambda j: {"error": "x"}, store, 0)
    assert failing == ["bad_s0"]  # tried once, listed, and the loop ends


def test_the_staged_loop_with_a_deadline_runs_the_next_job_that_fits_then_stops(tmp_path, capsys):
    import time

    store, done, ran = Store(tmp_path), set(), []
    long, short, unknown = job("long", 0), job("short", 0), job("unknown", 0)
    lengths = {"long_s0": 3600.0, "short_s0": 60.0, "unknown_s0": None}

    def run_job(j: Job) -> dict:
        ran.append(j.name)
        done.add(j.name)
        return {}

    plan = lambda: [(long, ""), (short, "")]  # noqa: E731
    deadline = time.time() + 600
    finished = lambda j: j.name in done  # noqa: E731
    assert queue.work(plan, finished, run_job, store, 0, deadline, lambda j: lengths[j.name]) == []
    assert ran == ["short_s0"]  # the long job, first in priority, is passed over, then the loop stops
    out = capsys.readouterr().out
    assert out.count("not starting long_s0: expected 60 min, 10 min left") == 1  # said once
    assert "1 job(s) left for a later call (--time-limit)" in out
    plan = lambda: [(unknown, "")]  # noqa: E731
    assert queue.work(plan, finished, run_job, store, 0, deadline, lambda j: None) == []
    assert ran[-1] == "unknown_s0"  # a length not known yet starts while time is left


def test_seed_statistics_use_ddof_1_and_the_pair_tests_their_degrees_of_freedom():
    assert sd([1.0]) == 0.0 and sd([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert fmt(None) == "–" and fmt(float("nan"), missing="-") == "-" and fmt(0.12345, 2) == "0.12"
    a, b = [0.78, 0.80, 0.77], [0.93, 0.94, 0.92, 0.95]
    test = pair_test(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert test.t == pytest.approx(welch.statistic) and test.df == pytest.approx(welch.df)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    assert test.df == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 3))  # Welch-Satterthwaite
    assert test.p_perm == pytest.approx(2 / 35)  # exact: 2 of the C(7, 3) splits are as extreme
    assert np.isnan(pair_test([1.0], [2.0, 3.0]).p_welch)
    assert verdict("a", "b", test, 0.01) == "b beats a" and verdict("a", "b", test, 0.2) == "undecided"
    assert holm([0.01, 0.04, float("nan"), 0.03]) == pytest.approx(
        [0.03, 0.06, float("nan"), 0.06], nan_ok=True
    )


def test_one_sided_tests_halve_the_two_sided_p_in_the_direction_of_the_claim():
    a, b = [0.93, 0.94, 0.92, 0.95], [0.78, 0.80, 0.77]
    two, greater, less = (pair_test(a, b, alt) for alt in ("two-sided", "greater", "less"))
    welch = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert greater.p_welch == pytest.approx(welch.pvalue) and greater.df == pytest.approx(two.df)
    assert greater.p_welch == pytest.approx(two.p_welch / 2)
    assert greater.p_perm == pytest.approx(1 / 35)  # exact: only the observed split is as extreme
    assert less.p_perm == pytest.approx(1.0) and less.p_welch > 0.99
    assert greater.alternative == "greater" and verdict("a", "b", greater, greater.p_welch) == "a beats b"


def test_a_claim_waits_for_all_its_seeds_and_counts_in_holms_family_meanwhile():
    high, low = [10.0, 11.0, 12.0, 13.0], [1.0, 2.0, 3.0, 4.0]
    claims = [["a", "b"], ["a", "c"], ["c", "a"]]
    scores = {"a": high, "b": low, "c": low[:2]}  # c has 2 of its 4 seeds
    expected = {"a": 4, "b": 4, "c": 4}
    first, pending, reverse = decide_claims(scores, claims, expected)
    assert pending == {"claim": ["a", "c"], "n": [4, 2], "expected": [4, 4], "verdict": "pending"}
    assert reverse["verdict"] == "pending"
    one_sided = pair_test(high, low, "greater")
    assert first["p_welch"] == pytest.approx(one_sided.p_welch)
    # the pending claims enter Holm with p = 1: a family of three, the smallest p times 3
    assert first["p_welch_holm"] == pytest.approx(3 * one_sided.p_welch)
    assert first["p_perm_holm"] == pytest.approx(min(1.0, 3 * one_sided.p_perm))
    assert first["verdict"] == "holds"
    # every seed in: the claims are tested, the wrong-way one does not hold
    scores["c"] = low
    done = decide_claims(scores, claims, expected)
    assert [d["verdict"] for d in done] == ["holds", "holds", "does not hold"]
    # too close to call, or no spread: undecided
    close = decide_claims({"a": [1.0, 2.0, 3.0], "b": [1.5, 2.0, 2.5]}, [["a", "b"]], {"a": 3, "b": 3})
    flat = decide_claims({"a": [1.0, 1.0], "b": [1.0, 1.0]}, [["a", "b"]], {"a": 2, "b": 2})
    assert close[0]["verdict"] == flat[0]["verdict"] == "undecided"


def test_holm_with_unknown_p_values_at_1_bounds_the_final_adjustment_from_above():
    # why a verdict read while claims are pending stands once they are in
    rng = np.random.default_rng(0)
    for _ in range(500):
        p = rng.uniform(0, 0.2, size=5) ** rng.uniform(0.5, 3)
        known = rng.random(5) < 0.6
        early = holm(np.where(known, p, 1.0))
        final = holm(p)
        assert all(e >= f - 1e-12 for e, f, k in zip(early, final, known) if k)


def test_iqm_bootstrap_interval_and_performance_profile():
    # IQM = the mean of the middle half: of 0..7 that is 2..5
    assert iqm(np.arange(8.0)) == pytest.approx(3.5)
    assert iqm([0, 1, 2, 3, 4, 5, 6, 1000]) == pytest.approx(3.5)  # one outlying run changes nothing
    # on a large normal sample the 95 % interval of the IQM covers the truth (0) and is narrow
    sample = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    low, high = stratified_bootstrap_ci(sample, reps=500)
    assert low < 0.0 < high and high - low < 0.4
    # strata: runs are resampled within each task, so a task's constant column stays constant
    two_tasks = np.stack([np.full(20, 5.0), sample[:20]], axis=1)
    low, high = stratified_bootstrap_ci(two_tasks, lambda x: x[:, 0].mean(), reps=200)
    assert low == high == 5.0
    taus = np.linspace(-3, 3, 25)
    profile = performance_profile(sample, taus)
    assert (np.diff(profile) <= 0).all() and profile[0] > 0.99 and profile[-1] < 0.01
    assert performance_profile([1.0, 2.0, 3.0, 4.0], [2.5]) == pytest.approx([0.5])


def test_performance_profiles_are_drawn_with_rliable(tmp_path):
    pytest.importorskip("rliable")
    scores = {"a": np.array([0.2, 0.5, 0.9]), "b": np.array([0.6, 0.7, 1.0])}
    profiles = plot_performance_profiles(scores, np.linspace(0, 1.2, 13), tmp_path / "p.png", reps=50)
    assert (tmp_path / "p.png").stat().st_size > 0
    assert profiles["b"][6] == pytest.approx(2 / 3)  # tau 0.6: only 0.7 and 1.0 exceed it


def test_tables_and_mean_curves():
    assert markdown_table(["m", "x"], [["a", "1"]], "lr") == ["| m | x |", "|---|---:|", "| a | 1 |"]
    rows = mean_curve([[(0, 1.0), (10, 2.0)], [(0, 3.0), (10, 4.0), (20, 5.0)]])
    assert rows == [(0, 2.0, pytest.approx(2**0.5)), (10, 3.0, pytest.approx(2**0.5))]


@dataclass
class _Grid:
    settings: dict[str, float]


@dataclass
class _Protocol:
    seeds: list[int]
    grids: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    stage: _Grid | None = None


def test_a_protocol_file_is_checked_field_by_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seeds: [0, 1]\ngrids: {aihf: [{lr: 1.0e-3}]}\nstage: {settings: {beta: 0.1}}\n")
    assert read_protocol(path, _Protocol) == _Protocol([0, 1], {"aihf": [{"lr": 1e-3}]}, _Grid({"beta": 0.1}))
    for text, where in (
        ("seeds: [0]\nseed: 1\n", r"p.yaml: unknown field 'seed'"),
        ("seeds: zero\n", r"p.yaml: field 'seeds' = 'zero': expected a list of integers"),
        ("seeds: [0]\ngrids: {aihf: [{lr: fast}]}\n", r"p.yaml: field 'grids', 'aihf', entry 0, 'lr'"),
        ("seeds: [0]\nstage: {setting: {}}\n", r"p.yaml: field 'stage': unknown field 'setting'"),
        ("grids: {}\n", r"p.yaml: .*seeds"),
    ):
        path.write_text(text)
        with pytest.raises(InputError, match=where):
            read_protocol(path, _Protocol)


def test_benchmark_queues_share_their_out_while_other_commands_lock_it(tmp_path, monkeypatch):
    """Workers on several machines run the same bench command on one --out (the store claims each job),
    so the queue commands take no whole-output lock; a training run still does."""
    import aihf.cli

    locked = []

    class Recording:
        def __init__(self, out: str, flag: str = "--out") -> None:
            locked.append(out)

        def __enter__(self) -> None:
            pass

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(aihf.cli, "RunLock", Recording)
    parser = aihf.cli.build_parser()
    for argv in (["lm", "bench", "--out", "o"], ["control", "bench", "--out", "o"]):
        assert parser.parse_args(argv).claims_jobs
    aihf.cli.main(["control", "bench", "--report-only", "--out", str(tmp_path / "bench")])
    assert locked == []
    aihf.cli.main(
        ["lm", "train", "--trainer", "sft", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "t")]
    )
    assert locked == [str(tmp_path / "t")]


def test_one_seed_shows_a_mean_without_a_spread():
    from aihf.experiments.report import mean_sd

    assert mean_sd([3319.4], 0) == "3319" and mean_sd(np.array([1.0, 3.0]), 0) == "2 +- 1"
    assert mean_sd([1.0, 2.0, 3.0]) == "2.0 +- 1.0"
