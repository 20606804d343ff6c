"""Configuration dataclasses of the LM trainers, loadable from YAML; CLI flags override their fields.

One base (`LMConfig`: optimisation, lengths, precision, PEFT, logging, checkpoints) and one
dataclass per trainer family. Defaults are small-model friendly; the paper's settings are in
`configs/lm/*.yaml`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from aihf.errors import InputError
from aihf.flags import Rename, canonical
from aihf.validation import AT_LEAST_1, LENGTH, NON_NEGATIVE, POSITIVE, SEED, Range, validate_config
from aihf.validation import load_yaml as load_yaml  # the one YAML reader; lm callers import it here

# accelerate's trackers, and TRL's words for all of them or none.
TRACKERS = {"tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab"}
TRACKERS |= {"all", "none"}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")  # the Hub's user/name


@dataclass
class VLLMConfig:
    """Sampling with vLLM through TRL's `VLLMGeneration`: TRL's `GRPOConfig` fields, names and defaults.

    colocate: an engine in every training process, sharing its GPU (`vllm_gpu_memory_utilization`,
    `vllm_tensor_parallel_size`, `vllm_enable_sleep_mode`, `vllm_max_model_length`, `vllm_model_impl`);
    server: a `trl vllm-serve` process the main process sends prompts and weights to (`vllm_server_*`,
    `vllm_group_port`). The trained weights are pushed to the engine before it samples, whenever they
    changed since the last push.
    """

    use_vllm: bool = False  # sample with vLLM (needs `pip install 'aihf[vllm]'`); model.generate otherwise
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_model_impl: Literal["auto", "vllm", "transformers"] = "vllm"
    vllm_enable_sleep_mode: bool = False  # colocate: offload the engine's weights and cache between samplings
    vllm_structured_outputs_regex: str | None = None  # constrain every completion to this regex
    vllm_server_base_url: str | None = None  # server: e.g. http://node7:8000; else host and port
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0  # seconds to wait for the server to come up
    vllm_group_port: int = 51216  # server: the weight-update group's port
    vllm_gpu_memory_utilization: float = 0.3  # colocate: the share of each GPU the engine may take
    vllm_max_model_length: int | None = None  # colocate: context length (prompt + completion); None: model's
    vllm_tensor_parallel_size: int = 1  # colocate: GPUs per engine (must divide the number of processes)

    def check_vllm(self, max_prompt_length: int, max_completion_length: int) -> None:
        """What the field ranges cannot say: the URL's scheme and a context long enough to sample in."""
        url = self.vllm_server_base_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise InputError(f"field 'vllm_server_base_url' = {url!r}: expected an http:// or https:// URL")
        need = max_prompt_length + max_completion_length
        if self.vllm_max_model_length is not None and self.vllm_max_model_length < need:
            raise InputError(
                f"field 'vllm_max_model_length' = {self.vllm_max_model_length}: expected at least "
                f"max_prompt_length + max_completion_length = {need}"
            )


@dataclass
class LMConfig:
    output_dir: str = "aihf-lm-output"
    seed: int = 0
    learning_rate: float = 1e-5
    per_device_train_batch_size: int = 8  # per process and micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step (effective batch = product)
    max_steps: int = 100  # optimiser steps (non-iterative trainers)
    max_length: int = 512  # prompt + answer tokens
    max_prompt_length: int = 256
    overlong: Literal["truncate", "drop", "error"] = "truncate"
    chat_template: str | None = None  # Jinja template (or a file of one) for conversational data
    dataset_num_proc: int | None = None  # processes tokenising the data (`datasets` map; TRL's too)
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
    # Evaluation during training (TRL's eval_strategy / eval_steps), every eval_steps units: the held-out
    # preference accuracy of the learned reward (the implicit beta * log(pi / pi_ref) for the direct
    # methods) on --eval-prefs, and with eval_gold the gold reward mean and KL to the reference on
    # eval_num_prompts prompts (--eval-prompts, else the prompts of --eval-prefs, else --prompts).
    eval_strategy: Literal["no", "steps"] = "no"
    eval_steps: int | None = None  # default: logging_steps
    eval_gold: str | dict[str, Any] | None = None  # a gold spec of `aihf.lm.gold.load_gold_reward`
    eval_num_prompts: int = 64
    eval_max_new_tokens: int = 24  # completion length of the gold evaluation's samples
    save_total_limit: int = 2
    resume_from_checkpoint: str | bool | None = None  # a checkpoint directory, or True for the latest
    # accelerate trackers: "tensorboard", "wandb", "trackio", ... ("all" / "none"); wandb and trackio run
    # offline unless their own environment variables say otherwise. metrics.jsonl is always written.
    report_to: str | list[str] = dataclasses.field(default_factory=lambda: ["tensorboard"])
    use_cpu: bool = False
    # --- loading: how every model of the run is built (TRL's ModelConfig / model_init_kwargs) -------
    # float32 is right on CPU; on GPUs use "bfloat16" (with bf16: true), as TRL's GPU recipes do.
    # "auto" keeps the checkpoint's own dtype.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None  # None: transformers'
    # --- outputs: adapters, model card, Hub ---------------------------------------------------------
    # with use_peft, OUT/policy is the LoRA adapter (adapter_config.json + adapter_model.safetensors);
    # save_merged also writes the adapter merged into its base as full weights, in OUT/policy_merged
    save_merged: bool = False
    push_to_hub: bool = False  # upload OUT/policy (and OUT/reward_model) at the end, main process only
    hub_model_id: str | None = None  # "user/name"; required with push_to_hub (the reward model: NAME-reward)

    def __post_init__(self) -> None:
        validate_config(self, RANGES)  # every field's type and range (RANGES, end of this file)
        names = [self.report_to] if isinstance(self.report_to, str) else self.report_to
        unknown = sorted(set(names) - TRACKERS)
        if unknown:
            raise InputError(f"field 'report_to' = {unknown}: expected some of {sorted(TRACKERS)}")
        if isinstance(self, VLLMConfig):
            self.check_vllm(self.max_prompt_length, self.max_completion_length)
        if self.push_to_hub and not self.hub_model_id:
            raise InputError(
                "field 'push_to_hub' = True needs field 'hub_model_id' (the Hub repository, user/name)"
            )
        if self.hub_model_id is not None and not HUB_ID.fullmatch(self.hub_model_id):
            raise InputError(
                f"field 'hub_model_id' = {self.hub_model_id!r}: expected a Hub repository id, user/name"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> LMConfig:
        values = canonical(values, RENAMES, where, warn=False)  # e.g. a saved record's old names
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
class PolicyStepConfig(VLLMConfig):
    """The RL policy step shared by AIHF and RLHF (lower level of the bilevel problem)."""

    policy_optimizer: Literal["rloo", "online_dpo"] = "rloo"
    beta: float = 0.05  # KL weight to the reference policy
    num_generations: int = 4  # k samples per prompt (RLOO baseline / online-DPO ranking)
    prompt_batch_size: int = 4  # prompts per policy step, per process
    max_completion_length: int = 32  # tokens sampled per answer
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    normalize_advantages: bool = False  # over each micro-batch of prompt groups
    policy_learning_rate: float | None = None  # default: learning_rate


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
    # sequences per generate call when sampling an iteration's agent answers (and the next policy step's)
    generation_batch_size: int = 256
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
class SelfPlayAIHFConfig(LMConfig, VLLMConfig):
    """Self-Play AIHF: SPIN on D against the current iterate's samples + DPO on P; SPIN alone without P.

    `use_vllm`: each iteration's opponent answers are sampled by vLLM from the current weights."""

    alpha: float = 1.0
    beta: float = 0.1
    max_iterations: int = 3
    steps_per_iteration: int = 10
    max_completion_length: int = 32  # tokens sampled per answer
    temperature: float = 1.0
    generation_batch_size: int = 64  # prompts per generate call when sampling the iteration's y'


@dataclass
class SFTRewardConfig(LMConfig):
    """SFT and BTL reward-model baselines through TRL's SFTTrainer / RewardTrainer."""

    center_rewards_coefficient: float | None = None


# Config keys renamed to TRL's name for the same meaning: the old name is still read (YAML, flags,
# saved records), with one deprecation line where a person wrote it.
RENAMES: tuple[Rename, ...] = (
    Rename("batch_size", "per_device_train_batch_size"),
    Rename("num_samples", "num_generations"),
    Rename("max_new_tokens", "max_completion_length"),
    Rename("cpu", "use_cpu"),
    Rename("model", "model_name_or_path"),  # a run key (methods.MODEL_KEY), not a field
)

# Accepted range of every numeric field of the configs above, by field name (one meaning per name).
# `aihf.validation` checks types from the annotations and these ranges whenever a config is built.
RANGES: dict[str, Range] = {
    "seed": SEED,
    "learning_rate": POSITIVE,
    "per_device_train_batch_size": AT_LEAST_1,
    "max_steps": AT_LEAST_1,
    "max_length": LENGTH,
    "max_prompt_length": LENGTH,
    "dataset_num_proc": AT_LEAST_1,
    "max_grad_norm": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "lora_r": AT_LEAST_1,
    "lora_alpha": AT_LEAST_1,
    "lora_dropout": Range(0, 1, high_open=True),
    "logging_steps": AT_LEAST_1,
    "save_steps": NON_NEGATIVE,
    "snapshot_steps": NON_NEGATIVE,
    "eval_steps": AT_LEAST_1,
    "eval_num_prompts": AT_LEAST_1,
    "eval_max_new_tokens": LENGTH,
    "save_total_limit": NON_NEGATIVE,  # 0 keeps every checkpoint
    "beta": POSITIVE,  # DPO, IPO, SPIN: degenerate at 0 (no gradient; IPO divides by 2 beta)
    "AIHFConfig.beta": NON_NEGATIVE,  # the RL step's KL weight: 0 is plain reward maximisation
    "num_generations": Range(2),  # RLOO's leave-one-out baseline and online DPO's ranking need two
    "prompt_batch_size": AT_LEAST_1,
    "max_completion_length": LENGTH,
    "temperature": POSITIVE,
    "top_k": NON_NEGATIVE,
    "top_p": Range(0, 1, low_open=True),
    "policy_learning_rate": POSITIVE,
    "vllm_gpu_memory_utilization": Range(0, 1, low_open=True),
    "vllm_server_port": Range(1, 65535),
    "vllm_group_port": Range(1, 65535),
    "vllm_server_timeout": POSITIVE,
    "vllm_max_model_length": LENGTH,
    "vllm_tensor_parallel_size": AT_LEAST_1,
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
