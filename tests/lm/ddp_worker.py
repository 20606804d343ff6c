"""Run by test_accelerate.py under `accelerate launch`: a few AIHF iterations with LoRA (resumed from
the newest checkpoint when asked), then each process writes a fingerprint of its final policy and
reward weights so the test can compare processes and runs."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from aihf.lm.aihf_trainer import AIHFTrainer
from aihf.lm.config import AIHFConfig
from aihf.lm.data import prepare_text_data
from aihf.lm.modeling import load_causal_lm, load_reward_model, load_tokenizer


def fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def main(tiny: Path, data: Path, out: Path, iterations: int, resume: bool) -> None:
    tokenizer = load_tokenizer(str(tiny / "policy"))
    config = AIHFConfig(
        output_dir=str(out),
        max_iterations=iterations,
        save_steps=1,
        resume_from_checkpoint=resume or None,
        use_peft=True,
        lora_r=4,
        per_device_train_batch_size=3,
        prompt_batch_size=2,
        num_generations=2,
        max_completion_length=5,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
    )
    initial = fingerprint(load_causal_lm(str(tiny / "policy")))
    trainer = AIHFTrainer(
        load_causal_lm(str(tiny / "policy")),
        tokenizer,
        config,
        reward_model=load_reward_model(str(tiny / "reward_model")),
        demos=prepare_text_data(data / "demos.jsonl", "demos", tokenizer),
        prefs=prepare_text_data(data / "prefs.jsonl", "prefs", tokenizer),
        prompts=prepare_text_data(data / "prompts.jsonl", "prompts", tokenizer),
    )
    trainer.train()
    acc = trainer.accelerator
    record = {
        "world": acc.num_processes,
        "initial": initial,
        "policy": fingerprint(acc.unwrap_model(trainer.policy)),
        "reward": fingerprint(acc.unwrap_model(trainer.reward_model)),
    }
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]), int(sys.argv[4]), sys.argv[5] == "resume")
