from pathlib import Path

from aihf.lm import quickstart
from aihf.lm.bench.bench import method_config, policy_updates, read_bench_protocol


def test_the_quick_preset_is_smollm2_with_lora_one_seed_and_matched_updates(monkeypatch):
    monkeypatch.setattr("aihf.lm.pretrained.get_model", lambda name: f"/models/{name}")
    cfg = read_bench_protocol(quickstart.PROTOCOL)
    assert cfg.base_model == "/models/smollm2-135m-instruct" and cfg.seeds == [0]
    assert cfg.settings["common"]["use_peft"] is True
    for pair in cfg.pairs:  # SFT starts included
        assert len({policy_updates(cfg, m, method_config(m, cfg, 0)[2]) for m in pair}) == 1, pair


def test_the_quick_preset_runs_the_v2_data_and_the_bounded_gold_and_says_its_range(tmp_path):
    from aihf.lm.bench.report import gold_range

    cfg = read_bench_protocol(quickstart.PROTOCOL, model_dir=tmp_path)  # no model conversion (~30 s)
    assert cfg.gold == "on-task-sentiment" and Path(cfg.data_dir).name == "smollm2_v2"
    assert gold_range(cfg.gold).startswith("in [0, 1]")  # not "a custom gold reward"


def test_the_quick_verdict_says_what_one_seed_cannot_and_the_full_table_is_labelled():
    rows = [
        {"method": "base", "gold_reward_mean": 0.5, "kl_to_ref": 0.0, "kl_scale": 1.0},
        {"method": "dpo", "gold_reward_mean": 0.61, "kl_to_ref": 1.25, "kl_scale": 1.0},
    ]
    text = quickstart.quick_verdict({"runs": rows}, n_test=16)
    assert "from the `base` row's 0.500 to: dpo 0.610 (KL 1.2 nats)" in text
    assert "One seed" in text and "cannot say whether AIHF helps" in text and "standard errors" not in text
    rows[0]["gold_reward_sem"], rows[1]["gold_reward_sem"] = 0.03, 0.04  # difference 0.11 = 2.2 s.e.
    assert "The largest move is 2.2 standard errors of the difference (over 16 prompts)." in (
        quickstart.quick_verdict({"runs": rows}, n_test=16)
    )
    rows[1]["gold_reward_sem"] = 0.08
    assert "1.3 standard errors of the difference (over 16 prompts), within sampling noise" in (
        quickstart.quick_verdict({"runs": rows}, n_test=16)
    )
    assert "A KL below 0" not in quickstart.quick_verdict({"runs": rows}, n_test=16)
    rows[1]["kl_to_ref"] = -0.02
    assert "A KL below 0 is the sampling error of its estimate" in quickstart.quick_verdict(
        {"runs": rows}, n_test=16
    )
    full = quickstart.full_table()
    assert (
        "not rerun here" in full and "| AIHF beats RLHF |" in full and "**Verdict (full benchmark).**" in full
    )
