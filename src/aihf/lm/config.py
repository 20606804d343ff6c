"""Configuration dataclasses of the LM trainers, loadable from YAML; CLI flags override their fields.

One base (`LMConfig`: optimisation, lengths, precision, PEFT, logging, checkpoints) and one
dataclass per trainer family. Defaults are small-model friendly; the paper's settings are in
`configs/lm/*.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from aihf.errors import InputError
from aihf.validation import AT_LEAST_1, LENGTH, NON_NEGATIVE, POSITIVE, SEED, Range, validate_config
from aihf.validation import load_yaml as load_yaml  # the one YAML reader; lm callers import it here

# accelerate's trackers, and TRL's words for all of them or none.
TRACKERS = {"tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab"}
TRACKERS |= {"all", "none"}


@dataclass
class LMConfig:
    output_dir: str = "aihf-lm-output"
    seed: int = 0
    learning_rate: float = 1e-5
    batch_size: int = 8  # per process and micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step (effective batch = product)
    max_steps: int = 100  # optimiser steps (non-iterative trainers)
    max_length: int = 512  # prompt + answer tokens
    max_prompt_length: int = 256
    overlong: Literal["truncate", "drop", "error"] = "truncate"
    chat_template: str | None = None  # Jinja template (or a file of one) for conversational data
    max_grad_norm: float = 1.0
    disable_dropout: bool = True  # as TRL: dropout makes log pi/pi_0 and sampled-vs-scored inconsistent
    # The optimiser is AdamW (torch) everywhere, weight decay off biases and norms, as transformers' Trainer.
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0  # optimiser steps of linear warm-up
    lr_scheduler_type: str = "constant_with_warmup"  # any transformers.get_scheduler name, e.g. "cosine"
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    # logging_steps and save_steps count the run's own unit: iterations for the iterative methods
    # (aihf, rlhf's RL stage, self-play-aihf, spin), optimiser steps for the others.
    logging_steps: int = 1
    save_steps: int = 0  # checkpoint every N units; 0: only the final model
    # every N units, also the policy as a loadable model (LoRA merged) in OUT/snapshots/step-N, all kept:
    # for gold reward against training steps (paper Fig. 6); 0: none
    snapshot_steps: int = 0
    save_total_limit: int = 2
    resume_from_checkpoint: str | bool | None = None  # a checkpoint directory, or True for the latest
    # accelerate trackers: "tensorboard", "wandb", "trackio", ... ("all" / "none"); wandb and trackio run
    # offline unless their own environment variables say otherwise. metrics.jsonl is always written.
    report_to: str | list[str] = dataclasses.field(default_factory=lambda: ["tensorboard"])
    cpu: bool = False

    def __post_init__(self) -> None:
        validate_config(self, RANGES)  # every field's type and range (RANGES, end of this file)
        names = [self.report_to] if isinstance(self.report_to, str) else self.report_to
        unknown = sorted(set(names) - TRACKERS)
        if unknown:
            raise InputError(f"field 'report_to' = {unknown}: expected some of {sorted(TRACKERS)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> LMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(
                f"{where}: unknown keys {unknown} for {cls.__name__}; valid keys: {sorted(names)}"
            )
        try:
            return cls(**values)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PolicyStepConfig:
    """The RL policy step shared by AIHF and RLHF (lower level of the bilevel problem)."""

    policy_optimizer: Literal["rloo", "online_dpo"] = "rloo"
    beta: float = 0.05  # KL weight to the reference policy
    num_samples: int = 4  # k samples per prompt (RLOO baseline / online-DPO ranking)
    prompt_batch_size: int = 4  # prompts per policy step, per process
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    normalize_advantages: bool = False  # over each micro-batch of prompt groups
    policy_learning_rate: float | None = None  # default: learning_rate
    use_vllm: bool = False  # sample with vLLM (TRL's VLLMGeneration) when installed; weights synced each step
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3


@dataclass
class AIHFConfig(LMConfig, PolicyStepConfig):
    """Algorithm 1: alternating policy (RL) and reward (demonstrations + preferences) steps."""

    # The paper's alpha: the reward step minimises -(alpha * L1 + L2) with grad L1 =
    # (1/beta)(E_D[grad R] - E_pi[grad R]), so the demonstration term weighs alpha / beta
    # (`demo_weight`); a beta sweep keeps alpha's meaning. 0.05 at the default beta 0.05 weighs it 1.
    alpha: float = 0.05
    demo_form: Literal["linear", "logistic"] = "logistic"
    centering_coef: float = 0.0
    max_iterations: int = 10
    policy_steps_per_iteration: int = 1
    reward_steps_per_iteration: int = 1
    reward_learning_rate: float | None = None  # default: learning_rate
    reward_batch_size: int | None = None  # default: batch_size
    reward_max_length: int | None = None  # default: max_length
    generation_batch_size: int = 256  # prompts per generate call when sampling an iteration's agent answers
    reward_warmup_steps: int = 0  # RLHF: TRL RewardTrainer steps before RL (default: max_iterations)
    sft_steps: int = 0  # RLHF: TRL SFTTrainer steps on the demonstrations before the reward model

    @property
    def demo_weight(self) -> float:
        """The demonstration term's weight in the reward loss: the paper's alpha / beta (METHOD.md
        section 3). A folded-form alpha a (weight a, as v1 ran) at beta b is the paper's a * b."""
        if self.alpha == 0:
            return 0.0
        if self.beta <= 0:
            raise InputError(
                f"aihf: alpha {self.alpha:g} needs beta > 0 (the demonstration term weighs alpha / beta)"
            )
        return self.alpha / self.beta


@dataclass
class DirectAIHFConfig(LMConfig):
    """Direct AIHF (DPO on P + alpha * SFT on D); also DPO / IPO through TRL (`loss_type`)."""

    alpha: float = 1.0  # direct-aihf: SFT weight on D; rpo: SFT weight on P's chosen answers
    beta: float = 0.1
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = 0.0


@dataclass
class OddsRatioConfig(LMConfig):
    """ORPO through TRL: SFT on the chosen answers + beta * odds-ratio term, no reference model."""

    beta: float = 0.1  # ORPO's lambda, the weight of the odds-ratio term


@dataclass
class SelfPlayAIHFConfig(LMConfig):
    """Self-Play AIHF: SPIN on D against the current iterate's samples + DPO on P; SPIN alone without P."""

    alpha: float = 1.0
    beta: float = 0.1
    max_iterations: int = 3
    steps_per_iteration: int = 10
    max_new_tokens: int = 32
    temperature: float = 1.0
    generation_batch_size: int = 64  # prompts per generate call when sampling the iteration's y'


@dataclass
class SFTRewardConfig(LMConfig):
    """SFT and BTL reward-model baselines through TRL's SFTTrainer / RewardTrainer."""

    center_rewards_coefficient: float | None = None


# Accepted range of every numeric field of the configs above, by field name (one meaning per name).
# `aihf.validation` checks types from the annotations and these ranges whenever a config is built.
RANGES: dict[str, Range] = {
    "seed": SEED,
    "learning_rate": POSITIVE,
    "batch_size": AT_LEAST_1,
    "max_steps": AT_LEAST_1,
    "max_length": LENGTH,
    "max_prompt_length": LENGTH,
    "max_grad_norm": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "lora_r": AT_LEAST_1,
    "lora_alpha": AT_LEAST_1,
    "lora_dropout": Range(0, 1, high_open=True),
    "logging_steps": AT_LEAST_1,
    "save_steps": NON_NEGATIVE,
    "snapshot_steps": NON_NEGATIVE,
    "save_total_limit": NON_NEGATIVE,  # 0 keeps every checkpoint
    "beta": POSITIVE,  # DPO, IPO, SPIN: degenerate at 0 (no gradient; IPO divides by 2 beta)
    "AIHFConfig.beta": NON_NEGATIVE,  # the RL step's KL weight: 0 is plain reward maximisation
    "num_samples": Range(2),  # RLOO's leave-one-out baseline and online DPO's ranking need two
    "prompt_batch_size": AT_LEAST_1,
    "max_new_tokens": LENGTH,
    "temperature": POSITIVE,
    "top_k": NON_NEGATIVE,
    "top_p": Range(0, 1, low_open=True),
    "policy_learning_rate": POSITIVE,
    "vllm_gpu_memory_utilization": Range(0, 1, low_open=True),
    "alpha": NON_NEGATIVE,
    "centering_coef": NON_NEGATIVE,
    "max_iterations": AT_LEAST_1,
    "policy_steps_per_iteration": AT_LEAST_1,
    "reward_steps_per_iteration": NON_NEGATIVE,
    "reward_learning_rate": POSITIVE,
    "reward_batch_size": AT_LEAST_1,
    "reward_max_length": LENGTH,
    "generation_batch_size": AT_LEAST_1,
    "reward_warmup_steps": NON_NEGATIVE,
    "sft_steps": NON_NEGATIVE,
    "label_smoothing": Range(0, 0.5),
    "gradient_accumulation_steps": AT_LEAST_1,
    "adam_beta1": Range(0, 1, high_open=True),
    "adam_beta2": Range(0, 1, high_open=True),
    "adam_epsilon": POSITIVE,
    "steps_per_iteration": AT_LEAST_1,
    "center_rewards_coefficient": NON_NEGATIVE,
}
