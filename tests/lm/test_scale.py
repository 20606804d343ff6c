"""PEFT LoRA, bf16 autocast and gradient checkpointing on the hand-written trainers (CPU, tiny models)."""

import math

import pytest
import torch

from aihf.lm.modeling import load_causal_lm, load_reward_model
from aihf.lm.train import run_training

RL = {"batch_size": 3, "prompt_batch_size": 2, "num_samples": 2, "max_new_tokens": 5, "report_to": "none"}


def _changed(loader, before_dir, after_dir):
    before = loader(str(before_dir)).state_dict()
    after = loader(str(after_dir)).state_dict()
    assert set(before) == set(after)  # LoRA merged (the reward model) or loaded merged (a policy adapter)
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "options",
    [
        {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2},
        {"bf16": True, "gradient_checkpointing": True, "learning_rate": 1e-3},
    ],
    ids=["lora", "bf16-checkpointing"],
)
def test_aihf_with_lora_or_bf16(tiny_dir, data_dir, tmp_path, options):
    out = tmp_path / "out"
    final = run_training(
        "aihf",
        str(tiny_dir / "policy"),
        str(out),
        reward_model=str(tiny_dir / "reward_model"),
        demos=str(data_dir / "demos.jsonl"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_iterations=2,
        config=RL | options,
    )
    assert all(math.isfinite(v) for v in final.values())
    assert _changed(load_causal_lm, tiny_dir / "policy", out / "policy")
    assert _changed(load_reward_model, tiny_dir / "reward_model", out / "reward_model")
    # LoRA: the policy is its adapter, the reward model full weights (a classifier any scorer loads)
    assert (out / "policy" / "adapter_config.json").is_file() == bool(options.get("use_peft"))
    assert (out / "reward_model" / "config.json").is_file()


def test_direct_aihf_with_lora_uses_the_base_as_reference(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "out"
    options = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2, "batch_size": 3}
    final = run_training(
        "direct-aihf",
        str(tiny_dir / "policy"),
        str(out),
        demos=str(data_dir / "demos.jsonl"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_steps=3,
        config=options | {"report_to": "none"},
    )
    assert math.isfinite(final["loss"]) and final["rewards/margins"] != 0.0  # pi moved away from pi_0
    assert _changed(load_causal_lm, tiny_dir / "policy", out / "policy")
