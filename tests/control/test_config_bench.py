import csv
import json

import pytest

from aihf.control.bench import run_bench
from aihf.control.config import AIHFControlConfig
from aihf.errors import InputError


def test_yaml_config_flags_override_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("alpha: 0.5\nsteps_per_iter: 100\nreward_hidden: [32, 16]\n")
    cfg = AIHFControlConfig.from_yaml(path, base={"alpha": 2.0, "total_steps": 7}, steps_per_iter=50)
    assert (cfg.alpha, cfg.steps_per_iter, cfg.total_steps, cfg.reward_hidden) == (0.5, 50, 7, (32, 16))
    path.write_text("alpah: 0.5\n")
    with pytest.raises(InputError, match=r"c\.yaml: unknown option\(s\) alpah"):
        AIHFControlConfig.from_yaml(path)
    with pytest.raises(InputError, match="field 'algo' = 'ppo'"):
        AIHFControlConfig(algo="ppo")
    with pytest.raises(InputError, match="termination"):
        AIHFControlConfig(termination="ignore")


def test_bench_writes_curves_table_and_plot(tiny_data, tmp_path):
    overrides = {
        "steps_per_iter": 100,
        "learning_starts": 100,
        "eval_episodes": 2,
        "sac_batch_size": 32,
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

    overrides = {"steps_per_iter": 100, "learning_starts": 100, "eval_episodes": 1, "sac_batch_size": 32}
    overrides |= {"bc_steps": 20, "reward_updates_per_iter": 2, "tensorboard": False}
    data = {"demos_path": str(tiny_data["demos_path"]), "prefs_path": str(tiny_data["prefs_path"])}
    # two "processes": AIHF seed 0, then BC seeds 0 and 1, into one directory
    run_bench("Pendulum-v1", ["aihf"], [0], tmp_path, 100, progress=False, overrides=overrides, **data)
    run_bench("Pendulum-v1", ["bc"], [0, 1], tmp_path, 100, progress=False, overrides=overrides, **data)
    assert "AIHF" not in (tmp_path / "results.md").read_text()  # the last bench only saw its own runs
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
