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
from aihf.lm.loop import Callback, EvalData, Evaluate, Snapshots
from aihf.lm.modeling import load_causal_lm, load_reward_model, lora_config, model_init_kwargs


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
            # TRL's evaluation metrics (eval_loss, eval_rewards/accuracies, ...) under our eval/ prefix
            record = {
                "step": state.global_step,
                **{_eval_name(k): v for k, v in logs.items() if isinstance(v, (int, float))},
            }
            self.last.update(record)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    return JsonlMetrics()


def _eval_name(key: str) -> str:
    return "eval/" + key[len("eval_") :] if key.startswith("eval_") else key


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


def _gold_callback(trainer: Any, config: LMConfig, evaluation: EvalData, model: str) -> Any:
    """Our `Evaluate` (gold reward, KL to the starting policy `model`) run by a TRL trainer every
    eval_steps optimiser steps; its eval/ metrics go through the Trainer's log to the trackers and
    OUT/metrics.jsonl (`Trainer.log` itself: TRL's overrides would flush their running training means)."""
    from types import SimpleNamespace

    from transformers import Trainer, TrainerCallback

    from aihf.lm.modeling import SamplingConfig, load_causal_lm

    reference = getattr(trainer, "ref_model", None)  # DPO's frozen copy; SFT, ORPO and LoRA keep none
    if reference is None:
        reference = runtime.prepare_frozen(trainer.accelerator, load_causal_lm(model), config.bf16)
    prompts = evaluation.prompts[: config.eval_num_prompts]
    sampling = SamplingConfig(max_new_tokens=config.eval_max_new_tokens)
    every = config.eval_steps or config.logging_steps
    evaluate = Evaluate(every, prompts, evaluation.gold, reference, sampling)

    class GoldEvaluation(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            view = SimpleNamespace(
                state=SimpleNamespace(step=state.global_step),
                accelerator=trainer.accelerator,
                policy=trainer.model,
                tokenizer=trainer.processing_class,
                config=config,
            )
            metrics: dict[str, float] = {}
            evaluate.on_step_end(view, metrics)
            if metrics:
                Trainer.log(trainer, metrics)

    return GoldEvaluation()


def trl_args(config: LMConfig, config_cls: Any, evaluates: bool = False, **extra: Any) -> Any:
    """TRL's arguments from our config: every shared field keeps the meaning it has in our trainers.

    Optimiser (torch AdamW, decay off biases and norms), schedule and warm-up, micro-batch and
    accumulation, logging, evaluation (`evaluates`: an `eval_dataset` is given) and saving units
    (optimiser steps: TRL stages are step-based), trackers, and the stage's own checkpoint directory
    OUT/checkpoints (RLHF gives each stage its own OUT).
    """
    out = Path(config.output_dir)
    if "disable_dropout" in {f.name for f in dataclasses.fields(config_cls)}:  # SFTConfig has no such field
        extra["disable_dropout"] = config.disable_dropout
    if evaluates:  # TRL's own evaluation of the held-out pairs (`eval_dataset`), every eval_steps steps
        every = config.eval_steps or config.logging_steps
        extra |= {
            "eval_strategy": "steps",
            "eval_steps": every,
            "per_device_eval_batch_size": config.per_device_train_batch_size,
        }
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
        dataset_num_proc=config.dataset_num_proc,
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


def _eval_dataset(evaluation: EvalData | None) -> Any:
    """The held-out pairs as TRL's `eval_dataset` (None: TRL does not evaluate)."""
    from datasets import Dataset

    return Dataset.from_list(evaluation.prefs.rows) if evaluation and evaluation.prefs else None


def _peft_config(config: LMConfig, task_type: str) -> Any:
    return lora_config(config, task_type) if config.use_peft else None


def _model(model: Any, config: LMConfig, loader: Any) -> Any:
    """A model instance, or one loaded from a path with the config's `dtype` and `attn_implementation`;
    called after TRL's arguments are made, which set up DeepSpeed ZeRO-3's sharded loading."""
    return loader(model, model_init_kwargs(config)) if isinstance(model, str) else model


def _finish(
    trainer: Any,
    callback: Any,
    config: LMConfig,
    method: str,
    target: str,
    sources: dict,
    data: TextData,
    evaluation: EvalData | None = None,
) -> dict:
    checkpoint = runtime.resolve_resume(Path(config.output_dir), config.resume_from_checkpoint)
    log = Path(config.output_dir) / "metrics.jsonl"
    if checkpoint is None:  # a fresh run (or RLHF stage) into an old directory starts a fresh log
        log.unlink(missing_ok=True)
    elif checkpoint.name.split("-")[-1].isdigit():
        runtime.trim_metrics(log, int(checkpoint.name.split("-")[-1]))

    def card(adapter: bool = False) -> str:
        return runtime.model_card(method, sources, [data], config.to_dict(), dict(callback.last), adapter)

    if config.snapshot_steps:

        def save(path: Path) -> None:  # full weights: evaluation loads every snapshot
            runtime.save_model(trainer.accelerator, trainer.model, trainer.processing_class, path, card())

        snapshots = Snapshots(config.snapshot_steps, Path(config.output_dir), save)
        trainer.add_callback(as_trl_callback(snapshots))
    if evaluation is not None and evaluation.gold is not None and evaluation.prompts:
        trainer.add_callback(_gold_callback(trainer, config, evaluation, sources["model"]))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    path = Path(config.output_dir) / target
    if target == "policy":  # with LoRA its adapter; a reward model is saved merged, for any scorer
        runtime.save_policy(trainer.accelerator, trainer.model, trainer.processing_class, path, config, card)
    else:
        runtime.save_model(trainer.accelerator, trainer.model, trainer.processing_class, path, card())
    return dict(callback.last)


def run_sft(
    model: Any,
    tokenizer: Any,
    config: LMConfig,
    demos: TextData,
    sources: dict,
    evaluation: EvalData | None = None,
) -> dict:
    """TRL SFTTrainer on the demonstrations; `model` is a model or a path (each runner below alike)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    callback = _jsonl_callback(Path(config.output_dir) / "metrics.jsonl")
    args = trl_args(config, SFTConfig)
    trainer = SFTTrainer(
        model=_model(model, config, load_causal_lm),
        args=args,
        train_dataset=Dataset.from_list(demos.rows),
        processing_class=tokenizer,
        peft_config=_peft_config(config, "CAUSAL_LM"),
        callbacks=[callback, _manifest_callback()],
    )
    return _finish(trainer, callback, config, "sft", "policy", sources, demos, evaluation)


def run_reward(
    model: Any,
    tokenizer: Any,
    config: LMConfig,
    prefs: TextData,
    sources: dict,
    target: str = "reward_model",
    evaluation: EvalData | None = None,
) -> dict:
    """BTL reward model (TRL RewardTrainer), optionally with TRL's reward centring."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    callback = _jsonl_callback(Path(config.output_dir) / "metrics.jsonl")
    held_out = _eval_dataset(evaluation)
    centring = getattr(config, "center_rewards_coefficient", None)
    args = trl_args(config, RewardConfig, held_out is not None, center_rewards_coefficient=centring)
    trainer = RewardTrainer(
        model=_model(model, config, load_reward_model),
        args=args,
        train_dataset=Dataset.from_list(prefs.rows),
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=_peft_config(config, "SEQ_CLS"),
        callbacks=[callback, _manifest_callback()],
    )
    return _finish(trainer, callback, config, "reward", target, sources, prefs, evaluation)


def run_pairwise(
    model: Any,
    tokenizer: Any,
    config: Any,
    prefs: TextData,
    sources: dict,
    method: str,
    evaluation: EvalData | None = None,
) -> dict:
    """The preference baselines TRL implements: DPO, IPO, RPO (DPO + alpha * SFT on chosen) and ORPO."""
    from datasets import Dataset

    held_out = _eval_dataset(evaluation)
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig as TRLConfig
        from trl.experimental.orpo import ORPOTrainer as TRLTrainer

        args = trl_args(config, TRLConfig, held_out is not None, beta=config.beta)
    else:
        from trl import DPOConfig as TRLConfig
        from trl import DPOTrainer as TRLTrainer

        losses = {
            "dpo": {"loss_type": [config.loss_type]},
            "ipo": {"loss_type": ["ipo"]},
            "rpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.alpha]},
        }[method]
        args = trl_args(
            config,
            TRLConfig,
            held_out is not None,
            beta=config.beta,
            label_smoothing=config.label_smoothing,
            **losses,
        )
    callback = _jsonl_callback(Path(config.output_dir) / "metrics.jsonl")
    trainer = TRLTrainer(
        model=_model(model, config, load_causal_lm),
        args=args,
        train_dataset=Dataset.from_list(prefs.rows),
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=_peft_config(config, "CAUSAL_LM"),
        callbacks=[callback, _manifest_callback()],
    )
    return _finish(trainer, callback, config, method, "policy", sources, prefs, evaluation)
