import argparse
import json
from types import SimpleNamespace

import pytest

from aihf.errors import InputError
from aihf.experiments.queue import parse_shard
from aihf.lm import cli as lm_cli
from aihf.lm.bench import cli
from aihf.lm.tiny import save_tiny_models


def parse(argv):
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    lm_cli.register_eval(subparsers)  # `aihf lm eval` is the lm package's, not the benchmark's
    cli.register(subparsers)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


def test_eval_command_writes_metrics_and_samples(tiny, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"The film {i} was"}) + "\n" for i in range(6)))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "A", "chosen": " good", "rejected": " bad"}) + "\n")
    out = tmp_path / "eval.json"
    policy, rm = str(tiny / "policy"), str(tiny / "reward_model")
    argv = [
        "eval",
        "--policy",
        policy,
        "--reference",
        policy,
        "--prompts",
        str(prompts),
        "--reward-model",
        rm,
    ]
    args = parse([*argv, "--prefs", str(prefs), "--max-new-tokens", "4", "--out", str(out)])
    assert args.handler(args) == 0
    saved = json.loads(out.read_text())
    assert saved["metrics"]["kl_to_ref"] == pytest.approx(0.0, abs=1e-5)
    assert saved["metrics"]["n_prompts"] == 6 and len(saved["samples"]) == 6
    assert {"reward_accuracy", "learned_gold_spearman", "win_rate"} <= set(saved["metrics"])


def test_eval_command_names_bad_input(tiny, tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    args = parse(["eval", "--policy", str(tiny / "policy"), "--prompts", str(bad)])
    with pytest.raises(InputError, match=r"prompts.jsonl, line 2, field 'prompt'"):
        args.handler(args)
    args = parse(["eval", "--policy", str(tiny / "policy"), "--prompts", str(tmp_path / "missing.jsonl")])
    with pytest.raises(InputError, match="file not found"):
        args.handler(args)


def test_bench_options_reach_the_config(monkeypatch):
    from aihf.lm.bench import bench

    seen = {}

    def fake_run(out, cfg, workers, report_only, deadline):
        seen.update(cfg=cfg, workers=workers, report_only=report_only, deadline=deadline)
        return {"failed": [], "postponed": []}

    monkeypatch.setattr(bench, "run_bench", fake_run)
    sweeps = ["--pref-sizes", "50", "--demo-sizes", "20", "--kl-scales", "0.5"]
    rest = ["--shard", "1/3", "--override", "dpo.beta=0.2", "--workers", "2"]
    args = parse(["bench", "--out", "x", "--methods", "sft", "dpo", "--seeds", "1", "2", *sweeps, *rest])
    assert args.handler(args) == 0
    cfg = seen["cfg"]
    assert (cfg.quick, cfg.methods, cfg.seeds, cfg.pref_sizes, cfg.demo_sizes) == (
        False,
        ["sft", "dpo"],
        [1, 2],
        [50],
        [20],
    )
    assert (cfg.kl_scales, cfg.shard, cfg.overrides) == ([0.5], (1, 3), {"dpo": {"beta": 0.2}})
    assert seen["workers"] == 2 and seen["report_only"] is False
    assert seen["cfg"].diagnostic_methods == []  # the tiny presets run none
    args = parse(["bench", "--out", "x", "--report-only", "--diagnostic-methods", "aihf-sft"])
    assert args.handler(args) == 0 and seen["report_only"] is True
    assert seen["cfg"].diagnostic_methods == ["aihf-sft"]
    args = parse(["bench", "--out", "x", "--diagnostic-methods", "aihf-sftt"])
    with pytest.raises(InputError, match=r"--diagnostic-methods: unknown methods \['aihf-sftt'\]"):
        args.handler(args)
    args = parse(["bench", "--out", "x", "--records", "no/such/dir"])
    with pytest.raises(InputError, match="--records no/such/dir: not a directory"):
        args.handler(args)
    assert seen["deadline"] is None
    monkeypatch.setattr(cli, "time", SimpleNamespace(time=lambda: 1000.0))  # a stopped clock
    args = parse(["bench", "--out", "x", "--time-limit", "90"])
    assert args.handler(args) == 0 and seen["deadline"] == 1000.0 + 90 * 60
    for bad in ("0", "-5", "nan", "inf"):
        args = parse(["bench", "--out", "x", "--time-limit", bad])
        with pytest.raises(InputError, match=r"--time-limit = .*: expected"):
            args.handler(args)
    args = parse(["bench", "--out", "x", "--report-only", "--time-limit", "90"])
    with pytest.raises(InputError, match="--report-only trains nothing"):
        args.handler(args)
    args = parse(["bench", "--out", "x", "--report-only", "--shard", "0/2"])
    with pytest.raises(InputError, match="--report-only writes the report of every shard"):
        args.handler(args)
    for bad in ("3/3", "1", "a/2"):
        with pytest.raises(InputError, match="expected I/N"):
            parse_shard(bad)
    assert 1 <= cli._parse_workers("auto") <= 4
    for bad in ("0", "-1", "two"):
        with pytest.raises(InputError, match="expected auto or a whole number"):
            cli._parse_workers(bad)


def test_overrides_are_parsed_per_method():
    assert cli._parse_overrides(["aihf.beta=0.1", "aihf.alpha=2", "dpo.loss_type=ipo"]) == {
        "aihf": {"beta": 0.1, "alpha": 2},
        "dpo": {"loss_type": "ipo"},
    }
    with pytest.raises(InputError, match=r"expected METHOD\.KEY=VALUE"):
        cli._parse_overrides(["beta=0.1"])


def test_failed_jobs_are_listed_and_the_exit_code_is_1(monkeypatch, capsys, tmp_path):
    """Every other job still ran (run_bench records failures and goes on); the command then fails."""
    from aihf.cli import main
    from aihf.lm.bench import bench

    def fake_run(out, cfg, workers, report_only, deadline):
        return {"failed": ["dpo_d1000_p1000_k1_s0"], "postponed": []}

    monkeypatch.setattr(bench, "run_bench", fake_run)
    argv = ["lm", "bench", "--out", str(tmp_path / "x"), "--quick", "--methods", "dpo", "--workers", "1"]
    assert main(argv) == 1
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("aihf lm bench: error: 1 bench job(s) failed: dpo_d1000_p1000_k1_s0")


def test_jobs_left_by_the_time_limit_are_listed_and_the_exit_code_is_0(monkeypatch, capsys):
    from aihf.lm.bench import bench

    def fake_run(out, cfg, workers, report_only, deadline):
        return {"failed": [], "postponed": ["sft_d1000_p1000_k1_s1", "dpo_d1000_p1000_k1_s1"]}

    monkeypatch.setattr(bench, "run_bench", fake_run)
    args = parse(["bench", "--out", "x", "--quick", "--methods", "dpo", "--time-limit", "10"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "2 job(s) left for a later call (--time-limit): sft_d1000_p1000_k1_s1, dpo_d1000" in out


def test_a_protocol_file_with_an_unknown_method_or_a_bad_field_stops_before_any_job(tmp_path, capsys):
    from aihf.cli import main
    from aihf.lm.bench.bench import PRESETS, PROTOCOL_DIR

    text = (PROTOCOL_DIR / PRESETS["tiny"]).read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("methods: [aihf, rlhf,", "methods: [aihf, rlfh,"))
    assert main(["lm", "bench", "--out", str(tmp_path / "out"), "--protocol", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}: field 'methods': unknown method 'rlfh'" in err
    bad.write_text(text.replace("n_test: 1024", "n_tests: 1024"))
    assert main(["lm", "bench", "--out", str(tmp_path / "out"), "--protocol", str(bad)]) == 2
    assert f"{bad}: unknown field 'n_tests'" in capsys.readouterr().err
    bad.write_text(text.replace("steps: 80", "steps: many"))
    assert main(["lm", "bench", "--out", str(tmp_path / "out"), "--protocol", str(bad)]) == 2
    assert f"{bad}: field 'steps' = 'many': expected an integer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_auto_workers_are_one_per_idle_core_at_most_four(monkeypatch):
    import os

    import torch

    from aihf.lm.bench.bench import default_workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for load, expected in ((1.2, 4), (5.0, 3), (2.0 + 6.4, 1)):  # another job's cores are not idle
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert default_workers() == expected
