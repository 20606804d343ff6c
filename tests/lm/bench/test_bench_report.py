from pathlib import Path
from types import SimpleNamespace

import pytest

from aihf.lm.bench.bench import (
    BenchConfig,
    Job,
    _frontier,
    _record,
    make_plots,
    method_config,
    pair_verdict,
    render_report,
    summarise,
)


def fake_run(method, gold, kl, seed=0, demos=1000, prefs=1000, kl_scale=1.0, learned=False):
    metrics = {"gold_reward_mean": gold, "gold_reward_std": 0.1, "gold_reward_sem": 0.01, "kl_to_ref": kl}
    metrics["win_rate"] = 0.5 + gold
    samples = [{"prompt": "p", "completion": " c", "gold": gold + 0.1 * i} for i in range(5)]
    if learned:
        metrics |= {"reward_accuracy": 0.7, "learned_gold_spearman": 0.6}
        for i, s in enumerate(samples):
            s["learned"] = float(i)
    run = {"method": method, "demos": demos, "prefs": prefs, "kl_scale": kl_scale, "seed": seed}
    run |= {"config": {"beta": 0.1 * kl_scale}, "train_seconds": 3.0}
    return run | {"metrics": metrics, "samples": samples}


def test_summary_averages_seeds_and_reports_failures(tmp_path):
    cfg = BenchConfig(methods=["aihf", "rlhf", "dpo"], seeds=[0, 1], sweep_seeds=[0])
    cfg.pref_sizes, cfg.demo_sizes, cfg.kl_scales = [2000], [250], [3.0]
    runs = [
        fake_run("base", 0.0, 0.0),
        fake_run("aihf", 0.2, 1.0, seed=0, learned=True),
        fake_run("aihf", 0.4, 3.0, seed=1, learned=True),
        fake_run("rlhf", 0.1, 2.0, learned=True),
        fake_run("aihf", 0.05, 0.5, demos=250),
        fake_run("aihf", 0.6, 0.5, prefs=2000),
        fake_run("rlhf", 0.3, 0.5, prefs=2000),
        fake_run("aihf", 0.15, 0.2, kl_scale=3.0),
        {"method": "dpo", "demos": 1000, "prefs": 1000, "kl_scale": 1.0, "seed": 0, "config": {}}
        | {"error": "RuntimeError: boom"},
    ]
    ref = SimpleNamespace(gold=[0.0, 0.2])
    results = summarise(runs, cfg, ref, "vader", 12.0)
    aihf = results["methods"]["aihf"]  # the main runs only: sweep points do not enter the average
    assert aihf["gold_reward_mean"] == pytest.approx(0.3) and aihf["kl_to_ref"] == pytest.approx(2.0)
    assert aihf["seeds"] == 2 and aihf["across_seeds_std"]["gold_reward_mean"] == pytest.approx(
        0.02**0.5
    )  # ddof=1
    assert results["methods"]["dpo"] == {"error": "RuntimeError: boom"}
    assert results["reference"]["gold_reward_mean"] == pytest.approx(0.1)
    assert len(results["runs"]) == 8
    plots = make_plots(tmp_path, results, runs)
    assert set(plots) == {"gold_reward", "reward_vs_kl", "learned_vs_gold", "size_sweep"}
    assert all((tmp_path / p).stat().st_size > 1000 for p in plots.values())
    report = render_report(results, plots, tmp_path)
    assert "| aihf | 2 | 0.300 +- 0.100 (0.010) | 0.141 | 2.00 |" in report
    assert "- aihf vs rlhf: +0.200 (s.e. –): no verdict (fewer than 2 seeds)" in report
    assert "nan" not in report
    assert "(2 vs 1 seeds, provisional until both have 2)" in report  # a pair read before its seeds ran
    assert "| dpo | 0 | failed: RuntimeError: boom" in report
    assert (
        "| method | 1000 | 2000 |\n| --- | --- | --- |\n| aihf | 0.200 | 0.600 |\n| rlhf | 0.100 | 0.300 |"
        in report
    )
    frontier = (
        "| aihf | 0.1 | 0.200 (0.000) | 1.0 (0.0) | 1 |\n| aihf | 0.3 | 0.150 (0.000) | 0.2 (0.0) | 1 |"
    )
    assert frontier in report  # the sweep seed only
    assert "| method | 250 | 1000 |\n| --- | --- | --- |\n| aihf | 0.050 | 0.200 |\n\n" in report


def test_a_diagnostic_is_marked_keeps_no_snapshots_and_decides_no_pair():
    cfg = BenchConfig(methods=["aihf", "rlhf"], seeds=[0, 1], diagnostic_methods=["aihf-sft"])
    cfg.curve_points = 2
    assert "snapshot_steps" in _record(Job("aihf", 1000, 1000, 1.0, 0), cfg)["config"]
    assert "snapshot_steps" not in _record(Job("aihf-sft", 1000, 1000, 1.0, 0), cfg)["config"]
    runs = [fake_run("base", 0.0, 0.0)]
    runs += [fake_run(m, gold, 1.0, seed=s) for m, gold in (("aihf", 0.2), ("rlhf", 0.5)) for s in (0, 1)]
    runs += [fake_run("aihf-sft", 0.9 + 0.01 * s, 1.0, seed=s) for s in (0, 1)]
    for r in runs:  # seeds that differ a little, so that a pair could be decided
        r["metrics"]["gold_reward_mean"] += 0.001 * r["seed"]
    results = summarise(runs, cfg, SimpleNamespace(gold=[0.0]), "vader", 1.0)
    report = render_report(results, {}, Path("."))
    assert "| aihf-sft (diagnostic) | 2 |" in report and "| aihf | 2 |" in report
    runs = [r for r in runs if r["method"] != "aihf-sft"]
    not_run = render_report(summarise(runs, cfg, SimpleNamespace(gold=[0.0]), "vader", 1.0), {}, Path("."))
    assert "| aihf-sft (diagnostic) | 0 | not run yet |" in not_run
    assert "- aihf vs rlhf: -0.300 (s.e. 0.001): rlhf beats aihf" in report
    assert "- aihf-sft vs rlhf: +0.405" in report and "a diagnostic: no verdict" in report


def test_frontier_averages_seeds_per_beta():
    rows = [
        {"method": "dpo", "demos": 10, "prefs": 10, "kl_scale": k, "seed": seed, "beta": 0.1 * k}
        | {"gold_reward_mean": gold, "kl_to_ref": kl}
        for k, seed, gold, kl in [(1.0, 0, 0.5, 4.0), (1.0, 1, 0.7, 6.0), (2.0, 0, 0.2, 1.0), (2.0, 5, 9, 9)]
    ]
    cfg = {"n_demos": 10, "n_prefs": 10, "seeds": [0, 1], "sweep_seeds": None}
    points = _frontier(rows, "dpo", cfg)
    assert [(p["beta"], p["n"]) for p in points] == [(pytest.approx(0.1), 2), (pytest.approx(0.2), 1)]
    assert points[0]["gold"] == pytest.approx(0.6) and points[0]["gold_std"] == pytest.approx(0.02**0.5)
    assert points[0]["kl"] == pytest.approx(5.0) and points[1]["gold"] == pytest.approx(0.2)


def test_jobs_put_main_runs_first_and_share_the_main_point():
    cfg = BenchConfig(
        methods=["aihf", "dpo", "sft"], seeds=[0, 1], sweep_seeds=[0], sweep_methods=["aihf", "dpo"]
    )
    cfg.pref_sizes, cfg.demo_sizes, cfg.kl_scales = [2000], [250, 1000], [0.5]
    jobs = cfg.jobs()
    assert [j.name for j in jobs[:2]] == ["aihf_d1000_p1000_k1_s0", "aihf_d1000_p1000_k1_s1"]
    assert len(jobs) == len(set(jobs)) == 6 + 2 + 2 + 2  # demo size 1000 is the main point, not repeated
    assert {j.method for j in jobs[6:]} == {"aihf", "dpo"} and {j.seed for j in jobs[6:]} == {0}


def test_method_configs_scale_with_the_budget():
    cfg = BenchConfig(steps=40, iterations=7, spin_iterations=2, rlhf_reward_steps=21)
    aihf = method_config("aihf", cfg, 3)[2]
    assert (aihf["max_iterations"], aihf["reward_steps_per_iteration"]) == (7, 3)  # RLHF's reward budget
    assert "reward_steps_per_iteration" not in method_config("aihf-warm", cfg, 0)[2]
    trainer, needs, rlhf = method_config("rlhf", cfg, 0)
    assert (rlhf["reward_warmup_steps"], rlhf["sft_steps"], needs) == (21, 40, ("demos", "prefs", "prompts"))
    trainer, needs, values = method_config("spin", cfg, 1)
    assert (trainer, needs, values["steps_per_iteration"], values["seed"]) == ("spin", ("demos",), 20, 1)
    assert method_config("dpo", cfg, 0)[2]["max_steps"] == 40
    assert method_config("dpo", cfg, 0, kl_scale=3.0)[2]["beta"] == pytest.approx(0.3)
    cfg.overrides = {"aihf": {"beta": 0.2}}
    assert method_config("aihf", cfg, 0, kl_scale=0.5)[2]["beta"] == pytest.approx(0.1)


def test_smollm2_preset_builds_every_job_with_lora_chat_lengths_and_the_papers_starts(tmp_path):
    from aihf.lm.bench.bench import SFT_START, BenchConfig
    from aihf.lm.bench.cli import _check_bench
    from aihf.lm.tiny import save_tiny_models

    model = save_tiny_models(tmp_path, seed=0) / "policy"
    cfg = BenchConfig.smollm2(model)
    _check_bench(cfg)  # every job's trainer config validates (the registry's config classes)
    assert set(cfg.methods) == {"aihf", "rlhf", "direct-aihf", "dpo", "rpo", "orpo", "sft"}
    assert cfg.gold == f"fluent-sentiment:{model}" and cfg.data_dir.endswith("smollm2")
    for method in cfg.methods:
        values = method_config(method, cfg, 0)[2]
        assert (values["use_peft"], values["max_length"], values["max_prompt_length"]) == (True, 96, 64)
    assert method_config("rpo", cfg, 0)[:2] == ("rpo", ("prefs",))
    assert "rpo" in SFT_START and "orpo" not in SFT_START and "direct-aihf" not in SFT_START
    assert method_config("aihf", cfg, 0)[2]["max_new_tokens"] == cfg.sampling.max_new_tokens == 32
    jobs = cfg.jobs()
    main = [j for j in jobs if (j.demos, j.prefs, j.kl_scale) == (500, 1000, 1.0)]
    assert len(main) == 7 * 3 + 2 and {j.seed for j in jobs if j not in main} == {0}  # sweeps: one seed
    # the headline runs first, then the two diagnostics (seed 0), then the 24 sweep points
    assert [j.name for j in jobs[21:23]] == ["aihf-sft_d500_p1000_k1_s0", "aihf-warm_d500_p1000_k1_s0"]
    assert len(jobs) == 21 + 2 + 24
    quick = BenchConfig.smollm2(model, quick=True)
    assert quick.seeds == [0] and not (quick.pref_sizes or quick.demo_sizes or quick.kl_scales)


def test_a_pair_is_decided_only_beyond_twice_the_welch_standard_error():
    def entry(mean, std, seeds=3):
        return {"gold_reward_mean": mean, "seeds": seeds, "across_seeds_std": {"gold_reward_mean": std}}

    diff, se, verdict = pair_verdict("aihf", entry(0.8, 0.03), "rlhf", entry(0.7, 0.03))
    assert diff == pytest.approx(0.1) and se == pytest.approx((2 * 0.03**2 / 3) ** 0.5)
    assert verdict == "aihf beats rlhf"
    assert pair_verdict("aihf", entry(0.6, 0.03), "rlhf", entry(0.7, 0.03))[2] == "rlhf beats aihf"
    assert pair_verdict("aihf", entry(0.8, 0.1), "rlhf", entry(0.7, 0.1))[2] == "tie at this budget"
