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

import time
from pathlib import Path
from typing import Any

import torch

from aihf.errors import InputError
from aihf.lm import runtime
from aihf.lm.config import DirectAIHFConfig, LMConfig, SelfPlayAIHFConfig
from aihf.lm.data import TextData
from aihf.lm.modeling import encode, sample_completions
from aihf.losses import dpo_loss, ipo_loss, sequence_logprobs, sft_loss, spin_loss


class _OfflineTrainer:
    """Shared set-up of the two trainers: accelerator, frozen reference, optimiser, samplers, logging."""

    method = "?"

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: LMConfig,
        demos: TextData | None,
        prefs: TextData | None,
        sources: dict[str, str | None] | None,
        total_steps: int,
    ) -> None:
        self.config, self.tokenizer, self.sources = config, tokenizer, sources or {}
        self.demos, self.prefs = demos, prefs
        self.accelerator = acc = runtime.make_accelerator(config)
        policy = runtime.maybe_peft(policy, config, "CAUSAL_LM")
        ref = None if config.use_peft else runtime.frozen_copy(policy)
        optimizer = runtime.make_optimizer(policy, config.learning_rate, config.weight_decay)
        self.policy, self.optimizer = runtime.prepare_trainable(acc, policy, optimizer, config.batch_size)
        self.scheduler = runtime.make_scheduler(acc, self.optimizer, config, total_steps)
        self.ref = runtime.prepare_frozen(acc, ref, config.bf16) if ref is not None else None
        rank, world = acc.process_index, acc.num_processes
        self.samplers: dict[str, runtime.BatchSampler] = {}
        for offset, (key, data) in enumerate((("demos", demos), ("prefs", prefs))):
            if data is not None:
                self.samplers[key] = runtime.BatchSampler(
                    len(data), config.batch_size, config.seed + offset, rank, world
                )
        self.state = runtime.TrainerState(self.samplers)
        acc.register_for_checkpointing(self.state)
        self.out_dir = Path(config.output_dir)
        self.logger = runtime.MetricsLogger(self.out_dir, acc.is_main_process, config.tensorboard)
        self.tokens_seen = 0

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
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        return sequence_logprobs(logits.float(), labels, average=average)

    def optimise(self, loss: torch.Tensor) -> None:
        runtime.optimizer_step(
            self.accelerator, self.policy, self.optimizer, self.scheduler, loss, self.config.max_grad_norm
        )

    def save(self) -> None:
        notes = [n for d in (self.demos, self.prefs) if d is not None for n in d.notes]
        card = runtime.model_card(
            self.method, self.sources.get("model", "?"), self.sources, self.config.to_dict(), notes
        )
        runtime.save_model(self.accelerator, self.policy, self.tokenizer, self.out_dir / "policy", card)


def pairwise_forward(
    policy: Any, batch: dict[str, torch.Tensor], n_pairs: int, average: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward over [chosen; rejected; extra]: chosen and rejected logps, SFT loss on extra, logits."""
    logits = policy(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    logits = logits.float()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    logps = sequence_logprobs(logits[: 2 * n_pairs], labels[: 2 * n_pairs], average=average)
    extra = sft_loss(logits[2 * n_pairs :], labels[2 * n_pairs :]) if logits.size(0) > 2 * n_pairs else None
    return logps[:n_pairs], logps[n_pairs:], extra, logits


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

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: DirectAIHFConfig,
        *,
        prefs: TextData,
        demos: TextData | None = None,
        sources: dict[str, str | None] | None = None,
    ) -> None:
        if prefs is None:
            raise InputError("direct-aihf: needs preferences (--prefs)")
        if config.alpha > 0 and demos is None:
            raise InputError("direct-aihf: alpha > 0 needs demonstrations (--demos); use alpha: 0 for DPO")
        super().__init__(
            policy, tokenizer, config, demos if config.alpha > 0 else None, prefs, sources, config.max_steps
        )

    def compute_loss(
        self, pref_rows: list[dict[str, str]], demo_rows: list[dict[str, str]]
    ) -> tuple[torch.Tensor, dict[str, float], int]:
        """The Direct AIHF loss on one batch; also the number of tokens it trained on."""
        c = self.config
        rows = [(r["prompt"], r["chosen"]) for r in pref_rows] + [
            (r["prompt"], r["rejected"]) for r in pref_rows
        ]
        rows += [(r["prompt"], r["completion"]) for r in demo_rows]
        batch = self.batch(rows)
        n = len(pref_rows)
        average = c.loss_type == "ipo"
        chosen, rejected, sft, _ = pairwise_forward(self.policy, batch, n, average)
        pair_batch = {k: v[: 2 * n] for k, v in batch.items()}
        ref = self.reference_logps(self.ref, pair_batch, average)
        if c.loss_type == "ipo":
            pair = ipo_loss(chosen, rejected, ref[:n], ref[n:], c.beta)
        else:
            pair = dpo_loss(chosen, rejected, ref[:n], ref[n:], c.beta, c.label_smoothing)
        loss = pair.loss
        metrics = {"loss/dpo": pair.loss.item(), "logps/chosen": chosen.mean().item()}
        metrics |= {"logps/rejected": rejected.mean().item()}
        metrics |= _pair_metrics("rewards", pair.chosen_rewards, pair.rejected_rewards)
        if sft is not None:
            loss = loss + c.alpha * sft
            metrics["loss/sft"] = sft.item()
        metrics["loss"] = loss.item()
        return loss, metrics, int(batch["attention_mask"].sum())

    def train(self) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        bar = runtime.start_or_resume(
            acc, self.out_dir, c.resume_from_checkpoint, self.state, self.logger, c.max_steps, self.method
        )
        start = time.perf_counter()
        while self.state.step < c.max_steps:
            pref_rows = [self.prefs.rows[i] for i in self.samplers["prefs"].next()]
            demo_rows = [self.demos.rows[i] for i in self.samplers["demos"].next()] if self.demos else []
            loss, metrics, tokens = self.compute_loss(pref_rows, demo_rows)
            self.optimise(loss)
            self.tokens_seen += tokens
            self.state.step += 1
            metrics = runtime.gather_mean(acc, metrics)
            if self.state.step % c.logging_steps == 0 or self.state.step == c.max_steps:
                speed = self.tokens_seen / max(time.perf_counter() - start, 1e-9)
                self.logger.log(self.state.step, metrics | {"train/tokens_per_second": speed})
            bar.set_postfix(loss=f"{metrics['loss']:.4g}", acc=f"{metrics['rewards/accuracies']:.2f}")
            bar.update(1)
            if c.save_steps and self.state.step % c.save_steps == 0:
                runtime.save_checkpoint(acc, self.out_dir, self.state.step, c.save_total_limit)
        bar.close()
        self.save()
        self.logger.close()
        return self.logger.last


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
    ) -> None:
        if demos is None:
            raise InputError(f"{method}: needs demonstrations (--demos)")
        self.method = method
        total_steps = config.max_iterations * config.steps_per_iteration
        super().__init__(policy, tokenizer, config, demos, prefs, sources, total_steps)
        acc = self.accelerator
        if runtime.uses_deepspeed(acc) and acc.state.deepspeed_plugin.zero_stage == 3:
            raise InputError(
                f"{method}: copying the current iterate is not supported under ZeRO-3; use ZeRO-2"
            )
        self.opponent: Any = None

    def generate_opponent_answers(self) -> list[tuple[dict[str, str], str]]:
        """pi_t := the current policy (frozen); sample y' for this iteration's demonstration batches."""
        c = self.config
        opponent = runtime.frozen_copy(self.accelerator.unwrap_model(self.policy))
        self.opponent = opponent.to(torch.bfloat16) if c.bf16 else opponent
        rows = [
            self.demos.rows[i] for _ in range(c.steps_per_iteration) for i in self.samplers["demos"].next()
        ]
        answers: list[str] = []
        for start in range(0, len(rows), c.generation_batch_size):  # pi_t is fixed: batch the generation
            chunk = rows[start : start + c.generation_batch_size]
            answers += sample_completions(
                self.opponent,
                self.tokenizer,
                [r["prompt"] for r in chunk],
                1,
                c.max_new_tokens,
                c.temperature,
                max_prompt_length=c.max_prompt_length,
            ).completions
        return list(zip(rows, answers))

    def compute_loss(
        self, spin_rows: list[tuple[dict[str, str], str]], pref_rows: list[dict[str, str]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        pairs = [(r["prompt"], r["completion"], generated) for r, generated in spin_rows]
        pairs += [(r["prompt"], r["chosen"], r["rejected"]) for r in pref_rows]
        rows = [(p, y) for p, y, _ in pairs] + [(p, y) for p, _, y in pairs]
        batch = self.batch(rows)
        n = len(pairs)
        chosen, rejected, _, _ = pairwise_forward(self.policy, batch, n, average=False)
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
        return loss, metrics

    def train(self) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        bar = runtime.start_or_resume(
            acc,
            self.out_dir,
            c.resume_from_checkpoint,
            self.state,
            self.logger,
            c.max_iterations,
            self.method,
        )
        while self.state.step < c.max_iterations:
            generated = self.generate_opponent_answers()
            records = []
            for start in range(0, len(generated), c.batch_size):
                pref_rows = [self.prefs.rows[i] for i in self.samplers["prefs"].next()] if self.prefs else []
                loss, metrics = self.compute_loss(generated[start : start + c.batch_size], pref_rows)
                self.optimise(loss)
                records.append(metrics)
            self.state.step += 1
            metrics = runtime.gather_mean(acc, runtime.mean_metrics(records))
            self.logger.log(self.state.step, {"iteration": self.state.step, **metrics})
            bar.set_postfix(loss=f"{metrics['loss']:.4g}")
            bar.update(1)
            if c.save_steps and self.state.step % c.save_steps == 0:
                runtime.save_checkpoint(acc, self.out_dir, self.state.step, c.save_total_limit)
        bar.close()
        self.save()
        self.logger.close()
        return self.logger.last
