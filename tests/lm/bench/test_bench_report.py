from dataclasses import asdict
from pathlib import Path

import pytest

from aihf.lm.bench.bench import BenchConfig, method_config
from aihf.lm.bench.report import _frontier, make_plots, pair_tests, render_report, summarise


def fake_run(method, gold, kl, seed=0, demos=1000, prefs=1000, kl_scale=1.0, learned=False):
    metrics = {"gold_reward_mean": gold, "gold_reward_std": 0.1, "gold_reward_sem": 0.01, "kl_to_ref": kl}
    metrics["win_rate"] = 0.5 + gold
    samples = [{"prompt": "p", "completion": " c", "gold": gold + 0.1 * i} for i in range(5)]
    if learned:
        metrics |= {"reward_accuracy": 0.7, "learned_gold_spearman": 0.6}
        for i, s in enumerate(samples):
            s["learned"] = float(i)
    run = {"method": method, "demos": demos, "prefs": prefs, "kl_scale": kl_scale, "seed": seed}
    run |= {"config": {"beta": 0.1 * kl_scale}, "train_seconds": 3.0, "policy_updates": 40}
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
    results = summarise(runs, asdict(cfg), [0.0, 0.2], "vader", 12.0)
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
    assert "| aihf | 2 | 40 | 0.300 +- 0.100 (0.010) | 0.141 | 2.00 |" in report
    assert (
        "- aihf vs rlhf: +0.200 (s.e. –, Welch t – on – df, p –, permutation p –, Holm p –): undecided "
        "(fewer than 2 seeds an arm)" in report
    )
    assert "nan" not in report
    assert "(2 vs 1 seeds, provisional until both have 2)" in report  # a pair read before its seeds ran
    assert "| dpo | 0 | | failed: RuntimeError: boom" in report
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
    assert "snapshot_steps" in cfg.job("aihf", 1000, 1000, 1.0, 0).spec["config"]
    assert "snapshot_steps" not in cfg.job("aihf-sft", 1000, 1000, 1.0, 0).spec["config"]
    runs = [fake_run("base", 0.0, 0.0)]
    runs += [fake_run(m, gold, 1.0, seed=s) for m, gold in (("aihf", 0.2), ("rlhf", 0.5)) for s in (0, 1)]
    runs += [fake_run("aihf-sft", 0.9 + 0.01 * s, 1.0, seed=s) for s in (0, 1)]
    for r in runs:  # seeds that differ a little, so that a pair could be decided
        r["metrics"]["gold_reward_mean"] += 0.001 * r["seed"]
    results = summarise(runs, asdict(cfg), [0.0], "vader", 1.0)
    report = render_report(results, {}, Path("."))
    assert "| aihf-sft (diagnostic) | 2 |" in report and "| aihf | 2 |" in report
    runs = [r for r in runs if r["method"] != "aihf-sft"]
    not_run = render_report(summarise(runs, asdict(cfg), [0.0], "vader", 1.0), {}, Path("."))
    assert "| aihf-sft (diagnostic) | 0 | | not run yet |" in not_run
    assert "- aihf vs rlhf: -0.300 (s.e. 0.001, Welch t -424.26 on 2.0 df, p 0.000" in report
    assert "Holm p 0.000): rlhf beats aihf" in report
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
    # a warmed reward changes only the start: the same reward updates per iteration as AIHF's
    warm = method_config("aihf-warm", cfg, 0)[2]
    assert warm == aihf | {"seed": 0}
    trainer, needs, rlhf = method_config("rlhf", cfg, 0)
    assert (rlhf["reward_warmup_steps"], rlhf["sft_steps"], needs) == (21, 40, ("demos", "prefs", "prompts"))
    trainer, needs, values = method_config("spin", cfg, 1)
    assert (trainer, needs, values["steps_per_iteration"], values["seed"]) == ("spin", ("demos",), 20, 1)
    assert method_config("dpo", cfg, 0)[2]["max_steps"] == 40
    assert method_config("dpo", cfg, 0, kl_scale=3.0)[2]["beta"] == pytest.approx(0.3)
    cfg.overrides = {"aihf": {"beta": 0.2}}
    assert method_config("aihf", cfg, 0, kl_scale=0.5)[2]["beta"] == pytest.approx(0.1)


def test_smollm2_preset_builds_every_job_with_lora_chat_lengths_and_the_papers_starts(tmp_path):
    from aihf.lm.bench.cli import _check_bench
    from aihf.lm.methods import VARIANTS
    from aihf.lm.tiny import save_tiny_models

    model = save_tiny_models(tmp_path, seed=0) / "policy"
    cfg = BenchConfig.preset("smollm2", model_dir=model)
    _check_bench(cfg)  # every job's trainer config validates (the registry's config classes)
    assert set(cfg.methods) == {"aihf", "rlhf", "direct-aihf", "dpo", "rpo", "orpo", "sft"}
    assert cfg.gold == f"fluent-sentiment:{model}" and cfg.data_dir.endswith("smollm2")
    for method in cfg.methods:
        values = method_config(method, cfg, 0)[2]
        assert (values["use_peft"], values["max_length"], values["max_prompt_length"]) == (True, 96, 64)
    assert method_config("rpo", cfg, 0)[:2] == ("rpo", ("prefs",))
    sft_start = {name for name, variant in VARIANTS.items() if variant.start == "sft"}
    assert "rpo" in sft_start and "orpo" not in sft_start and "direct-aihf" not in sft_start
    assert method_config("aihf", cfg, 0)[2]["max_completion_length"] == cfg.sampling.max_new_tokens == 32
    jobs = cfg.jobs()
    main = [j for j in jobs if dict(j.settings) == {"demos": 500, "prefs": 1000, "kl_scale": 1.0}]
    assert len(main) == 7 * 3 + 2 and {j.seed for j in jobs if j not in main} == {0}  # sweeps: one seed
    # the headline runs first, then the two diagnostics (seed 0), then the 24 sweep points
    assert [j.name for j in jobs[21:23]] == ["aihf-sft_d500_p1000_k1_s0", "aihf-warm_d500_p1000_k1_s0"]
    assert len(jobs) == 21 + 2 + 24
    quick = BenchConfig.preset("smollm2", quick=True, model_dir=model)
    assert quick.seeds == [0] and not (quick.pref_sizes or quick.demo_sizes or quick.kl_scales)


def test_a_pair_is_decided_by_welch_t_with_its_df_holm_adjusted_over_the_claims():
    """Three seeds an arm: Welch's df is small, so a gap of 2 standard errors does not decide; the
    exact permutation p of 3 vs 3 seeds cannot go below 0.1; Holm counts every claim of the family."""
    cfg = {"n_demos": 10, "n_prefs": 10, "seeds": [0, 1, 2], "diagnostic_methods": ["aihf-sft"]}

    def runs(method, golds):
        return [
            {"method": method, "demos": 10, "prefs": 10, "kl_scale": 1.0, "seed": s, "gold_reward_mean": g}
            for s, g in enumerate(golds)
        ]

    rows = runs("aihf", [0.80, 0.83, 0.86]) + runs("rlhf", [0.70, 0.73, 0.76])  # t 4.08 on 4 df: p 0.015
    rows += runs("direct-aihf", [0.70, 0.80, 0.90]) + runs("dpo", [0.53, 0.63, 0.73])  # 2.08 s.e. apart
    rows += runs("aihf-sft", [0.90, 0.91, 0.92])
    entry = {"gold_reward_mean": 0.0, "seeds": 3}
    methods = {m: entry for m in ("aihf", "rlhf", "direct-aihf", "dpo", "aihf-sft")}
    pairs = {(p["a"], p["b"]): p for p in pair_tests({"config": cfg, "runs": rows, "methods": methods})}
    aihf = pairs[("aihf", "rlhf")]
    assert aihf["test"].df == pytest.approx(4.0) and aihf["test"].p_welch == pytest.approx(0.0151, abs=1e-3)
    assert aihf["test"].p_perm == pytest.approx(0.1)  # the smallest p of 20 equally likely splits
    assert aihf["p_holm"] == pytest.approx(2 * aihf["test"].p_welch)  # two claims; aihf-sft is a diagnostic
    direct = pairs[("direct-aihf", "dpo")]
    assert direct["test"].diff > 2 * direct["test"].se and direct["test"].p_welch > 0.05  # the old rule's win
    assert "p_holm" not in pairs[("aihf-sft", "rlhf")]


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_reports_permutation_floor_is_the_p_of_arms_that_do_not_overlap(seeds):
    from aihf.experiments.report import pair_test
    from aihf.lm.bench.report import permutation_floor

    separated = pair_test([1.0 + i for i in range(seeds)], [-1.0 - i for i in range(seeds)])
    assert permutation_floor(seeds) == f"with {seeds} seeds an arm it cannot go below {separated.p_perm:.3g}"


def test_a_protocol_defines_its_own_variants_of_registered_methods(tmp_path):
    from aihf.errors import InputError
    from aihf.lm.bench.bench import read_bench_protocol

    path = tmp_path / "p.yaml"
    variants = "variants:\n  direct-aihf-a0.3: {method: direct-aihf, settings: {alpha: 0.3}}\n"
    variants += "  rlhf-short-sft: {method: rlhf, start: base}\n"
    path.write_text(f"methods: [direct-aihf, direct-aihf-a0.3]\npairs: [[direct-aihf-a0.3, dpo]]\n{variants}")
    cfg = read_bench_protocol(path)
    trainer, _, values = method_config("direct-aihf-a0.3", cfg, 0)
    assert (trainer, values["alpha"], values["beta"]) == ("direct-aihf", 0.3, 0.1)  # the method's beta too
    own, registered = cfg.job("direct-aihf-a0.3", 8, 8, 1.0, 0), cfg.job("direct-aihf", 8, 8, 1.0, 0)
    assert own.spec["variant"]["method"] == "direct-aihf" and "variant" not in registered.spec
    path.write_text("methods: [dpo-x]\nvariants:\n  dpo-x: {method: dop}\n")
    with pytest.raises(InputError, match=r"p.yaml: field 'methods': variant 'dpo-x': unknown method 'dop'"):
        read_bench_protocol(path)
    path.write_text("methods: [dpo]\nvariants:\n  dpo-x: {method: dpo, start: sft2}\n")
    with pytest.raises(InputError, match=r"p.yaml: field 'variants', 'dpo-x': field 'start' = 'sft2'"):
        read_bench_protocol(path)


def test_a_record_from_another_checkout_or_cache_is_reused(tmp_path):
    """Records hold the machine's paths (shipped data, model cache): they compare by their place in
    the package and the cache, so committed records are reused from any checkout."""
    import json

    from aihf.lm.bench.bench import _store

    cfg = BenchConfig(methods=["sft"], n_demos=8, n_prefs=8)
    cfg.data_dir, cfg.base_model = (
        "/here/src/aihf/data/lm/smollm2",
        "/home/me/.cache/aihf/models/smollm2-135m-instruct",
    )
    cfg.gold, cfg.records = f"fluent-sentiment:{cfg.base_model}", str(tmp_path / "records")
    job = cfg.job("sft", 8, 8, 1.0, 0)
    there = json.loads(
        json.dumps(dict(job.spec)).replace("/here/src/", "/elsewhere/").replace("/home/me/.cache", "/c")
    )
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / f"{job.name}.json").write_text(json.dumps(there | {"metrics": {}}))
    assert _store(tmp_path / "out", cfg).finished(job) is not None
    cfg.data_dir = "/here/src/aihf/data/lm/generated"  # other data: not this job's record
    assert _store(tmp_path / "out", cfg).finished(cfg.job("sft", 8, 8, 1.0, 0)) is None


def test_the_report_names_the_model_units_and_both_base_numbers_and_notes_diagnostics_only_when_there_are(
    tmp_path,
):
    cfg = BenchConfig(methods=["aihf", "rlhf"], seeds=[0], base_model="/cache/models/smollm2-135m-instruct")
    runs = [fake_run("base", 0.0, 0.0), fake_run("aihf", 0.2, 1.0), fake_run("rlhf", 0.5, 1.0)]
    results = summarise(runs, asdict(cfg), [0.0, 0.1], "vader", 1.0)
    report = render_report(results, make_plots(tmp_path, results, runs), Path("."))
    assert report.startswith(
        "Model: smollm2-135m-instruct. Gold reward: `vader` (VADER compound sentiment, in [-1, 1])"
    )
    assert "nats per completion" in report and "the `base` row scores the same policy" in report
    assert "(diagnostic)" not in report
    assert {"gold_reward.png", "reward_vs_kl.png"} <= {p.name for p in tmp_path.iterdir()}


def test_the_header_counts_the_rows_the_runs_trained_on_when_the_data_has_fewer(tmp_path):
    cfg = BenchConfig(methods=["aihf"], seeds=[0], n_demos=4, n_prefs=10)
    (tmp_path / "demos.jsonl").write_text('{"a": 1}\n' * 5)
    (tmp_path / "prefs.jsonl").write_text('{"a": 1}\n' * 7 + "\n")
    results = summarise(
        [fake_run("base", 0.0, 0.0), fake_run("aihf", 0.2, 1.0)], asdict(cfg), [0.0], "vader", 1.0
    )
    report = render_report(results, {}, tmp_path)
    assert "4 demonstrations, 7 (all the data has; the protocol asks for 10) preference pairs" in report


def _curve(golds, sem=0.02):
    return [
        {"step": 10 * (i + 1), "gold_reward_mean": g, "gold_reward_sem": sem} for i, g in enumerate(golds)
    ]


def test_the_plateau_rule_finds_where_a_seed_mean_curve_flattens():
    from aihf.lm.bench.report import plateau

    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert plateau({"0": _curve(rising)}) == (None, 80)  # each 3-mean moves by 0.3 >> s.e. 0.016
    flat_late = [0.1, 0.3, 0.6, 0.61, 0.6, 0.6, 0.61, 0.6, 0.6]
    # at step 80 the last three (0.6, 0.61, 0.6) and the three before (0.6, 0.61, 0.6) agree; at 70 the
    # three before (0.3, 0.6, 0.61) are 0.1 lower
    assert plateau({"0": _curve(flat_late)}) == (80, 90)
    # a step of 0.014: within the s.e. of the difference for one seed with s.e. 0.03 (sqrt(6 x 0.03^2) / 3
    # = 0.0245), beyond it for two seeds with s.e. 0.02 each (sqrt(6 x 0.02^2 / 2) / 3 = 0.0115)
    step = [0.5, 0.5, 0.5, 0.514, 0.514, 0.514]
    assert plateau({"0": _curve(step, sem=0.03)}) == (60, 60)
    assert plateau({"0": _curve(step, sem=0.02), "1": _curve(step, sem=0.02)}) == (None, 60)
    # a curve recorded without s.e. is never called flat; steps one seed lacks are left out
    bare = [{k: v for k, v in p.items() if k != "gold_reward_sem"} for p in _curve([0.5] * 6)]
    assert plateau({"0": bare}) == (None, 60)
    assert plateau({"0": _curve([0.5] * 6), "1": _curve([0.5] * 5)}) == (None, 50)
