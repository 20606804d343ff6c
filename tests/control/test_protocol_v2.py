"""Protocol v2's runner fields (configs/protocols/control_hopper_v2.yaml) on tiny Pendulum runs: a pilot on
a seed never reported, RLHF started from BC's tuned setting, per-method seeds, the re-evaluation of each
final's saved policy, and the endpoint / IQM / claims tables with the performance profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aihf.control import protocol as module
from aihf.errors import InputError

TINY = (
    "env_id: Pendulum-v1\nsteps_per_iter: 100\nlearning_starts: 100\neval_interval: 100\n"
    "eval_episodes: 1\nbatch_size: 32\nbc_steps: 20\nreward_updates_per_iter: 2\nrlhf_reward_steps: 20\n"
    "tensorboard: false\n"
)
V2 = """config: tiny.yaml
data: {data}
results: results
name: v2
seeds: [0, 1]
settings: {{centering_coef: 0.02}}
pilot: {{algo: sac-true}}
pilot_seeds: [100]
pilot_steps: 200
budget_step: 100
tune_seed: 100
tune_seed_reported: false
tune_steps_cap: 100
pick_by: last3
final_seeds: {{aihf: [0, 1, 2]}}
start_from: {{rlhf: bc}}
reevaluate_episodes: 2
claims: [[aihf, rlhf], [aihf, bc]]
grids:
  aihf: [{{alpha: 1.0}}, {{alpha: 0.5}}]
  rlhf: [{{reward_scale: 1.0}}, {{reward_scale: 10.0}}]
  bc: [{{bc_steps: 5}}, {{bc_steps: 40}}]
  sac-true: [{{}}]
priority: [[tune, bc], [tune, aihf], [tune, rlhf], [final, aihf], [final, rlhf], [final, bc],
  [final, sac-true]]
"""


def _write(tmp_path, data):
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "v2.yaml").write_text(V2.format(data=data))
    return tmp_path / "v2.yaml"


def test_v2_runs_pilot_apart_rlhf_from_tuned_bc_reevaluates_and_reports_claims(
    tiny_data, tmp_path, monkeypatch, capsys
):
    path = _write(tmp_path, tiny_data["demos_path"].parent)
    proto, root = module.read_control_protocol(path)
    monkeypatch.setattr(module, "demonstration_return", lambda data: -12_500.0)  # B = 100: see v1's test
    (tmp_path / "results").mkdir()
    runs = tmp_path / "runs"
    jobs = module.ProtocolQueue(proto, root, runs)
    first = [job.name if job else why for job, why in jobs.plan()]
    assert first[0] == "pilot/sac-true/seed100" and "wait for the budget" in first[1]

    assert jobs.work(wait=0.1) == []
    # the pilot paused once its evaluation at 100 steps made B known; the tunings went first and the
    # rest of its curve (to 200) ran last
    starts = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if " start " in line]
    assert starts[0] == starts[-1] == "pilot/sac-true/seed100" and starts[1] == "tune/bc/bc_steps=5"
    assert starts.count("pilot/sac-true/seed100") == 2
    plan = [job for job, _ in jobs.plan()]
    assert all(job is not None and jobs.state(job) == "finished" for job in plan)
    tuned = [job for job in plan if job.name.startswith("tune/")]
    assert {job.seed for job in tuned} == {100} and not any(j.name.startswith("tune/sac-true") for j in plan)
    finals = [job for job in plan if job.name.startswith("final/")]
    assert 100 not in {job.seed for job in finals}
    assert sorted(j.seed for j in finals if j.method == "aihf") == [0, 1, 2]
    assert sorted(j.seed for j in finals if j.method == "sac-true") == [0, 1]
    # RLHF's tuning and finals start from BC's pick (the tuning figure: the last three evaluations)
    bc_pick = jobs.best_setting("bc", 100)
    for job in [j for j in plan if j.method == "rlhf"]:
        assert jobs.overrides(job)["bc_steps"] == bc_pick["bc_steps"]
    config = json.loads((runs / "final" / "rlhf" / "seed1" / "results.json").read_text())["config"]
    assert config["bc_steps"] == bc_pick["bc_steps"] and config["centering_coef"] == 0.02
    # every final's saved policy re-evaluated on other episodes, BC's included
    again = json.loads((runs / "final" / "bc" / "seed0" / "reevaluation.json").read_text())
    assert again["episodes"] == 2 and len(again["returns"]) == 2

    # a final whose re-evaluation is missing is re-evaluated, not retrained
    results = runs / "final" / "aihf" / "seed2" / "results.json"
    stamp = results.stat().st_mtime_ns
    (results.parent / "reevaluation.json").unlink()
    job = next(j for j in finals if j.name == "final/aihf/seed2")
    assert jobs.state(job) == "trained" and "re-evaluation (2 episodes) pending" in jobs.status()
    assert jobs.work(wait=0.1) == []
    assert (results.parent / "reevaluation.json").is_file() and results.stat().st_mtime_ns == stamp

    jobs.report()
    summary = json.loads((tmp_path / "results" / "v2.json").read_text())
    assert summary["endpoints"]["aihf"]["seeds"] == [0, 1, 2]
    assert len(summary["endpoints"]["bc"]["reevaluation"]) == 2
    low, high = summary["endpoints"]["aihf"]["iqm_ci95"]
    assert low <= summary["endpoints"]["aihf"]["iqm"] <= high
    claims = summary["decisions"]
    assert [c["claim"] for c in claims] == [["aihf", "rlhf"], ["aihf", "bc"]]
    assert all(c["p_welch_holm"] >= c["p_welch"] and c["df"] > 0 for c in claims)
    assert summary["tuning"]["sac-true"] == {"runs": [], "picked": {}}
    md = (tmp_path / "results" / "v2.md").read_text()
    assert "**Endpoints**" in md and "| aihf > rlhf |" in md
    generated = md.split(module.BEGIN, 1)[1]
    assert generated.lstrip().startswith("**Verdicts**")  # the page leads with the verdict table
    assert all(c["verdict"] in ("holds", "does not hold", "undecided") for c in claims)
    assert (tmp_path / "results" / "v2_profile.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"final_seeds: {aihf: [0, 1, 2]}": "final_seeds: {aihf: [0, 100]}"}, "field 'tune_seed' = 100"),
        (
            {
                "[{bc_steps: 5}, {bc_steps: 40}]": "[{bc_steps: 5}]",
                "rlhf: [{reward_scale: 1.0}": "rlhf: [{bc_steps: 9}",
            },
            "field 'grids', 'rlhf' = 'bc_steps'",
        ),
        ({"[aihf, bc]]": "[aihf, ipl]]"}, "field 'claims', entry 1"),
        ({"{alpha: 0.5}": "{alpha: -1.0}"}, "grids 'aihf', entry 1: "),
        ({"reevaluate_episodes: 2": "reevaluate_episodes: -1"}, "field 'reevaluate_episodes' = -1"),
        ({"pick_by: last3": "pick_by: best"}, "field 'pick_by'"),
        ({"settings: {centering_coef: 0.02}": "settings: {demo_term: sum}"}, "demo_term"),
        ({"start_from: {rlhf: bc}": "start_from: {rlhf: rlhf}"}, "field 'start_from'"),
        ({"pilot_seeds: [100]": "pilot_seeds: []"}, "field 'pilot_seeds' = []"),
        ({"pick_by: last3": "pick_by: last3\nhold: [finals]"}, "field 'hold' = ['finals']"),
    ],
)
def test_a_bad_v2_field_is_one_line_naming_it(tmp_path, replace, message):
    path = tmp_path / "v2.yaml"
    (tmp_path / "tiny.yaml").write_text(TINY)
    text = V2.format(data="d")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    with pytest.raises(InputError) as err:
        module.read_control_protocol(path)
    assert message in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_held_stages_wait_while_the_pilot_runs(tiny_data, tmp_path, monkeypatch):
    path = _write(tmp_path, tiny_data["demos_path"].parent)
    path.write_text(path.read_text() + "hold: [tune, final, check]\n")
    proto, root = module.read_control_protocol(path)
    jobs = module.ProtocolQueue(proto, root, tmp_path / "runs")
    monkeypatch.setattr(jobs, "budget", lambda: (100, []))  # as if the pilot had set B
    plan = jobs.plan()
    assert [job.name for job, _ in plan if job is not None] == ["pilot/sac-true/seed100"]
    assert "tune, final, check held by the protocol's 'hold' field" in plan[-1][1]


def test_the_shipped_protocol_files_pass_every_check(tmp_path):
    root = module.DEFAULT_PROTOCOL.parent
    for name in ("control_hopper.yaml", "control_hopper_v2.yaml", "control_halfcheetah_v2.yaml"):
        module.read_control_protocol(root / name)
    proto, where = module.read_control_protocol(root / "control_hopper_v2.yaml")
    jobs = module.ProtocolQueue(proto, where, tmp_path / "runs")
    assert jobs.data.name == "whole" and (jobs.data / "prefs.npz").is_file()  # the shipped v2 pairs
    assert proto.tune_seed not in {s for seeds in proto.final_seeds.values() for s in seeds} | set(
        proto.seeds
    )
    assert jobs.budget()[0] == proto.budget_step * len(jobs.record()["pilot"])  # the committed record's B


def test_the_budget_by_the_last_three_evaluations_skips_a_lucky_one(tiny_data, tmp_path, monkeypatch):
    path = _write(tmp_path, tiny_data["demos_path"].parent)
    text = path.read_text().replace("pilot_steps: 200", "pilot_steps: 400")
    monkeypatch.setattr(module, "demonstration_return", lambda data: 100.0)  # B where the figure is >= 80
    curve = [(100, 10.0), (200, 90.0), (300, 70.0), (400, 85.0)]  # 200: a lucky evaluation
    for by, expected in (("evaluation", 200), ("last3", 400)):
        path.write_text(text + f"budget_by: {by}\n")
        proto, root = module.read_control_protocol(path)
        jobs = module.ProtocolQueue(proto, root, tmp_path / "runs")
        monkeypatch.setattr(jobs, "run_curve", lambda job: curve)
        assert jobs.budget()[0] == expected


def test_demonstrations_cut_mid_episode_stop_the_trajectory_form_before_any_job(tiny_data, tmp_path):
    from aihf.control.data import save_preferences, save_trajectories

    demos = tiny_data["demos"]
    cut = demos.select(np.arange(len(demos)))
    cut.truncated[demos.starts[1] + demos.lengths[1] - 1] = False  # trajectory 1: a piece of an episode
    data = tmp_path / "data"
    save_trajectories(data / "demos.npz", cut)
    save_preferences(data / "prefs.npz", tiny_data["prefs"])
    path = _write(tmp_path, data)
    path.write_text(path.read_text().replace("{alpha: 0.5}", "{alpha: 0.5, demo_term: trajectory}"))
    proto, root = module.read_control_protocol(path)
    jobs = module.ProtocolQueue(proto, root, tmp_path / "runs")
    with pytest.raises(InputError, match=r"demos\.npz: trajectory 1 ends without a terminated or truncated"):
        jobs.work(wait=0.1)
    assert not (tmp_path / "runs" / "pilot").exists()


PILOT_ROWS = [{"step": 100, "per_seed": [-150.0], "mean": -150.0}]


def _queue(tiny_data, tmp_path):
    """The tiny v2 protocol's queue over an empty RUNS (a new machine: no pilot checkpoint here)."""
    proto, root = module.read_control_protocol(_write(tmp_path, tiny_data["demos_path"].parent))
    (tmp_path / "results").mkdir()
    return module.ProtocolQueue(proto, root, tmp_path / "runs")


def _record(tmp_path, **fields):
    """A committed record whose pilot set B = 100, with `fields` beside."""
    record = {"budget": 100, "pilot": PILOT_ROWS, **fields}
    (tmp_path / "results" / "v2.json").write_text(json.dumps(record))


def test_a_new_machine_takes_the_budget_from_the_committed_record(tiny_data, tmp_path):
    jobs = _queue(tiny_data, tmp_path)
    assert jobs.budget() == (None, [])
    _record(tmp_path)
    assert jobs.budget() == (100, PILOT_ROWS)
    names = [job.name for job, _ in jobs.plan() if job is not None]
    assert names[0].startswith("tune/bc/") and "pilot/sac-true/seed100" in names


def test_the_page_leads_with_every_claim_pending_until_its_arms_have_all_their_seeds(tiny_data, tmp_path):
    jobs = _queue(tiny_data, tmp_path)
    _record(tmp_path)
    jobs.report()  # B known, no run finished: both claims pending, and the page leads with them
    generated = (tmp_path / "results" / "v2.md").read_text().split(module.BEGIN, 1)[1].lstrip()
    assert generated.startswith("**Verdicts**")
    assert "| aihf > rlhf | pending (seeds still running) |" in generated
    assert "| aihf > bc | pending (seeds still running) | - | - | - | - | 0 of 3 / 0 of 2 |" in generated
    summary = json.loads((tmp_path / "results" / "v2.json").read_text())
    assert [d["verdict"] for d in summary["decisions"]] == ["pending", "pending"]

    def run(level: float) -> dict:
        return {"curve": [(100, level), (200, level + 1.0), (300, level + 2.0)]}

    # AIHF has 2 of its 3 seeds: far ahead, and still not tested
    finals = {"aihf": [run(0.0), run(1.0)], "rlhf": [run(-90.0), run(-80.0)], "bc": [run(-90.0), run(-85.0)]}
    md, decisions = jobs.verdicts(finals)
    assert [d["verdict"] for d in decisions] == ["pending", "pending"]
    assert "| 2 of 3 / 2 of 2 |" in md[-2]
    finals["aihf"].append(run(2.0))
    _, decisions = jobs.verdicts(finals)
    assert [d["n"] for d in decisions] == [[3, 2], [3, 2]] and all("p_welch_holm" in d for d in decisions)


def test_a_jobs_expected_length_is_from_its_methods_finished_runs_else_any_sac_methods(tiny_data, tmp_path):
    jobs = _queue(tiny_data, tmp_path)
    run = {"final": 0.0, "last3": 0.0}
    tuning = {
        "bc": {"runs": [{"setting": {"bc_steps": 5}, **run, "wall_time_s": 9000.0}], "picked": None},
        "aihf": {"runs": [{"setting": {"alpha": 1.0}, **run, "wall_time_s": 30.0}], "picked": None},
    }
    _record(tmp_path, tuning=tuning)
    by_name = {job.name: job for job, _ in jobs.plan() if job is not None}
    assert jobs.expected_seconds(by_name["tune/aihf/alpha=0.5"]) == 30.0  # its method's run, 100 steps
    assert jobs.expected_seconds(by_name["final/sac-true/seed0"]) == 30.0  # AIHF's rate; BC trains no SAC
    tuning["aihf"]["runs"] = []
    _record(tmp_path, tuning=tuning)
    assert jobs.expected_seconds(by_name["final/sac-true/seed0"]) is None  # no SAC run has finished


def test_a_time_limit_outside_work_or_not_positive_is_one_line_before_any_run(tmp_path, capsys):
    from aihf.cli import main

    runs = tmp_path / "runs"
    for argv, message in (
        (["status", "--time-limit", "60"], "--time-limit limits work, and status runs nothing"),
        (["work", "--time-limit", "0"], "--time-limit = 0"),
    ):
        assert main(["control", "protocol", *argv, "--runs", str(runs)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not runs.exists()
