"""The lower level of AIHF: a few RL steps of the policy toward argmax E[R] - beta * KL(pi || pi_0).

`PolicyStep` is reusable on its own: AIHF calls it with the reward model being learned, RLHF with a
frozen one, and the benchmark with a frozen Python `reward_fn(prompts, completions) -> scores`.

Optimisers:
  rloo        REINFORCE with the leave-one-out baseline over k samples per prompt (RLOO, Ahmadian et
              al. 2024); the sequence-level KL to the reference is folded into the reward, as TRL's RLOO.
  online_dpo  rank the k samples with the reward and take a DPO step on best vs worst (the paper's 7B
              run); the KL is then implicit in DPO's reference.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from aihf.lm import runtime
from aihf.lm.config import PolicyStepConfig
from aihf.lm.modeling import (
    LogProbs,
    RewardFn,
    RewardScorer,
    Samples,
    as_reward_fn,
    completion_logprobs,
    sample_completions,
)
from aihf.lm.vllm_sampling import VLLMSampler
from aihf.losses import dpo_loss


class PolicyStep:
    def __init__(
        self,
        policy: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        tokenizer: Any,
        config: PolicyStepConfig,
        accelerator: Any,
        ref_policy: Any | None = None,
        max_prompt_length: int | None = None,
        max_grad_norm: float = 1.0,
        gradient_accumulation_steps: int = 1,
    ) -> None:
        if config.policy_optimizer not in ("rloo", "online_dpo"):
            raise ValueError(
                f"policy_optimizer must be 'rloo' or 'online_dpo', got {config.policy_optimizer!r}"
            )
        if config.num_generations < 2:
            raise ValueError(
                "the policy step needs num_generations >= 2 (a leave-one-out baseline or a ranked pair)"
            )
        self.policy = policy
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.config = config
        self.accelerator = accelerator
        self.ref_policy = ref_policy
        self.max_prompt_length = max_prompt_length
        self.max_grad_norm = max_grad_norm
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.updates = 0  # optimiser steps taken: vLLM's weights are pushed again only after one
        self.vllm: VLLMSampler | None = None
        if config.use_vllm:
            self.vllm = VLLMSampler(
                policy,
                accelerator,
                tokenizer,
                config,
                max_completion_length=config.max_completion_length,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                max_prompt_length=max_prompt_length,
                max_num_seqs=config.prompt_batch_size
                * config.num_generations
                * config.vllm_tensor_parallel_size,
            )

    def sample(self, prompts: Sequence[str], num_samples: int, batch_size: int | None = None) -> Samples:
        """`num_samples` completions per prompt from the current policy; `batch_size` prompts per
        `generate` call (all in one by default)."""
        c = self.config
        if self.vllm is not None:
            return self.vllm.sample(prompts, num_samples, self.updates)
        with runtime.generation_model(self.accelerator, self.policy) as model:
            return sample_completions(
                model,
                self.tokenizer,
                prompts,
                num_samples,
                c.max_completion_length,
                c.temperature,
                c.top_k,
                c.top_p,
                self.max_prompt_length,
                batch_size,
            )

    def sample_groups(
        self, groups: Sequence[tuple[Sequence[str], int]], batch_size: int | None = None
    ) -> list[Samples]:
        """Samples for several (prompts, k) groups from the current policy in one sampling pass
        (`batch_size` sequences per `generate` call, all in one by default).

        On a CPU a decoding step costs little more for many sequences than for few (reading the weights
        dominates: SmolLM2, one thread, 0.26 s at 4 rows, 0.29 s at 16, 0.40 s at 32), so one call for
        all of an iteration's samples is cheaper than one per group. Each group comes back as its own
        `Samples`, k per prompt."""
        if self.vllm is not None:  # vLLM batches its own requests
            return [self.sample(prompts, k) for prompts, k in groups]
        flat = [p for prompts, k in groups for p in prompts for _ in range(k)]
        drawn = self.sample(flat, 1, batch_size)
        found, start = [], 0
        for prompts, k in groups:
            rows = slice(start, start + len(prompts) * k)
            found.append(
                Samples(
                    drawn.prompts[rows],
                    drawn.completions[rows],
                    drawn.prompt_ids[rows],
                    drawn.completion_ids[rows],
                    num_samples=k,
                )
            )
            start = rows.stop
        return found

    @torch.no_grad()
    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> LogProbs:
        if self.ref_policy is not None:
            return completion_logprobs(self.ref_policy, batch)
        with self.accelerator.unwrap_model(self.policy).disable_adapter():  # PEFT: the base is pi_0
            return completion_logprobs(self.accelerator.unwrap_model(self.policy), batch)

    def __call__(
        self,
        prompts: Sequence[str],
        reward: RewardScorer | RewardFn,
        with_entropy: bool = True,
        samples: Samples | None = None,
    ) -> dict[str, float]:
        """One optimiser step on `prompts`: sample k answers each in one call, score them, then the
        loss and backward in `gradient_accumulation_steps` micro-batches of whole prompt groups.

        `with_entropy`: report the policy's token entropy (a softmax over the vocabulary at every
        completion token; skipped on steps whose metrics are not logged). `samples`: the k answers per
        prompt, already drawn from the current policy (`sample_groups`); drawn here if omitted."""
        score = as_reward_fn(reward)
        c = self.config
        if samples is None:
            samples = self.sample(prompts, c.num_generations)
        if samples.num_samples != c.num_generations or samples.prompts[:: c.num_generations] != list(prompts):
            raise ValueError("samples must hold num_generations answers for each of the prompts, in order")
        tokens = samples.batch(self.tokenizer.pad_token_id, self.accelerator.device)
        scores = score(samples.prompts, samples.completions).to(self.accelerator.device)
        chunks = _micro_slices(len(prompts), self.gradient_accumulation_steps, c.num_generations)
        records = []
        for i, rows in enumerate(chunks):
            batch = _trim({key: value[rows] for key, value in tokens.items()})
            ref = self.reference_logprobs(batch)
            if c.policy_optimizer == "rloo":
                loss, metrics = self._rloo_loss(batch, scores[rows], ref, with_entropy)
            else:
                loss, metrics = self._online_dpo_loss(batch, scores[rows], ref, with_entropy)
            runtime.backward(self.accelerator, self.policy, loss / len(chunks), sync=i == len(chunks) - 1)
            records.append(metrics | {"loss/policy": loss.item()})
        runtime.optimizer_step(
            self.accelerator, self.policy, self.optimizer, self.scheduler, self.max_grad_norm
        )
        self.updates += 1
        lengths = tokens["completion_mask"].sum(-1).float()
        return runtime.mean_metrics(records) | {
            "objective/scores": scores.mean().item(),
            "policy/completion_length": lengths.mean().item(),
        }

    def _rloo_loss(
        self, batch: dict[str, torch.Tensor], scores: torch.Tensor, ref: LogProbs, with_entropy: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        k = self.config.num_generations
        out = completion_logprobs(self.policy, batch, with_entropy=with_entropy)
        kl = (out.tokens.detach() - ref.tokens).sum(-1)  # sequence KL estimate, log pi/pi_0 of the sample
        shaped = scores - self.config.beta * kl
        grouped = shaped.view(-1, k)
        baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
        advantages = (grouped - baseline).reshape(-1)
        if self.config.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        loss = -(advantages.detach() * out.sums).mean()
        # which term drives the advantages: the spread of the reward's scores over a prompt's k samples,
        # or that of the KL penalty (a reward on a small scale leaves beta * KL in charge)
        penalty = self.config.beta * kl
        return loss, _entropy(out) | {
            "objective/kl": kl.mean().item(),
            "objective/rlhf_reward": shaped.mean().item(),
            "policy/advantage_std": advantages.std().item(),
            "policy/score_std": scores.view(-1, k).std(1).mean().item(),
            "policy/kl_penalty_std": penalty.view(-1, k).std(1).mean().item(),
        }

    def _online_dpo_loss(
        self, batch: dict[str, torch.Tensor], scores: torch.Tensor, ref: LogProbs, with_entropy: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        k = self.config.num_generations
        grouped = scores.view(-1, k)
        offsets = torch.arange(grouped.size(0), device=scores.device) * k
        best = grouped.argmax(1) + offsets
        worst = grouped.argmin(1) + offsets
        index = torch.cat([best, worst])
        pair = {key: value[index] for key, value in batch.items()}
        out = completion_logprobs(self.policy, pair, with_entropy=with_entropy)
        ref_sums = ref.sums[index]
        n = best.numel()
        result = dpo_loss(out.sums[:n], out.sums[n:], ref_sums[:n], ref_sums[n:], self.config.beta)
        return result.loss, _entropy(out) | {
            "objective/kl": ((out.sums.detach() - ref_sums).mean()).item(),
            "policy/score_margin": (scores[best] - scores[worst]).mean().item(),
            "policy/dpo_margin": (result.chosen_rewards - result.rejected_rewards).mean().item(),
        }


def _entropy(out: LogProbs) -> dict[str, float]:
    """The mean token entropy of the policy's samples, when it was computed."""
    if out.entropy is None:
        return {}
    return {"objective/entropy": (out.entropy.sum() / out.mask.sum().clamp(min=1)).item()}


def _micro_slices(n_prompts: int, parts: int, k: int) -> list[slice]:
    """Row slices of `parts` micro-batches of whole prompt groups (k consecutive samples per prompt)."""
    parts = max(1, min(parts, n_prompts))
    bounds = [round(i * n_prompts / parts) for i in range(parts + 1)]
    return [slice(a * k, b * k) for a, b in itertools.pairwise(bounds)]


def _trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the padding columns that no row of this (right-padded) micro-batch uses."""
    width = int(batch["attention_mask"].sum(-1).max())
    return {key: value[:, :width] for key, value in batch.items()}
