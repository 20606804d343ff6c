"""Direct AIHF and Self-Play AIHF: the reward-free forms of AIHF (METHOD.md section 5).

Direct AIHF substitutes R = beta * log(pi / pi_0) into the AIHF objective:
    loss = DPO(P; pi, pi_0) + alpha * SFT(D; pi)
with the SFT term on the separate demonstration set D (not on P's chosen answers, unlike TRL's
`rpo_alpha`). alpha = 0 is exactly DPO (tokenisation and loss match TRL's DPOTrainer).

Self-Play AIHF brings D in through SPIN against the current iterate pi_t, regenerated every outer
iteration:  loss = alpha * SPIN(y ~ D vs y' ~ pi_t; pi, pi_t) + DPO(P; pi, pi_t).  With no P it is SPIN.
Both are one concatenated forward pass per step (chosen, rejected and demonstration rows together).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from aihf.errors import InputError
from aihf.lm import runtime
from aihf.lm.config import DirectAIHFConfig, LMConfig, SelfPlayAIHFConfig
from aihf.lm.data import TextData
from aihf.lm.loop import LoopTrainer, Throughput
from aihf.lm.modeling import completion_logprobs, encode, sample_completions
from aihf.lm.vllm_sampling import VLLMSampler
from aihf.losses import dpo_loss, ipo_loss, spin_loss


class _OfflineTrainer(LoopTrainer):
    """Policy-only trainers: TRL's batch layout and a frozen reference (or the PEFT base)."""

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: LMConfig,
        demos: TextData | None,
        prefs: TextData | None,
        sources: dict[str, str | None] | None,
        total_steps: int,
        keep_reference: bool = True,
        accelerator: Any = None,
    ) -> None:
        super().__init__(
            policy,
            tokenizer,
            config,
            sources=sources,
            learning_rate=config.learning_rate,
            total_policy_steps=total_steps,
            micro_batch_size=config.per_device_train_batch_size,
            keep_reference=keep_reference,
            accelerator=accelerator,
        )
        self.demos, self.prefs = demos, prefs
        for offset, (key, data) in enumerate((("demos", demos), ("prefs", prefs))):
            if data is not None:
                self.add_sampler(key, data, config.per_device_train_batch_size, offset)

    def data(self) -> tuple[TextData | None, ...]:
        return (self.demos, self.prefs)

    def batch(self, rows: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        prompts, completions = [p for p, _ in rows], [c for _, c in rows]
        return encode(self.tokenizer, prompts, completions, self.config.max_length, self.accelerator.device)

    @torch.no_grad()
    def reference_logps(
        self, model: Any | None, batch: dict[str, torch.Tensor], average: bool
    ) -> torch.Tensor:
        """Completion log-probs under a frozen model, or the PEFT base with the adapter disabled."""
        if model is None:
            unwrapped = self.accelerator.unwrap_model(self.policy)
            with unwrapped.disable_adapter():
                return self.reference_logps(unwrapped, batch, average)
        return completion_logprobs(model, batch, average=average).sums

    def reward_reference(self) -> Any | None:
        """The model of the implicit reward beta * log(pi / ref): the frozen pi_0 (None: the PEFT base)."""
        return self.ref

    @torch.no_grad()
    def pair_rewards(self, rows: Sequence[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The implicit reward beta * log(pi / ref) of held-out pairs, as the loss's rewards/* metrics
        compute it (length-averaged log-probabilities for IPO), `batch_size` pairs a forward pass."""
        c = self.config
        average = getattr(c, "loss_type", "sigmoid") == "ipo"
        policy = self.accelerator.unwrap_model(self.policy)
        chosen, rejected = [], []
        for i in range(0, len(rows), c.per_device_train_batch_size):
            part = rows[i : i + c.per_device_train_batch_size]
            batch = self.batch(
                [(r["prompt"], r["chosen"]) for r in part] + [(r["prompt"], r["rejected"]) for r in part]
            )
            logps_chosen, logps_rejected, _ = pairwise_forward(policy, batch, len(part), average)
            ref = self.reference_logps(self.reward_reference(), batch, average)
            chosen.append(c.beta * (logps_chosen - ref[: len(part)]))
            rejected.append(c.beta * (logps_rejected - ref[len(part) :]))
        return torch.cat(chosen).cpu(), torch.cat(rejected).cpu()


def pairwise_forward(
    policy: Any, batch: dict[str, torch.Tensor], n_pairs: int, average: bool, sft_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One forward over [chosen; rejected; extra]: chosen and rejected logps, and the SFT loss on extra.

    `sft_tokens` normalises the SFT sum (the step's token count under gradient accumulation); without it
    the SFT term is the token mean of these rows."""
    out = completion_logprobs(policy, batch)
    pairs = slice(0, 2 * n_pairs)
    logps = out.sums[pairs]
    if average:
        logps = logps / out.mask[pairs].sum(-1).clamp(min=1)
    extra = None
    if out.sums.size(0) > 2 * n_pairs:
        rest = slice(2 * n_pairs, None)
        count = sft_tokens if sft_tokens is not None else int(out.mask[rest].sum())
        extra = -out.tokens[rest].sum() / max(count, 1)
    return logps[:n_pairs], logps[n_pairs:], extra


def _pair_metrics(prefix: str, chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    return {
        f"{prefix}/chosen": chosen.mean().item(),
        f"{prefix}/rejected": rejected.mean().item(),
        f"{prefix}/accuracies": (chosen > rejected).float().mean().item(),
        f"{prefix}/margins": (chosen - rejected).mean().item(),
    }


class DirectAIHFTrainer(_OfflineTrainer):
    """DPO (or IPO) on preferences + alpha * token-mean SFT on the demonstration set."""

    method = "direct-aihf"
    bar_keys = ("loss", "rewards/accuracies")

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: DirectAIHFConfig,
        *,
        prefs: TextData,
        demos: TextData | None = None,
        sources: dict[str, str | None] | None = None,
        accelerator: Any = None,
    ) -> None:
        demos = demos if config.alpha > 0 else None
        super().__init__(
            policy, tokenizer, config, demos, prefs, sources, config.max_steps, accelerator=accelerator
        )
        self.add_callback(Throughput())

    @property
    def total(self) -> int:
        return self.config.max_steps

    def compute_loss(
        self,
        pref_rows: list[dict[str, str]],
        demo_rows: list[dict[str, str]],
        share: float = 1.0,
        sft_tokens: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The Direct AIHF loss on one micro-batch, scaled by its `share` of the step, and its token count.

        `sft_tokens`: demonstration tokens over the whole step, so the SFT term is the step's token mean.
        """
        c = self.config
        rows = [(r["prompt"], r["chosen"]) for r in pref_rows] + [
            (r["prompt"], r["rejected"]) for r in pref_rows
        ]
        rows += [(r["prompt"], r["completion"]) for r in demo_rows]
        batch = self.batch(rows)
        n = len(pref_rows)
        average = c.loss_type == "ipo"
        chosen, rejected, sft = pairwise_forward(self.policy, batch, n, average, sft_tokens)
        pair_batch = {k: v[: 2 * n] for k, v in batch.items()}
        ref = self.reference_logps(self.ref, pair_batch, average)
        if c.loss_type == "ipo":
            pair = ipo_loss(chosen, rejected, ref[:n], ref[n:], c.beta)
        else:
            pair = dpo_loss(chosen, rejected, ref[:n], ref[n:], c.beta, c.label_smoothing)
        loss = share * pair.loss
        metrics = {"loss/dpo": pair.loss.item(), "logps/chosen": chosen.mean().item()}
        metrics |= {"logps/rejected": rejected.mean().item()}
        metrics |= _pair_metrics("rewards", pair.chosen_rewards, pair.rejected_rewards)
        if sft is not None:
            loss = loss + c.alpha * sft
            metrics["loss/sft"] = sft.item() / share
        metrics["loss"] = loss.item() / share
        return loss, metrics, int(batch["attention_mask"].sum())

    def training_step(self) -> dict[str, float]:
        """One optimiser step over `gradient_accumulation_steps` micro-batches of pairs (and demos)."""
        prefs = self.draw("prefs", self.prefs)
        demos = self.draw("demos", self.demos) if self.demos else [[] for _ in prefs]
        share = 1.0 / len(prefs)
        sft_tokens = sum(_completion_tokens(self.tokenizer, rows, self.config.max_length) for rows in demos)
        tokens = 0

        def micro_loss(micro: tuple[list, list]) -> tuple[torch.Tensor, dict[str, float]]:
            nonlocal tokens
            loss, metrics, n_tokens = self.compute_loss(*micro, share=share, sft_tokens=sft_tokens or None)
            tokens += n_tokens
            return loss, metrics

        metrics = self.accumulate(list(zip(prefs, demos)), micro_loss)
        return metrics | {"train/tokens": tokens}  # `Throughput` turns it into tokens per second


def _completion_tokens(tokenizer: Any, rows: list[dict[str, str]], max_length: int) -> int:
    """Completion tokens that the SFT term predicts for these demonstration rows (after truncation)."""
    if not rows:
        return 0
    batch = encode(tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows], max_length)
    return int(batch["completion_mask"][:, 1:].sum())


class SelfPlayAIHFTrainer(_OfflineTrainer):
    """SPIN on D against pi_t's samples (regenerated every iteration) + DPO on P with pi_t as reference."""

    method = "self-play-aihf"

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: SelfPlayAIHFConfig,
        *,
        demos: TextData,
        prefs: TextData | None = None,
        sources: dict[str, str | None] | None = None,
        method: str = "self-play-aihf",
        accelerator: Any = None,
    ) -> None:
        self.method = method
        total_steps = config.max_iterations * config.steps_per_iteration
        # The reference is the current iterate pi_t, copied every iteration: no frozen pi_0 is kept.
        super().__init__(
            policy, tokenizer, config, demos, prefs, sources, total_steps, False, accelerator=accelerator
        )
        acc = self.accelerator
        if runtime.uses_deepspeed(acc) and acc.state.deepspeed_plugin.zero_stage == 3:
            raise InputError(
                f"{method}: copying the current iterate is not supported under ZeRO-3; use ZeRO-2"
            )
        self.opponent: Any = None
        self.vllm: VLLMSampler | None = None
        if config.use_vllm:  # y' ~ pi_t sampled by vLLM from the weights at the iteration's start
            self.vllm = VLLMSampler(
                self.policy,
                acc,
                tokenizer,
                config,
                max_completion_length=config.max_completion_length,
                temperature=config.temperature,
                max_prompt_length=config.max_prompt_length,
                max_num_seqs=config.generation_batch_size * config.vllm_tensor_parallel_size,
            )

    def generate_opponent_answers(self) -> list[tuple[dict[str, str], str]]:
        """pi_t := the current policy (frozen); sample y' for this iteration's demonstration batches."""
        c = self.config
        opponent = runtime.current_copy(self.accelerator, self.policy)  # gathered under FSDP
        self.opponent = opponent.to(torch.bfloat16) if c.bf16 else opponent
        draws = c.steps_per_iteration * c.gradient_accumulation_steps
        rows = [self.demos.rows[i] for _ in range(draws) for i in self.samplers["demos"].next()]
        if self.vllm is not None:  # pi_t is the policy at this iteration (its number: the weights' version)
            answers = self.vllm.sample([r["prompt"] for r in rows], 1, self.state.step).completions
            return list(zip(rows, answers))
        answers = sample_completions(  # pi_t is fixed: batch the generation
            self.opponent,
            self.tokenizer,
            [r["prompt"] for r in rows],
            1,
            c.max_completion_length,
            c.temperature,
            max_prompt_length=c.max_prompt_length,
            batch_size=c.generation_batch_size,
        ).completions
        return list(zip(rows, answers))

    @property
    def total(self) -> int:
        return self.config.max_iterations

    def reward_reference(self) -> Any | None:
        """The current iterate pi_t: the reference of this method's DPO term."""
        return self.opponent

    def compute_loss(
        self, spin_rows: list[tuple[dict[str, str], str]], pref_rows: list[dict[str, str]], share: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """alpha * SPIN + DPO on one micro-batch, scaled by its `share` of the optimiser step."""
        c = self.config
        pairs = [(r["prompt"], r["completion"], generated) for r, generated in spin_rows]
        pairs += [(r["prompt"], r["chosen"], r["rejected"]) for r in pref_rows]
        rows = [(p, y) for p, y, _ in pairs] + [(p, y) for p, _, y in pairs]
        batch = self.batch(rows)
        n = len(pairs)
        chosen, rejected, _ = pairwise_forward(self.policy, batch, n, average=False)
        ref = self.reference_logps(self.opponent, batch, average=False)
        n_spin = len(spin_rows)
        spin = spin_loss(chosen[:n_spin], rejected[:n_spin], ref[:n_spin], ref[n : n + n_spin], c.beta)
        loss = c.alpha * spin.loss
        metrics = {"loss/spin": spin.loss.item()}
        metrics |= _pair_metrics("spin", spin.chosen_rewards, spin.rejected_rewards)
        if pref_rows:
            pair = dpo_loss(chosen[n_spin:], rejected[n_spin:], ref[n_spin:n], ref[n + n_spin :], c.beta)
            loss = loss + pair.loss
            metrics["loss/dpo"] = pair.loss.item()
            metrics |= _pair_metrics("rewards", pair.chosen_rewards, pair.rejected_rewards)
        metrics["loss"] = loss.item()
        return share * loss, metrics

    def training_step(self) -> dict[str, float]:
        """One outer iteration: pi_t := pi, sample y' ~ pi_t, then `steps_per_iteration` optimiser steps."""
        c = self.config
        generated = self.generate_opponent_answers()
        micro = [
            generated[i : i + c.per_device_train_batch_size]
            for i in range(0, len(generated), c.per_device_train_batch_size)
        ]
        steps = [
            micro[i : i + c.gradient_accumulation_steps]
            for i in range(0, len(micro), c.gradient_accumulation_steps)
        ]
        records = []
        for step in steps:
            prefs = self.draw("prefs", self.prefs) if self.prefs else [[] for _ in step]
            share = 1.0 / len(step)
            records.append(
                self.accumulate(
                    list(zip(step, prefs)), lambda m, share=share: self.compute_loss(*m, share=share)
                )
            )
        return {"iteration": self.state.step + 1, **runtime.mean_metrics(records)}
