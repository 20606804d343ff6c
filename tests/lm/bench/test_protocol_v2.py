"""Knobs with one meaning across protocols (docs/lm_protocol_v2.md, section 2): the paper's alpha, the
v1 records still matched by the v1 protocol, a warmed reward that changes only the start, the
policy:reward update ratio per method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aihf.lm.bench.bench import (
    PROTOCOL_DIR,
    BenchConfig,
    canonical_record,
    method_config,
    policy_updates,
    portable,
    read_bench_protocol,
    trainer_values,
)

ROOT = Path(__file__).resolve().parents[3]
V1_RECORDS = ROOT / "docs" / "results" / "lm" / "smollm2" / "records"
MODEL = "/somewhere/.cache/aihf/models/smollm2-135m-instruct"  # a cache path: records compare portably


def test_the_v1_protocol_still_matches_its_committed_records():
    """Re-run, the v1 file computes what v1 computed (folded alpha), so its records are reused; only
    aihf-warm's are not: v1 ran it with 1 reward step per iteration instead of AIHF's 3, the confound
    v2 removes, so re-running v1 reruns it."""
    cfg = read_bench_protocol(PROTOCOL_DIR / "lm_smollm2.yaml", model_dir=MODEL)
    assert cfg.alpha_convention == "folded"
    jobs = {job.name: job for job in cfg.jobs()}
    records = sorted(V1_RECORDS.glob("*.json"))
    assert len(records) == 47
    for path in records:
        record, job = canonical_record(json.loads(path.read_text())), jobs[path.stem]  # TRL's names
        assert "alpha_convention" not in job.spec
        assert job.matches(record, portable) == (job.method != "aihf-warm"), path.name
    warm = jobs["aihf-warm_d500_p1000_k1_s0"].spec["config"]
    assert (
        warm["reward_steps_per_iteration"]
        == jobs["aihf_d500_p1000_k1_s0"].spec["config"]["reward_steps_per_iteration"]
        == 3
    )


def test_a_folded_alpha_reaches_the_trainer_as_the_papers_alpha_times_beta():
    folded = BenchConfig(methods=["aihf", "dpo"], alpha_convention="folded")
    # v1: alpha 1 (the default then) at beta 0.05 is the paper's 0.05; a beta sweep kept weight 1
    assert trainer_values(folded, "aihf", {"beta": 0.05})["alpha"] == pytest.approx(0.05)
    assert trainer_values(folded, "aihf", {"beta": 0.1, "alpha": 2.0})["alpha"] == pytest.approx(0.2)
    assert trainer_values(folded, "aihf-warm", {"beta": 0.025})["alpha"] == pytest.approx(0.025)
    assert trainer_values(folded, "dpo", {"beta": 0.1, "alpha": 1.0}) == {"beta": 0.1, "alpha": 1.0}
    paper = BenchConfig(methods=["aihf"])
    assert trainer_values(paper, "aihf", {"beta": 0.1, "alpha": 0.3}) == {"beta": 0.1, "alpha": 0.3}
    assert paper.job("aihf", 8, 8, 1.0, 0).spec["alpha_convention"] == "paper"
    assert "alpha_convention" not in folded.job("aihf", 8, 8, 1.0, 0).spec


def test_a_beta_sweep_keeps_the_papers_alpha_and_every_kl_weight_is_stated():
    cfg = BenchConfig(methods=["aihf", "self-play-aihf", "sft"], overrides={"aihf": {"alpha": 0.3}})
    values = method_config("aihf", cfg, 0, kl_scale=2.0)[2]
    assert values["alpha"] == 0.3 and values["beta"] == pytest.approx(0.1)
    # a method whose protocol states no beta states its config class's default, the one source
    from aihf.lm.config import SelfPlayAIHFConfig

    assert method_config("self-play-aihf", cfg, 0)[2]["beta"] == SelfPlayAIHFConfig().beta
    assert "beta" not in method_config("sft", cfg, 0)[2]


def test_the_protocol_sets_the_policy_to_reward_update_ratio_per_method():
    cfg = BenchConfig(
        methods=["aihf", "aihf-warm"],
        iterations=10,
        rlhf_reward_steps=30,
        method_settings={"aihf": {"policy_steps_per_iteration": 4, "reward_steps_per_iteration": 1}},
    )
    aihf = method_config("aihf", cfg, 0)[2]
    assert (aihf["policy_steps_per_iteration"], aihf["reward_steps_per_iteration"]) == (4, 1)
    warm = method_config("aihf-warm", cfg, 0)[2]  # its own ratio: the budget's 30 / 10
    assert "policy_steps_per_iteration" not in warm and warm["reward_steps_per_iteration"] == 3


V2 = PROTOCOL_DIR / "lm_smollm2_v2.yaml"


def test_the_v2_protocol_reads_and_matches_policy_updates_across_each_pair():
    cfg = read_bench_protocol(V2, model_dir=MODEL)
    assert cfg.alpha_convention == "paper" and cfg.gold == "on-task-sentiment"
    assert cfg.pending and cfg.tuning_seeds == [100] and len(cfg.seeds) == 5 and cfg.curve_points >= 8
    assert set(cfg.tuning_seeds) <= set(cfg.curve_seeds)  # the pilot's runs keep their snapshots
    assert "snapshot_steps" in cfg.job("aihf", cfg.n_demos, cfg.n_prefs, 1.0, 100).spec["config"]

    def updates(method: str) -> int:
        return policy_updates(cfg, method, trainer_values(cfg, method, method_config(method, cfg, 0)[2]))

    counts = {method: updates(method) for method in [*cfg.methods, "aihf-4to1"]}  # the pilot's other ratio
    assert set(counts.values()) == {cfg.iterations}, counts
    assert method_config("aihf-causal-a0", cfg, 0)[2]["alpha"] == 0.0
    assert method_config("aihf-small-beta", cfg, 0)[2]["alpha"] == 0.05  # a smaller beta, the same alpha


@pytest.mark.parametrize(
    ("method", "settings", "expected"),
    [
        ("aihf", {"max_iterations": 48, "policy_steps_per_iteration": 4}, 192),
        ("rlhf", {"sft_steps": 24, "max_iterations": 168, "policy_steps_per_iteration": 1}, 192),
        ("spin", {"max_iterations": 2, "steps_per_iteration": 96}, 192),
        ("dpo", {"max_steps": 96}, 96 + 7),  # from the SFT start: its 7 steps count
        ("direct-aihf", {"max_steps": 192}, 192),
        ("sft", {"max_steps": 7}, 7),
    ],
)
def test_a_jobs_policy_updates_count_every_optimiser_step_on_the_policy(method, settings, expected):
    cfg = BenchConfig(methods=[method], steps=7)
    values = method_config(method, cfg, 0)[2] | settings
    assert policy_updates(cfg, method, values) == expected


def test_the_quick_preset_matches_its_pair_in_policy_updates():
    cfg = read_bench_protocol(PROTOCOL_DIR / "lm_smollm2_quick.yaml", model_dir=MODEL)
    counts = {m: policy_updates(cfg, m, method_config(m, cfg, 0)[2]) for m in cfg.methods}
    assert counts == {"sft": 2, "dpo": 4, "direct-aihf": 4}


def test_the_v2_protocol_runs_only_the_tuning_seed_until_the_pilot_sets_its_pending_fields(
    tmp_path, capsys, tiny_dir
):
    from aihf.cli import main

    here = tmp_path / "v2.yaml"  # the tiny model in place of SmolLM2, so nothing is converted
    here.write_text(
        V2.read_text().replace("model: smollm2-135m-instruct", f"base_model: {tiny_dir / 'policy'}")
    )
    argv = ["lm", "bench", "--protocol", str(here), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "protocol field 'pending': iterations, steps" in err
    assert "seeds [0, 1, 2, 3, 4] may not run yet (--seeds 100)" in err
    assert not (tmp_path / "out" / "runs").exists()
    assert main([*argv, "--seeds", "100", "--methods", "aihf", "--n-test", "0"]) == 2  # past that check
    assert "'pending'" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("kl_grid: [1.0, 2.0, 4.0, 8.0]", "kl_grid: [2.0, 1.0]"),
        ("pending: [iterations,", "pending: [iteratoins,"),
        ("methods: [aihf, rlhf,", "methods: [aihf, rlfh,"),
    ],
)
def test_a_bad_v2_protocol_field_is_one_line(tmp_path, text, said):
    from aihf.errors import InputError

    bad = tmp_path / "v2.yaml"
    bad.write_text(V2.read_text().replace(text, said))
    with pytest.raises(InputError) as err:
        read_bench_protocol(bad, model_dir=MODEL)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{bad}: field ")
    assert ("'kl_grid'" in message) or ("'pending'" in message) or ("unknown method 'rlfh'" in message)


def test_a_kl_grid_outside_every_runs_range_stops_the_report():
    from aihf.errors import InputError
    from aihf.lm.bench.bench import check_kl_grid

    runs = [
        {"method": "aihf", "metrics": {"kl_to_ref": 6.0}, "curve": [{"kl_to_ref": 0.5}, {"kl_to_ref": 3.0}]},
        {"method": "rlhf", "metrics": {"kl_to_ref": 9.0}, "curve": []},
        {"method": "base", "metrics": {"kl_to_ref": 0.0}},
    ]
    check_kl_grid(BenchConfig(kl_grid=[0.5, 4.0, 9.0]), runs)
    with pytest.raises(
        InputError, match=r"^protocol field 'kl_grid': 12 nats is outside every finished run's KL"
    ):
        check_kl_grid(BenchConfig(kl_grid=[4.0, 12.0]), runs)
    with pytest.raises(InputError, match=r"'kl_grid': 7 nats"):  # between the runs' ranges
        check_kl_grid(BenchConfig(kl_grid=[7.0]), runs)


def test_a_gold_that_does_not_load_is_one_line_before_any_job(tmp_path, capsys):
    from aihf.cli import main

    bad = tmp_path / "p.yaml"
    text = (PROTOCOL_DIR / "lm_tiny.yaml").read_text()
    bad.write_text(text.replace("gold: vader", f"gold: 'on-task-sentiment:{tmp_path / 'no-model'}'"))
    out = tmp_path / "out"
    assert main(["lm", "bench", "--quick", "--protocol", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "protocol field 'gold' = 'on-task-sentiment:" in err
    assert not (out / "runs").exists()


def test_data_dir_takes_the_shipped_v2_sets_by_key(monkeypatch):
    import argparse

    from aihf.lm.bench import bench, cli
    from aihf.lm.bench.datagen import SMOLLM2_V2_DATA_DIR

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())

    seen = {}

    def fake_run(out, cfg, workers, report_only, deadline):
        seen["cfg"] = cfg
        return {"failed": [], "postponed": []}

    monkeypatch.setattr(bench, "run_bench", fake_run)
    for key, where in (
        ("smollm2-v2", SMOLLM2_V2_DATA_DIR),
        ("smollm2-v2/scarce", SMOLLM2_V2_DATA_DIR / "variants" / "scarce"),
        ("elsewhere/data", Path("elsewhere/data")),
    ):
        args = parser.parse_args(["bench", "--out", "x", "--methods", "sft", "--data-dir", key])
        assert args.handler(args) == 0 and seen["cfg"].data_dir == str(where)
