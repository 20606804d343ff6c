from types import SimpleNamespace

import pytest

from aihf.lm.bench.bench import BenchConfig, make_plots, method_config, render_report, summarise


def fake_run(method, gold, kl, seed=0, size=1000, learned=False):
    metrics = {"gold_reward_mean": gold, "gold_reward_std": 0.1, "gold_reward_sem": 0.01, "kl_to_ref": kl}
    metrics["win_rate"] = 0.5 + gold
    samples = [{"prompt": "p", "completion": " c", "gold": gold + 0.1 * i} for i in range(5)]
    if learned:
        metrics |= {"reward_accuracy": 0.7, "learned_gold_spearman": 0.6}
        for i, s in enumerate(samples):
            s["learned"] = float(i)
    run = {"method": method, "size": size, "seed": seed, "config": {}, "train_seconds": 3.0}
    return run | {"metrics": metrics, "samples": samples}


def test_summary_averages_seeds_and_reports_failures(tmp_path):
    cfg = BenchConfig(methods=["aihf", "rlhf", "dpo"], seeds=[0, 1], sizes=[250])
    runs = [
        fake_run("base", 0.0, 0.0),
        fake_run("aihf", 0.2, 1.0, seed=0, learned=True),
        fake_run("aihf", 0.4, 3.0, seed=1, learned=True),
        fake_run("rlhf", 0.1, 2.0, learned=True),
        fake_run("aihf", 0.05, 0.5, size=250),
        {"method": "dpo", "size": 1000, "seed": 0, "config": {}, "error": "RuntimeError: boom"},
    ]
    ref = SimpleNamespace(gold=[0.0, 0.2])
    results = summarise(runs, cfg, ref, "vader", 12.0)
    aihf = results["methods"]["aihf"]
    assert aihf["gold_reward_mean"] == pytest.approx(0.3) and aihf["kl_to_ref"] == pytest.approx(2.0)
    assert aihf["seeds"] == 2 and aihf["across_seeds_std"]["gold_reward_mean"] == pytest.approx(0.1)
    assert results["methods"]["dpo"] == {"error": "RuntimeError: boom"}
    assert results["reference"]["gold_reward_mean"] == pytest.approx(0.1)
    assert len(results["runs"]) == 5
    plots = make_plots(tmp_path, results, runs)
    assert set(plots) == {"gold_reward", "reward_vs_kl", "learned_vs_gold", "size_sweep"}
    assert all((tmp_path / p).stat().st_size > 1000 for p in plots.values())
    report = render_report(results, plots, tmp_path)
    assert "| aihf | 0.300 +- 0.100 (0.010) | 0.100 | 2.00 |" in report
    assert "- aihf vs rlhf: +0.200 (aihf higher" in report
    assert "| dpo | failed: RuntimeError: boom" in report


def test_method_configs_scale_with_the_budget():
    cfg = BenchConfig(steps=40, iterations=7, spin_iterations=2, rlhf_reward_steps=9)
    assert method_config("aihf", cfg, 3)[2]["max_iterations"] == 7
    assert method_config("rlhf", cfg, 0)[2]["reward_warmup_steps"] == 9
    trainer, needs, values = method_config("spin", cfg, 1)
    assert (trainer, needs, values["steps_per_iteration"], values["seed"]) == ("spin", ("demos",), 20, 1)
    assert method_config("dpo", cfg, 0)[2]["max_steps"] == 40
