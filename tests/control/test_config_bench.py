import csv
import dataclasses
import json

import numpy as np
import pytest

from aihf import checkpoints
from aihf.control.bench import run_bench
from aihf.control.config import AIHFControlConfig, load_config
from aihf.errors import InputError


def test_yaml_config_flags_override_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("alpha: 0.5\nsteps_per_iter: 100\nreward_hidden: [32, 16]\n")
    cfg = load_config(path, {"steps_per_iter": 50})
    # Pendulum-v1's preset (total_steps 6000) < the YAML file < the overrides
    assert (cfg.alpha, cfg.steps_per_iter, cfg.n_timesteps, cfg.reward_hidden) == (0.5, 50, 6000, (32, 16))
    path.write_text("alpah: 0.5\n")
    with pytest.raises(InputError, match=r"c\.yaml: unknown option\(s\) alpah"):
        load_config(path, {})
    with pytest.raises(InputError, match="field 'algo' = 'ppo'"):
        AIHFControlConfig(algo="ppo")
    with pytest.raises(InputError, match="termination"):
        AIHFControlConfig(termination="ignore")


def _train_config(argv: list[str]) -> AIHFControlConfig:
    """The config `aihf control train ARGV` would run (parsed and resolved as the command does)."""
    from aihf.cli import build_parser
    from aihf.control.cli import _config_from_args

    return _config_from_args(build_parser().parse_args(["control", "train", "--out", "o", *argv]))


def test_every_field_is_a_flag_and_defaults_preset_yaml_flags_take_precedence_in_that_order(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("reward_lr: 0.002\ngamma: 0.95\nsteps_per_iter: 100\n")
    cfg = _train_config(
        ["--config", str(path), "--reward_lr", "3e-3", "--reward-hidden", "16", "8", "--env", "Pendulum-v1"]
    )
    assert cfg.reward_lr == 3e-3  # YAML and flag: the flag
    assert (cfg.gamma, cfg.steps_per_iter) == (
        0.95,
        100,
    )  # YAML over the preset (Pendulum's steps_per_iter 500)
    assert cfg.learning_starts == 500 and cfg.bc_lr == 1e-3  # the preset; the dataclass default
    assert cfg.reward_hidden == (16, 8)  # a list field takes several words; the dashed spelling works
    assert _train_config(["--tensorboard", "false", "--ent_coef", "auto"]).tensorboard is False
    with pytest.raises(SystemExit):
        _train_config(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(AIHFControlConfig):
        assert f"--{field.name}" in text, field.name
    assert (
        "--reward_lr VALUE, --reward-lr VALUE reward Adam learning rate (paper: 1e-4) (> 0; default 0.0001)"
        in text
    )


def test_the_yaml_environment_chooses_the_preset(tmp_path):
    """Review finding: a Hopper YAML without --env used to get Pendulum's preset (reward_scale 10)."""
    path = tmp_path / "hopper.yaml"
    path.write_text("env_id: Hopper-v5\nalpha: 0.5\n")
    cfg = load_config(path, {})
    assert (cfg.env_id, cfg.learning_starts, cfg.n_timesteps, cfg.reward_scale, cfg.bc_steps) == (
        "Hopper-v5",
        5000,
        100_000,
        1.0,
        2000,
    )
    assert load_config(path, {"env_id": "Pendulum-v1"}).reward_scale == 10.0  # the flag's env wins


@pytest.mark.parametrize(
    ("value", "expected", "label"),
    [(0.1, 0.1, "fixed 0.1"), ("0.05", 0.05, "fixed 0.05"), ("auto", "auto", "auto-tuned (auto)")],
)
def test_entropy_coefficient_fixed_by_default_or_auto(value, expected, label):
    assert AIHFControlConfig().ent_coef == 0.2  # fixed: the paper's Spinning Up SAC
    cfg = AIHFControlConfig(ent_coef=value)
    assert (cfg.ent_coef, cfg.ent_coef_label) == (expected, label)


@pytest.mark.parametrize("value", [0, -1, "autox", "auto_-1", "big"])
def test_bad_entropy_coefficient(value):
    with pytest.raises(InputError, match=r"field .ent_coef."):
        AIHFControlConfig(ent_coef=value)


@pytest.mark.parametrize("backend", ["sb3", "sbx"])
def test_update_schedule_reaches_sac(backend):
    from stable_baselines3.common.env_util import make_vec_env

    from aihf.control.backends import get_backend, sac_kwargs

    cfg = AIHFControlConfig(backend=backend, train_freq=4, gradient_steps=4, steps_per_iter=500)
    model = get_backend(backend).make(make_vec_env("Pendulum-v1", n_envs=1), 0, "cpu", **sac_kwargs(cfg))
    assert (model.train_freq.frequency, model.gradient_steps) == (4, 4)


@pytest.mark.parametrize("field", ["steps_per_iter", "n_timesteps"])
def test_update_rounds_must_fit_the_iteration_and_budget(field):
    values = {"steps_per_iter": 500, "n_timesteps": 6000} | {field: 502}
    with pytest.raises(InputError, match=rf"field 'train_freq' = 4 must divide {field} \(502\)"):
        AIHFControlConfig(train_freq=4, **values)


def test_bench_writes_curves_table_and_plot(tiny_data, tmp_path):
    overrides = {
        "steps_per_iter": 100,
        "learning_starts": 100,
        "eval_episodes": 2,
        "batch_size": 32,
        "bc_steps": 20,
        "reward_updates_per_iter": 3,
        "tensorboard": False,
    }
    yaml_path = tmp_path / "bench.yaml"
    yaml_path.write_text("centering_coef: 0.05\nsteps_per_iter: 999\n")
    table = run_bench(
        "Pendulum-v1",
        ["aihf", "bc"],
        [0, 1],
        tmp_path,
        total_steps=200,
        demos_path=str(tiny_data["demos_path"]),
        prefs_path=str(tiny_data["prefs_path"]),
        progress=False,
        overrides=overrides,
        config_path=str(yaml_path),
    )
    assert "| AIHF |" in table and "| behaviour cloning |" in table
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert [int(r["step"]) for r in rows if r["algo"] == "aihf"] == [0, 100, 200]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "aihf" / "seed1" / "results.json").is_file()
    config = json.loads((tmp_path / "aihf" / "seed0" / "results.json").read_text())["config"]
    # preset (reward_scale) < YAML (centering_coef) < explicit arguments (steps_per_iter)
    assert (config["reward_scale"], config["centering_coef"], config["steps_per_iter"]) == (10.0, 0.05, 100)


def test_report_only_merges_benches_run_separately(tiny_data, tmp_path, capsys):
    from aihf.cli import main

    overrides = {"steps_per_iter": 100, "learning_starts": 100, "eval_episodes": 1, "batch_size": 32}
    overrides |= {"bc_steps": 20, "reward_updates_per_iter": 2, "tensorboard": False}
    data = {"demos_path": str(tiny_data["demos_path"]), "prefs_path": str(tiny_data["prefs_path"])}
    # two "processes": AIHF seed 0, then BC seeds 0 and 1, into one directory
    run_bench("Pendulum-v1", ["aihf"], [0], tmp_path, 100, progress=False, overrides=overrides, **data)
    run_bench("Pendulum-v1", ["bc"], [0, 1], tmp_path, 100, progress=False, overrides=overrides, **data)
    assert "| AIHF | 1 |" in (tmp_path / "results.md").read_text()  # each bench reports the whole dir
    assert main(["control", "bench", "--out", str(tmp_path), "--report-only"]) == 0
    table = capsys.readouterr().out
    assert table == (tmp_path / "results.md").read_text()
    assert "| AIHF | 1 |" in table and "| behaviour cloning | 2 |" in table
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["algos"]["bc"]["seeds"] == [0, 1]
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert {r["algo"] for r in rows} == {"aihf", "bc"}
    assert main(["control", "bench", "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_bench_shards_skip_finished_runs_and_resume_interrupted_ones(tiny_data, tmp_path, capsys):
    from aihf.cli import main

    data = {"demos_path": str(tiny_data["demos_path"]), "prefs_path": str(tiny_data["prefs_path"])}
    overrides = {"steps_per_iter": 100, "learning_starts": 100, "eval_episodes": 1, "batch_size": 32}
    overrides |= {"bc_steps": 20, "reward_updates_per_iter": 2, "tensorboard": False}
    kwargs = {"progress": False, "overrides": overrides, **data}
    # shard 1 of 2 of (aihf, 0), (aihf, 1), (bc, 0), (bc, 1): every second pair from the second
    run_bench("Pendulum-v1", ["aihf", "bc"], [0, 1], tmp_path, 200, shard=(1, 2), **kwargs)
    made = sorted(f"{p.parent.name}/{p.name}" for p in tmp_path.glob("*/seed*"))
    assert made == ["aihf/seed1", "bc/seed1"]
    finished = (tmp_path / "aihf" / "seed1" / "results.json").read_text()
    # an interrupted run: only its checkpoint of the first iteration is left
    run_bench("Pendulum-v1", ["aihf"], [0], tmp_path, 100, **kwargs)
    partial = tmp_path / "aihf" / "seed0"
    (partial / "results.json").unlink()
    state = json.loads((partial / "checkpoint" / "state.json").read_text())
    state["config"]["n_timesteps"] = 200  # as if the 200-step run had stopped after its first 100 steps
    (partial / "checkpoint" / "state.json").write_text(json.dumps(state))
    checkpoints.write_manifest(partial / "checkpoint")  # sealed as that run would have saved it
    run_bench("Pendulum-v1", ["aihf", "bc"], [0, 1], tmp_path, 200, **kwargs)
    assert (tmp_path / "aihf" / "seed1" / "results.json").read_text() == finished  # skipped, not rerun
    resumed = json.loads((partial / "results.json").read_text())
    assert resumed["env_steps"] == 200 and resumed["iterations"] == 2
    summary = json.loads((tmp_path / "results.json").read_text())["algos"]
    assert [r["seed"] for r in summary["aihf"]["per_seed"]] == [0, 1]
    assert summary["aihf"]["per_seed"][0]["ent_coef"] == "fixed 0.2"
    assert main(["control", "bench", "--out", str(tmp_path), "--shard", "2/2", "--algos", "bc"]) == 2
    assert "--shard '2/2': expected I/N with 0 <= I < N" in capsys.readouterr().err


def test_bench_workers_run_in_their_own_processes_with_the_numbers_of_one_process(
    tiny_data, tmp_path, capsys
):
    from aihf.cli import main

    data = {"demos_path": str(tiny_data["demos_path"]), "prefs_path": str(tiny_data["prefs_path"])}
    overrides = {"steps_per_iter": 100, "learning_starts": 100, "eval_episodes": 1, "batch_size": 32}
    overrides |= {"bc_steps": 20, "reward_updates_per_iter": 2, "tensorboard": False, "backend": "sb3"}
    kwargs = {"progress": False, "overrides": overrides, **data}
    one = run_bench("Pendulum-v1", ["aihf", "bc"], [0, 1], tmp_path / "one", 200, **kwargs)
    kwargs["overrides"] = overrides | {
        "tensorboard": True
    }  # its event files name the process that wrote them
    two = run_bench("Pendulum-v1", ["aihf", "bc"], [0, 1], tmp_path / "two", 200, workers=2, **kwargs)
    assert one == two and "| AIHF | 2 |" in two
    events = list((tmp_path / "two").glob("*/seed*/tensorboard/*/events.out.tfevents.*"))
    assert len(events) == 4 and len({path.name.split(".")[-2] for path in events}) == 2  # both workers ran
    for run in ("aihf/seed0", "aihf/seed1", "bc/seed0", "bc/seed1"):
        assert (tmp_path / "one" / run / "curve.csv").read_text() == (
            tmp_path / "two" / run / "curve.csv"
        ).read_text()
    assert main(["control", "bench", "--out", str(tmp_path / "x"), "--workers", "2", "--shard", "0/2"]) == 2
    assert "--workers 2: expected a positive count, and no --shard beside it" in capsys.readouterr().err


def test_report_reads_longer_runs_at_the_budget_and_spreads_with_ddof_1(tiny_data, tmp_path, capsys):
    from aihf.cli import main
    from aihf.control.bench import report

    data = {"demos_path": str(tiny_data["demos_path"]), "prefs_path": str(tiny_data["prefs_path"])}
    overrides = {"steps_per_iter": 100, "learning_starts": 100, "eval_episodes": 1, "batch_size": 32}
    overrides |= {"bc_steps": 20, "reward_updates_per_iter": 2, "tensorboard": False, "eval_interval": 100}
    run_bench("Pendulum-v1", ["sac-true"], [0, 1], tmp_path, 200, progress=False, overrides=overrides, **data)
    full = json.loads((tmp_path / "results.json").read_text())["algos"]["sac-true"]
    finals = [r["final_return"] for r in full["per_seed"]]
    assert full["final_return_std_over_seeds"] == pytest.approx(np.std(finals, ddof=1))
    table = report(tmp_path, budget=100)
    assert "cut at 100 of 200 steps" in table
    cut = json.loads((tmp_path / "results.json").read_text())["algos"]["sac-true"]["per_seed"]
    for before, after in zip(full["per_seed"], cut):
        assert after["total_steps"] == 100 and after["cut_from_steps"] == 200
        assert after["final_return"] == dict(before["curve"])[100]
        assert [s for s, _ in after["curve"]] == [0, 100]
    assert report(tmp_path, budget=500).count("cut at") == 0  # shorter runs are read as they are
    with pytest.raises(InputError, match="no evaluation at step 150"):
        report(tmp_path, budget=150)
    assert main(["control", "bench", "--out", str(tmp_path), "--budget", "100"]) == 2
    assert "with --report-only" in capsys.readouterr().err


def test_table_names_each_rows_sac_when_backends_differ():
    from aihf.control.bench import _table

    def run(seed, backend):
        curve = [[0, 1.0], [100, 2.0]]
        return {
            "seed": seed,
            "eval_return_mean": 2.0,
            "curve": curve,
            "backend": backend,
            "ent_coef": "fixed 0.2",
        }

    mixed = _table({"aihf": [run(0, "sbx")], "ipl": [run(0, "sb3")]}, "Hopper-v5", 100)
    assert "| AIHF (sbx SAC) |" in mixed and "| IPL (inverse preference learning) (sb3 SAC) |" in mixed
    one = _table({"aihf": [run(0, "sbx")], "rlhf": [run(0, "sbx")]}, "Hopper-v5", 100)
    assert "(sbx SAC, entropy coefficient fixed 0.2)" in one and "(sbx SAC) |" not in one


def test_a_failed_run_is_listed_after_the_others_ran_and_the_exit_code_is_1(
    tiny_data, tmp_path, monkeypatch, capsys
):
    from aihf.cli import main
    from aihf.control import bench

    real_train = bench.train

    def train_failing_bc(cfg, *args, **kwargs):
        if cfg.algo == "bc":
            raise RuntimeError("boom")
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(bench, "train", train_failing_bc)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "env_id: Pendulum-v1\nsteps_per_iter: 100\nlearning_starts: 100\neval_episodes: 1\n"
        "batch_size: 32\nreward_updates_per_iter: 2\ntensorboard: false\n"
    )
    argv = ["control", "bench", "--config", str(config), "--algos", "bc", "aihf", "--seeds", "0"]
    argv += [
        "--total-steps",
        "100",
        "--demos",
        str(tiny_data["demos_path"]),
        "--prefs",
        str(tiny_data["prefs_path"]),
    ]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("aihf control bench: error: 1 job(s) failed: bc/seed0")
    assert (tmp_path / "out" / "aihf" / "seed0" / "results.json").is_file()  # the run after it still ran
    assert "| AIHF | 1 |" in (tmp_path / "out" / "results.md").read_text()


def test_the_plot_title_names_a_band_only_where_one_is_drawn(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from aihf.control import bench

    titles: list[str] = []
    monkeypatch.setattr(Axes, "set_title", lambda self, text, *a, **k: titles.append(text))
    sac = [(0, 1.0, 0.5), (100, 2.0, 0.5)]
    bench._plot(tmp_path / "a.png", {"bc": [(0, 3.0, 0.2)]}, "Hopper-v5", 10)  # BC's level line alone
    bench._plot(tmp_path / "b.png", {"bc": [(0, 3.0, 0.2)], "aihf": sac}, "Hopper-v5", 10)
    bench._plot(tmp_path / "c.png", {"aihf": sac}, "Hopper-v5", 1)
    assert titles == [
        "Hopper-v5: mean over 10 seeds",
        "Hopper-v5: mean over 10 seeds, band: +- 1 std",
        "Hopper-v5: one seed",
    ]
