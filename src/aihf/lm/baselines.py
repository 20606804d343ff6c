"""The baselines TRL already implements, run through TRL: SFT, BTL reward model, DPO, IPO, RPO, ORPO.

Our part is only the plumbing: map our config onto TRL's, hand TRL the validated text data, copy
TRL's logs into OUT/metrics.jsonl, and save the result as OUT/policy or OUT/reward_model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from aihf import checkpoints
from aihf.lm import runtime
from aihf.lm.config import LMConfig
from aihf.lm.data import TextData
from aihf.lm.loop import Callback, Snapshots
from aihf.lm.modeling import lora_config


def _jsonl_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        """Append every TRL log record to OUT/metrics.jsonl (main process only)."""

        def __init__(self) -> None:
            self.last: dict[str, float] = {}

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            record = {
                "step": state.global_step,
                **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
            }
            self.last.update(record)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    return JsonlMetrics()


def _manifest_callback() -> Any:
    from transformers import TrainerCallback

    class Manifest(TrainerCallback):
        """Seal each TRL checkpoint with a manifest once the Trainer has saved it (`aihf.checkpoints`)."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                checkpoints.write_manifest(path)

    return Manifest()


def as_trl_callback(callback: Callback) -> Any:
    """One of our loop's callbacks run by a TRL trainer: its `on_step_end` after each optimiser step."""
    from types import SimpleNamespace

    from transformers import TrainerCallback

    class Adapter(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            view = SimpleNamespace(state=SimpleNamespace(step=state.global_step))
            callback.on_step_end(view, {})

    return Adapter()


def trl_args(config: LMConfig, config_cls: Any, **extra: Any) -> Any:
    """TRL's arguments from our config: every shared field keeps the meaning it has in our trainers.

    Optimiser (torch AdamW, decay off biases and norms), schedule and warm-up, micro-batch and
    accumulation, logging and saving units (optimiser steps: TRL stages are step-based), trackers, and
    the stage's own checkpoint directory OUT/checkpoints (RLHF gives each stage its own OUT).
    """
    out = Path(config.output_dir)
    if "disable_dropout" in {f.name for f in dataclasses.fields(config_cls)}:  # SFTConfig has no such field
        extra["disable_dropout"] = config.disable_dropout
    return config_cls(
        output_dir=str(out / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        optim="adamw_torch",
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        max_length=config.max_length,
        bf16=config.bf16,
        activation_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        report_to=runtime.trackers(config),
        use_cpu=config.use_cpu,
        disable_tqdm=False,
        **extra,
    )


def _peft_config(config: LMConfig, task_type: str) -> Any:
    return lora_config(config, task_type) if config.use_peft else None


def _finish(
    trainer: Any, callback: Any, config: LMConfig, method: str, target: str, sources: dict, notes: list
) -> dict:
    checkpoint = runtime.resolve_resume(Path(config.output_dir), config.resume_from_checkpoint)
    log = Path(config.output_dir) / "metrics.jsonl"
    if checkpoint is None:  # a fresh run (or RLHF stage) into an old directory starts a fresh log
        log.unlink(missing_ok=True)
    elif checkpoint.name.split("-")[-1].isdigit():
        runtime.trim_metrics(log, int(checkpoint.name.split("-")[-1]))
    card = runtime.model_card(method, sources.get("model") or "?", sources, config.to_dict(), notes)
    if config.snapshot_steps:

        def save(path: Path) -> None:
            runtime.save_model(trainer.accelerator, trainer.model, trainer.processing_class, path, card)

        snapshots = Snapshots(config.snapshot_steps, Path(config.output_dir), save)
        trainer.add_callback(as_trl_callback(snapshots))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    runtime.save_model(
        trainer.accelerator, trainer.model, trainer.processing_class, Path(config.output_dir) / target, card
    )
    return dict(callback.last)


def run_sft(model: Any, tokenizer: Any, config: LMConfig, demos: TextData, sources: dict) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    callback = _jsonl_callback(Path(config.output_dir) / "metrics.jsonl")
    trainer = SFTTrainer(
        model=model,
        args=trl_args(config, SFTConfig),
        train_dataset=Dataset.from_list(demos.rows),
        processing_class=tokenizer,
        peft_config=_peft_config(config, "CAUSAL_LM"),
        callbacks=[callback, _manifest_callback()],
    )
    return _finish(trainer, callback, config, "sft", "policy", sources, demos.notes)


def run_reward(
    model: Any, tokenizer: Any, config: LMConfig, prefs: TextData, sources: dict, target: str = "reward_model"
) -> dict:
    """BTL reward model (TRL RewardTrainer), optionally with TRL's reward centring."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    callback = _jsonl_callback(Path(config.output_dir) / "metrics.jsonl")
    centring = getattr(config, "center_rewards_coefficient", None)
    trainer = RewardTrainer(
        model=model,
        args=trl_args(config, RewardConfig, center_rewards_coefficient=centring),
        train_dataset=Dataset.from_list(prefs.rows),
        processing_class=tokenizer,
        peft_config=_peft_config(config, "SEQ_CLS"),
        callbacks=[callback, _manifest_callback()],
    )
    return _finish(trainer, callback, config, "reward", target, sources, prefs.notes)


def run_pairwise(
    model: Any, tokenizer: Any, config: Any, prefs: TextData, sources: dict, method: str
) -> dict:
    """The preference baselines TRL implements: DPO, IPO, RPO (DPO + alpha * SFT on chosen) and ORPO."""
    from datasets import Dataset

    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig as TRLConfig
        from trl.experimental.orpo import ORPOTrainer as TRLTrainer

        args = trl_args(config, TRLConfig, beta=config.beta)
    else:
        from trl import DPOConfig as TRLConfig
        from trl import DPOTrainer as TRLTrainer

        losses = {
            "dpo": {"loss_type": [config.loss_type]},
            "ipo": {"loss_type": ["ipo"]},
            "rpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.alpha]},
        }[method]
        args = trl_args(config, TRLConfig, beta=config.beta, label_smoothing=config.label_smoothing, **losses)
    callback = _jsonl_callback(Path(config.output_dir) / "metrics.jsonl")
    trainer = TRLTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(prefs.rows),
        processing_class=tokenizer,
        peft_config=_peft_config(config, "CAUSAL_LM"),
        callbacks=[callback, _manifest_callback()],
    )
    return _finish(trainer, callback, config, method, "policy", sources, prefs.notes)
