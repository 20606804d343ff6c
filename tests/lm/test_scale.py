"""PEFT LoRA, bf16 autocast and gradient checkpointing on the hand-written trainers, and the FSDP2 path
(CPU, tiny models)."""

import contextlib
import json
import math
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aihf.lm.modeling import load_causal_lm, load_reward_model
from aihf.lm.train import run_training

RL = {
    "per_device_train_batch_size": 3,
    "prompt_batch_size": 2,
    "num_generations": 2,
    "max_completion_length": 5,
    "report_to": "none",
}


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
    assert _changed(load_causal_lm, tiny_dir / "policy", out / "policy")


# --- FSDP2 ---------------------------------------------------------------------------------------------
# accelerate 1.16 runs FSDP on accelerator devices only (a CPU launch becomes MULTI_CPU, i.e. DDP), so no
# trainer runs under FSDP here: torch's own `fully_shard` does run on CPU over gloo, and the sharded-model
# steps (sampling, copying pi_t, gathering for saving) are checked on it; accelerate's side is checked with
# the shipped config and a mocked distributed type. benchmarks/gpu_smoke.sh runs the trainers on GPUs.


# a two-process launch (about 20 s); the DDP launch in test_accelerate.py stays in the default suite
@pytest.mark.slow
def test_fsdp2_sharded_policy_samples_unsharded_copies_and_gathers_on_two_cpu_processes(tiny_dir, tmp_path):
    """Two processes over gloo: inside `unsharded_for_generation` the parameters are whole, so greedy
    decoding matches the unsharded model even when the processes decode different numbers of steps (with
    FSDP2's per-step all-gathers they would wait on each other forever); sharded again after. pi_t's copy
    is a plain model of the original class with the full weights on every process; the saving gather
    gives them to the main process only."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    worker = Path(__file__).with_name("fsdp2_worker.py")
    src = Path(__file__).resolve().parents[2] / "src"
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(port), str(worker), str(tiny_dir / "policy"), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    for rank in ranks:
        assert rank["full_inside"] and rank["resharded"] and rank["same_generation"]
        assert rank["copy_class"] == "GPT2LMHeadModel" and not rank["copy_is_sharded"] and rank["copy_equal"]
        assert rank["saved_equal"]
    assert ranks[0]["saved_keys"] > 0 and ranks[1]["saved_keys"] == 0


def _accelerate_config(name: str) -> Any:
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(Path(__file__).resolve().parents[2] / "configs" / "accelerate" / name))


def test_the_shipped_fsdp2_and_multi_node_configs_load_as_accelerate_reads_them():
    fsdp = _accelerate_config("fsdp2.yaml")
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    nodes = _accelerate_config("multi_node.yaml")
    assert nodes.num_machines > 1 and nodes.num_processes % nodes.num_machines == 0
    assert nodes.main_process_ip and nodes.main_process_port


def _fsdp_accelerator(version: int = 2) -> Any:
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    return SimpleNamespace(
        distributed_type=DistributedType.FSDP,
        state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=version)),
        device=torch.device("cpu"),
        is_main_process=True,
        wait_for_everyone=lambda: None,
        unwrap_model=lambda model: model,
        get_state_dict=lambda model: {k: v.clone() for k, v in model.state_dict().items()},
    )


def test_under_fsdp_the_runtime_shards_frozen_models_unshards_for_sampling_and_saves_a_plain_model(
    tiny_dir, tmp_path, monkeypatch
):
    import trl.models.utils

    from aihf.errors import InputError
    from aihf.lm import runtime
    from aihf.lm.config import AIHFConfig

    acc = _fsdp_accelerator()
    runtime.check_accumulation(acc, AIHFConfig(gradient_accumulation_steps=2))  # FSDP accumulates itself
    with pytest.raises(InputError, match=r"fsdp_version 1: the aihf trainers run FSDP2"):
        runtime.check_accumulation(_fsdp_accelerator(1), AIHFConfig())
    with pytest.raises(InputError, match=r"use_peft with FSDP"):
        runtime.check_accumulation(acc, AIHFConfig(use_peft=True))
    sharded = []
    monkeypatch.setattr(trl.models.utils, "prepare_fsdp", lambda model, a: sharded.append(model) or model)
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy")
    frozen = runtime.prepare_frozen(acc, policy, bf16=False)
    assert sharded == [frozen] and not any(p.requires_grad for p in frozen.parameters())
    chosen = []
    unshard = lambda model: chosen.append(model) or contextlib.nullcontext(model)  # noqa: E731
    monkeypatch.setattr(runtime, "unsharded_for_generation", unshard)
    with runtime.generation_model(acc, policy) as model:  # FSDP's unsharding, not TRL's unwrap
        assert model is policy and chosen == [policy]
    policy.requires_grad_(True)
    with torch.no_grad():
        policy.transformer.wte.weight.add_(0.5)
    runtime.save_model(
        acc, policy, AutoTokenizer.from_pretrained(tiny_dir / "policy"), tmp_path / "p", "card"
    )
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    assert torch.equal(saved.transformer.wte.weight, policy.transformer.wte.weight)
    assert (tmp_path / "p" / "README.md").read_text() == "card"
