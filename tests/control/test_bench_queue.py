"""aihf.control.protocol: a staged protocol's job queue (pilot -> budget -> tuning -> finals), on tiny
Pendulum runs with the same code path as the Hopper comparison (configs/protocols/control_hopper.yaml)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from aihf.control import protocol as module
from aihf.errors import InputError
from aihf.experiments.store import holder


@pytest.fixture
def queue(tiny_data, tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "env_id: Pendulum-v1\nsteps_per_iter: 100\nlearning_starts: 100\neval_interval: 100\n"
        "eval_episodes: 1\nbatch_size: 32\nbc_steps: 20\nreward_updates_per_iter: 2\ntensorboard: false\n"
    )
    data = tiny_data["demos_path"].parent
    (tmp_path / "protocol.yaml").write_text(
        f"config: tiny.yaml\ndata: {data}\nresults: results\nseeds: [0, 1]\n"
        "pilot: {algo: sac-true, settings: {termination: bootstrap}}\n"
        "pilot_steps: 300\nbudget_step: 100\ntune_steps_cap: 100\n"
        "grids:\n  aihf: [{reward_lr: 1.0e-4}, {reward_lr: 1.0e-2}]\n  bc: [{bc_steps: 5}, {bc_steps: 40}]\n"
        "priority: [[tune, aihf], [tune, bc], [final, aihf], [final, bc]]\n"
        "check: {algo: sac-true, settings: {backend: sb3}}\n"
    )
    proto, root = module.read_control_protocol(tmp_path / "protocol.yaml")
    # the random "demonstrations" return about -600: B is the first 100 steps whose mean reaches -10^4
    monkeypatch.setattr(module, "demonstration_return", lambda data: -12_500.0)
    (tmp_path / "results").mkdir()
    jobs = module.ProtocolQueue(proto, root, tmp_path / "runs")
    # the module-level view the assertions read, as the script's globals were
    return SimpleNamespace(
        plan=lambda runs: module.ProtocolQueue(proto, root, runs).plan(),
        work=lambda runs: module.ProtocolQueue(proto, root, runs).work(wait=0.1),
        budget=lambda runs: module.ProtocolQueue(proto, root, runs).budget(),
        status=lambda runs: module.ProtocolQueue(proto, root, runs).status(),
        report=lambda runs: module.ProtocolQueue(proto, root, runs).report(),
        state=lambda runs, job: module.ProtocolQueue(proto, root, runs).state(job),
        pilot_jobs=lambda runs: module.ProtocolQueue(proto, root, runs).pilot_jobs(),
        claim=lambda runs, job: module.ProtocolQueue(proto, root, runs).store.claim(job),
        lock_path=lambda runs, job: module.ProtocolQueue(proto, root, runs).store.lock_path(job),
        holder=holder,
        GRIDS=proto.grids,
        RESULTS=jobs.results,
    ), tmp_path / "runs"


# v1's queue end to end (about 14 s); protocol v2's runner has its end-to-end test in the default suite
@pytest.mark.slow
def test_queue_runs_pilot_tuning_finals_and_reports_at_the_budget(queue):
    module, runs = queue
    names = [job.name if job else why for job, why in module.plan(runs)]
    assert names[:2] == ["pilot/sac-true/seed0", "pilot/sac-true/seed1"] and "wait for the budget" in names[2]

    module.work(runs)

    b, pilot = module.budget(runs)
    assert b == 100 and [row["step"] for row in pilot] == [100]
    plan = module.plan(runs)
    assert all(job is not None and not why and module.state(runs, job) == "finished" for job, why in plan)
    tuned = {job.name for job, _ in plan if job.name.startswith("tune/")}
    assert tuned == {
        "tune/aihf/reward_lr=0.0001",
        "tune/aihf/reward_lr=0.01",
        "tune/bc/bc_steps=5",
        "tune/bc/bc_steps=40",
    }
    assert "finished" in module.status(runs) and "running" not in module.status(runs)

    module.report(runs)
    summary = json.loads((module.RESULTS / "control_hopper.json").read_text())
    assert summary["budget"] == 100
    picked = summary["tuning"]["aihf"]["picked"]
    finals = [r["final"] for r in summary["tuning"]["aihf"]["runs"]]
    assert picked == module.GRIDS["aihf"][finals.index(max(finals))]
    comparison = summary["comparison"]["algos"]
    oracle = comparison["sac-true"]["per_seed"]
    assert [(r["total_steps"], r["cut_from_steps"]) for r in oracle] == [(100, 300), (100, 300)]
    final_config = json.loads((runs / "final" / "aihf" / "seed1" / "results.json").read_text())["config"]
    assert final_config["reward_lr"] == picked["reward_lr"] and final_config["n_timesteps"] == 100
    assert [r["seed"] for r in summary["sb3_check"]["per_seed"]] == [0, 1]  # the sb3 oracle, every seed
    # the generated part is replaced, the reading around it kept
    md = module.RESULTS / "control_hopper.md"
    md.write_text(md.read_text().replace("# Hopper-v5 comparison", "# Hopper-v5 comparison\n\nOur reading."))
    module.report(runs)
    assert md.read_text().count("Our reading.") == 1 and md.read_text().count("Budget B = **100**") == 1


def test_a_claimed_job_is_not_claimed_twice_but_a_dead_workers_lock_is_taken_over(queue):
    module, runs = queue
    job = module.pilot_jobs(runs)[0]
    assert module.claim(runs, job)
    assert not module.claim(runs, job)  # this process holds it
    lock = module.lock_path(runs, job)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (lock / "pid").write_text(str(dead))  # a worker that died without releasing its lock
    assert module.holder(lock) is None
    assert module.claim(runs, job)
    assert module.holder(lock) == os.getpid()


def test_on_a_new_machine_the_queue_reruns_only_what_the_committed_record_lacks(queue):
    module, runs = queue
    module.work(runs)
    module.report(runs)
    path = module.RESULTS / "control_hopper.json"
    first = json.loads(path.read_text())
    # a new machine: RUNS is gone, and the record lacks one final (as if it had not finished)
    record = json.loads(path.read_text())
    aihf = record["comparison"]["algos"]["aihf"]
    dropped = next(i for i, row in enumerate(aihf["per_seed"]) if row["seed"] == 1)
    for key in ("per_seed", "heldout_preference_accuracy", "learned_true_return_correlation"):
        del aihf[key][dropped]
    path.write_text(json.dumps(record))
    other = runs.with_name("runs-new-machine")

    pending = [job.name for job, _ in module.plan(other) if module.state(other, job) != "recorded"]
    assert pending == ["final/aihf/seed1"]
    module.work(other)
    assert sorted(p.name for p in other.iterdir() if p.name != "locks") == ["final"]
    assert [p.name for p in (other / "final").iterdir() if p.is_dir()] == ["aihf"]
    assert [p.name for p in (other / "final" / "aihf").iterdir()] == ["seed1"]

    module.report(other)
    again = json.loads(path.read_text())

    def without_wall_time(value):
        if isinstance(value, dict):
            return {k: without_wall_time(v) for k, v in value.items() if k != "wall_time_s"}
        return [without_wall_time(v) for v in value] if isinstance(value, list) else value

    # the seeded rerun gives the numbers of the first run; everything else comes back from the record
    assert without_wall_time(again) == without_wall_time(first)
    assert "recorded" in module.status(other)


def test_a_bad_protocol_file_is_named_by_file_and_field_before_any_job(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("config: c.yaml\ndata: d\nresults: r\nseeds: [0, one]\n")
    with pytest.raises(
        InputError, match=r"bad.yaml: field 'seeds' = \[0, 'one'\]: expected a list of integers"
    ):
        module.read_control_protocol(path)
    path.write_text("config: c.yaml\ndata: d\nresults: r\npilot_step: 5\n")
    with pytest.raises(InputError, match=r"bad.yaml: unknown field 'pilot_step'"):
        module.read_control_protocol(path)
    path.write_text("config: c.yaml\ndata: d\nresults: r\ngrids: {aihf: []}\npriority: [[final, bc]]\n")
    with pytest.raises(InputError, match=r"bad.yaml: field 'priority', entry 0"):
        module.read_control_protocol(path)
