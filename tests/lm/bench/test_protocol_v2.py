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
    method_config,
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
        record, job = json.loads(path.read_text()), jobs[path.stem]
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
