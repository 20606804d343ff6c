"""The TRL-backed baselines read every shared config field with the meaning our own trainers give it."""

import dataclasses

import pytest
from trl import DPOConfig, RewardConfig, SFTConfig
from trl.experimental.orpo import ORPOConfig

from aihf.lm.baselines import trl_args
from aihf.lm.config import LMConfig

# Every LMConfig field that TRL also has, with a non-default value, and the TRL field that must carry it.
MAPPED = {
    "per_device_train_batch_size": ("per_device_train_batch_size", 3),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", 4),
    "max_steps": ("max_steps", 7),
    "learning_rate": ("learning_rate", 3e-4),
    "adam_beta1": ("adam_beta1", 0.8),
    "adam_beta2": ("adam_beta2", 0.95),
    "adam_epsilon": ("adam_epsilon", 1e-6),
    "weight_decay": ("weight_decay", 0.01),
    "warmup_steps": ("warmup_steps", 2),
    "lr_scheduler_type": ("lr_scheduler_type", "cosine"),
    "max_grad_norm": ("max_grad_norm", 0.5),
    "max_length": ("max_length", 96),
    "gradient_checkpointing": ("activation_checkpointing", True),
    "seed": ("seed", 5),
    "logging_steps": ("logging_steps", 3),
    "save_steps": ("save_steps", 2),
    "save_total_limit": ("save_total_limit", 1),
    "report_to": ("report_to", ["tensorboard"]),
    "use_cpu": ("use_cpu", True),
}


@pytest.mark.parametrize("trl_config", [SFTConfig, RewardConfig, DPOConfig, ORPOConfig])
def test_every_shared_field_reaches_trl(trl_config, tmp_path):
    values = {name: value for name, (_, value) in MAPPED.items()}
    config = LMConfig(output_dir=str(tmp_path / "stage"), **values)
    args = trl_args(config, trl_config)
    for name, (trl_name, value) in MAPPED.items():
        got = getattr(args, trl_name)
        assert (got.value if hasattr(got, "value") else got) == value, name
    assert args.optim == "adamw_torch"  # our trainers' optimiser (torch AdamW), not TRL's fused default
    assert args.output_dir == str(tmp_path / "stage" / "checkpoints")
    assert args.save_strategy == "steps"
    if "disable_dropout" in {f.name for f in dataclasses.fields(trl_config)}:
        assert args.disable_dropout is True


def test_no_saving_and_no_trackers_map_to_trl_off_switches(tmp_path):
    args = trl_args(
        LMConfig(output_dir=str(tmp_path), save_steps=0, report_to="none", use_cpu=True), DPOConfig
    )
    assert args.save_strategy == "no"
    assert args.report_to == []


@pytest.mark.parametrize("trainer", ["dpo", "direct-aihf"])
def test_snapshots_keep_the_policy_every_n_steps_loadable_and_the_last_is_the_final(
    trainer, tiny_dir, data_dir, tmp_path
):
    """TRL's trainers (a callback) and our loop write the same snapshots: for gold-vs-steps curves."""
    import torch
    from transformers import AutoModelForCausalLM

    from aihf.lm.modeling import load_causal_lm
    from aihf.lm.runtime import snapshot_dirs
    from aihf.lm.train import run_training

    out = tmp_path / trainer
    config = {
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "report_to": "none",
        "use_cpu": True,
        "snapshot_steps": 2,
    }
    config |= {
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
    }  # snapshots merge the adapter, OUT/policy is it
    data = {"prefs": str(data_dir / "prefs.jsonl"), "demos": str(data_dir / "demos.jsonl")}
    if trainer == "dpo":
        data.pop("demos")
    run_training(trainer, str(tiny_dir / "policy"), str(out), max_steps=4, config=config, **data)
    snaps = snapshot_dirs(out)
    assert [step for step, _ in snaps] == [2, 4]
    first, last = (AutoModelForCausalLM.from_pretrained(p).state_dict() for _, p in snaps)
    assert (out / "policy" / "adapter_config.json").is_file()
    final = load_causal_lm(str(out / "policy")).state_dict()  # the adapter over its base, merged
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert any(not torch.equal(first[k], final[k]) for k in final)  # step 2 is not step 4
