"""PEFT LoRA, bf16 autocast and gradient checkpointing on the hand-written trainers (CPU, tiny models)."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from aihf.lm.train import run_training

RL = {
    "per_device_train_batch_size": 3,
    "prompt_batch_size": 2,
    "num_generations": 2,
    "max_completion_length": 5,
    "report_to": "none",
}


def _changed(loader, before_dir, after_dir):
    before = loader.from_pretrained(before_dir).state_dict()
    after = loader.from_pretrained(after_dir).state_dict()
    assert set(before) == set(after)  # merged LoRA: a plain model again
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
    assert _changed(AutoModelForCausalLM, tiny_dir / "policy", out / "policy")
    assert _changed(AutoModelForSequenceClassification, tiny_dir / "reward_model", out / "reward_model")


def test_direct_aihf_with_lora_uses_the_base_as_reference(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "out"
    options = {
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 3,
    }
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
    assert _changed(AutoModelForCausalLM, tiny_dir / "policy", out / "policy")
