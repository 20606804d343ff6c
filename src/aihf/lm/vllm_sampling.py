"""Sampling with vLLM through TRL's `VLLMGeneration`, for the trainers that sample while they train.

TRL owns the engine (colocate or server), the weight push (gathering ZeRO-3 / FSDP shards and merging
LoRA adapters as it goes) and the generation call; this module maps `VLLMConfig`'s fields onto it,
pushes the weights only when the trained model changed since the last push, and turns the returned
token ids into `Samples` as `model.generate` sampling does (cut after EOS, decoded).

Four of `VLLMGeneration`'s options are left at TRL's defaults on purpose. `repetition_penalty`, `min_p`
and `generation_kwargs` change the distribution sampled from, and the trainers' log-probabilities (and
the KL to the reference) are those of the distribution under temperature, top-k and top-p only, so the
samples would no longer be the policy's; `trust_remote_code` stays off because no code is run from a
model directory (the README's security promise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aihf.errors import InputError
from aihf.lm.config import VLLMConfig
from aihf.lm.modeling import Samples, prompt_token_ids, samples_from_ids

# TRL 1.16 supports vLLM 0.22-0.31; the `vllm` extra pins that range.
NOT_INSTALLED = (
    "use_vllm: vLLM is not installed (pip install 'aihf[vllm]' installs the version TRL supports), "
    "or set use_vllm: false"
)


def require_vllm() -> None:
    """InputError (one line naming the extra) when vLLM cannot be imported."""
    from trl.import_utils import is_vllm_available

    if not is_vllm_available():
        raise InputError(NOT_INSTALLED)


def engine_options(config: VLLMConfig, max_num_seqs: int | None = None) -> dict[str, Any]:
    """`VLLMGeneration`'s engine keyword arguments from the config's `vllm_*` fields (TRL's names)."""
    return {
        "mode": config.vllm_mode,
        "structured_outputs_regex": config.vllm_structured_outputs_regex,
        "server_base_url": config.vllm_server_base_url,
        "server_host": config.vllm_server_host,
        "server_port": config.vllm_server_port,
        "server_timeout": config.vllm_server_timeout,
        "group_port": config.vllm_group_port,
        "tensor_parallel_size": config.vllm_tensor_parallel_size,
        "gpu_memory_utilization": config.vllm_gpu_memory_utilization,
        "max_model_length": config.vllm_max_model_length,
        "max_num_seqs": max_num_seqs,
        "enable_sleep_mode": config.vllm_enable_sleep_mode,
        "model_impl": config.vllm_model_impl,
    }


class VLLMSampler:
    """One trained model's vLLM engine: created on first use, its weights pushed before a sampling
    whenever the model's `version` (its optimiser steps so far) differs from the last push.

    `max_num_seqs`: the most sequences one process asks for at once (TRL's GRPO: its generation batch
    times the tensor-parallel size), which caps the engine's batch and its memory profile."""

    def __init__(
        self,
        model: Any,
        accelerator: Any,
        tokenizer: Any,
        config: VLLMConfig,
        *,
        max_completion_length: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_prompt_length: int | None = None,
        max_num_seqs: int | None = None,
    ) -> None:
        require_vllm()
        tp, world = config.vllm_tensor_parallel_size, accelerator.num_processes
        if config.vllm_mode == "colocate" and world % tp:
            raise InputError(
                f"field 'vllm_tensor_parallel_size' = {tp}: must divide the number of processes ({world})"
            )
        self.model, self.accelerator, self.tokenizer, self.config = model, accelerator, tokenizer, config
        self.sampling = {
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "max_completion_length": max_completion_length,
        }
        self.max_prompt_length = max_prompt_length
        self.max_num_seqs = max_num_seqs
        self.engine: Any = None
        self.synced_version: int | None = None

    def _engine(self) -> Any:
        if self.engine is None:
            from trl.generation.vllm_generation import VLLMGeneration

            self.engine = VLLMGeneration(
                self.accelerator.unwrap_model(self.model),
                self.accelerator,
                self.tokenizer,
                **engine_options(self.config, self.max_num_seqs),
                **self.sampling,
                logprobs=None,  # the trainers score samples with the policy itself
            )
        return self.engine

    def sample(self, prompts: Sequence[str], num_samples: int, version: int) -> Samples:
        """`num_samples` completions per prompt from the model as it is at `version`."""
        engine = self._engine()
        if self.synced_version != version:  # a collective: every process takes part
            engine.sync_weights()
            self.synced_version = version
        ids = prompt_token_ids(self.tokenizer, prompts, self.max_prompt_length)
        repeated = [i for i in ids for _ in range(num_samples)]
        _, completion_ids, *_ = engine.generate(repeated, None, num_samples)
        return samples_from_ids(self.tokenizer, prompts, ids, completion_ids, num_samples)
