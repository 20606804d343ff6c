"""AIHFTrainer: Algorithm 1 of the paper for Hugging Face causal LMs (METHOD.md sections 2-4).

Each outer iteration alternates
  (a) `policy_steps_per_iteration` RL steps of the policy toward the *current* reward (`PolicyStep`),
  (b) `reward_steps_per_iteration` steps of the reward model on
        (alpha / beta) * demonstration term (demonstrations vs the policy's fresh samples on the same
        prompts; alpha is the paper's, see `AIHFConfig.demo_weight`)
        + Bradley-Terry on preferences (+ optional centring),  via `aihf.losses.aihf_reward_loss`.
With `train_reward=False` (or a Python `reward_fn`) the reward is frozen and this is the RL stage of
RLHF. The reward model may use its own tokenizer: it always scores text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from aihf.errors import InputError
from aihf.lm import runtime
from aihf.lm.config import AIHFConfig
from aihf.lm.data import TextData
from aihf.lm.loop import LoopTrainer
from aihf.lm.modeling import RewardFn, RewardScorer, Samples
from aihf.lm.policy_step import PolicyStep
from aihf.losses import aihf_reward_loss


class AIHFTrainer(LoopTrainer):
    bar_keys = (
        "loss/policy",
        "loss/reward",
        "objective/scores",
        "objective/kl",
        "rewards/accuracies",
        "rewards/demo_margin",
    )

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: AIHFConfig,
        *,
        reward_model: Any | None = None,
        reward_tokenizer: Any | None = None,
        reward_fn: RewardFn | None = None,
        demos: TextData | None = None,
        prefs: TextData | None = None,
        prompts: TextData | None = None,
        train_reward: bool = True,
        method: str = "aihf",
        sources: dict[str, str | None] | None = None,
        accelerator: Any = None,
    ) -> None:
        if reward_model is None and reward_fn is None:
            raise InputError(f"{method}: needs a reward model (--reward-model) or a reward function")
        self.train_reward = train_reward and reward_fn is None and config.reward_steps_per_iteration > 0
        uses_demos = self.train_reward and config.demo_weight > 0 and demos is not None
        # what the data must hold is checked once, before anything loads (the registry's `check`)
        policy_prompts = prompts.column("prompt") if prompts is not None else []
        if not policy_prompts:
            policy_prompts = [r["prompt"] for d in (demos, prefs) if d is not None for r in d.rows]
        self.method = method
        super().__init__(
            policy,
            tokenizer,
            config,
            sources=sources,
            learning_rate=config.policy_learning_rate or config.learning_rate,
            total_policy_steps=config.max_iterations * config.policy_steps_per_iteration,
            micro_batch_size=config.prompt_batch_size,
            accelerator=accelerator,
        )
        self.demos = demos if uses_demos else None
        self.prefs = prefs if self.train_reward else None
        self.prompt_data = TextData(
            kind="prompts", source="<policy prompts>", rows=[{"prompt": p} for p in policy_prompts]
        )
        self.reward_tokenizer = reward_tokenizer or tokenizer
        self.reward_fn = reward_fn
        acc = self.accelerator
        reward_bs = config.reward_batch_size or config.per_device_train_batch_size
        self.reward_model = None
        if reward_model is not None and self.train_reward:
            # Trained only inside `reward_step`; it scores the policy's samples in evaluation mode.
            reward_model = runtime.prepare_model(reward_model, config, "SEQ_CLS").eval()
            reward_opt = runtime.make_optimizer(
                reward_model, config.reward_learning_rate or config.learning_rate, config
            )
            self.reward_model, self.reward_opt = runtime.prepare_trainable(
                acc, reward_model, reward_opt, reward_bs
            )
            reward_total = config.max_iterations * config.reward_steps_per_iteration
            self.reward_schedule = runtime.make_scheduler(acc, self.reward_opt, config, reward_total)
        elif reward_model is not None:
            self.reward_model = runtime.prepare_frozen(acc, reward_model, config.bf16)

        self.policy_step = PolicyStep(
            self.policy,
            self.optimizer,
            self.scheduler,
            tokenizer,
            config,
            acc,
            ref_policy=self.ref,
            max_prompt_length=config.max_prompt_length,
            max_grad_norm=config.max_grad_norm,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
        )
        # the next iteration's first policy step: its prompts and samples, drawn with this one's agent answers
        self.ahead: tuple[list[str], Samples] | None = None
        self.add_sampler("prompts", self.prompt_data, config.prompt_batch_size, 0)
        if self.demos is not None:
            self.add_sampler("demos", self.demos, reward_bs, 1)
        if self.prefs is not None:
            self.add_sampler("prefs", self.prefs, reward_bs, 2)

    @property
    def total(self) -> int:
        return self.config.max_iterations

    def data(self) -> tuple[TextData | None, ...]:
        return (self.demos, self.prefs)

    # --- the two steps ------------------------------------------------------------------------------

    def current_reward(self) -> RewardScorer | RewardFn:
        if self.reward_fn is not None:
            return self.reward_fn
        model = self.accelerator.unwrap_model(self.reward_model)
        return RewardScorer(
            model, self.reward_tokenizer, self.config.reward_max_length or self.config.max_length
        )

    @torch.no_grad()
    def pair_rewards(self, rows: Sequence[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The current reward (learned, or RLHF's frozen one) on held-out pairs, `batch_size` texts a call."""
        reward, size = (
            self.current_reward(),
            self.config.reward_batch_size or self.config.per_device_train_batch_size,
        )
        scores: dict[str, list[float]] = {"chosen": [], "rejected": []}
        for i in range(0, len(rows), size):
            part = rows[i : i + size]
            for key, found in scores.items():
                found.extend(
                    torch.as_tensor(reward([r["prompt"] for r in part], [r[key] for r in part])).tolist()
                )
        return torch.tensor(scores["chosen"]), torch.tensor(scores["rejected"])

    def demo_batches(
        self, steps: int, next_prompts: Sequence[str] = ()
    ) -> list[list[list[tuple[dict[str, str], str]]]]:
        """Demonstration micro-batches for `steps` reward steps, each row paired with a fresh policy sample.

        The policy does not change during the reward steps, so all agent samples of an iteration come
        from one batched sampling (`generation_batch_size` sequences per `generate` call). Nor does it
        change before the next iteration's first policy step: `next_prompts` get their k samples in the
        same pass, kept in `self.ahead` for that step.
        """
        rows = [self.draw("demos", self.demos) for _ in range(steps)]
        prompts = [r["prompt"] for step in rows for micro in step for r in micro]
        groups = [(prompts, 1)] + ([(next_prompts, self.config.num_generations)] if next_prompts else [])
        drawn = self.policy_step.sample_groups(groups, self.config.generation_batch_size)
        self.ahead = (list(next_prompts), drawn[1]) if next_prompts else None
        agent = iter(drawn[0].completions)
        return [[[(r, next(agent)) for r in micro] for micro in step] for step in rows]

    def samples_ahead(self) -> bool:
        """Whether this iteration draws the next one's first policy samples with its agent answers: only
        when a next iteration follows in this run and no checkpoint comes between them, so a run resumed
        from a checkpoint draws exactly what an uninterrupted one does (the samples are never saved)."""
        following, every = self.state.step + 1, self.config.save_steps
        return following < self.total and not (every and following % every == 0)

    def reward_step(
        self, demo_batches: list[list[tuple[dict[str, str], str]]] | None = None
    ) -> dict[str, float]:
        """One reward optimiser step on (alpha / beta) * demonstration term + Bradley-Terry (METHOD.md
        section 3), over `gradient_accumulation_steps` micro-batches.

        `demo_batches`: demonstration micro-batches paired with the current policy's samples (drawn here
        if omitted).
        """
        c = self.config
        if self.demos is not None and demo_batches is None:
            demo_batches = self.demo_batches(1)[0]
        prefs = self.draw("prefs", self.prefs) if self.prefs is not None else None
        parts = c.gradient_accumulation_steps
        self.reward_model.train()
        records = []
        for i in range(parts):
            loss, metrics = self._reward_loss(
                demo_batches[i] if demo_batches is not None else None, prefs[i] if prefs is not None else None
            )
            runtime.backward(self.accelerator, self.reward_model, loss / parts, sync=i == parts - 1)
            records.append(metrics)
        runtime.optimizer_step(
            self.accelerator, self.reward_model, self.reward_opt, self.reward_schedule, c.max_grad_norm
        )
        self.reward_model.eval()
        return runtime.mean_metrics(records)

    def _reward_loss(
        self, demo_batch: list[tuple[dict[str, str], str]] | None, pref_rows: list[dict[str, str]] | None
    ) -> tuple[Any, dict[str, float]]:
        c = self.config
        prompts: list[str] = []
        completions: list[str] = []
        n_demo = n_pref = 0
        if demo_batch is not None:
            demo_prompts = [r["prompt"] for r, _ in demo_batch]
            prompts += demo_prompts + demo_prompts
            completions += [r["completion"] for r, _ in demo_batch] + [agent for _, agent in demo_batch]
            n_demo = len(demo_batch)
        if pref_rows is not None:
            prompts += [r["prompt"] for r in pref_rows] * 2
            completions += [r["chosen"] for r in pref_rows] + [r["rejected"] for r in pref_rows]
            n_pref = len(pref_rows)
        scorer = RewardScorer(self.reward_model, self.reward_tokenizer, c.reward_max_length or c.max_length)
        scores = scorer(prompts, completions)  # one forward pass over every text (one DDP forward)
        demo, agent_r, rest = scores.split([n_demo, n_demo, 2 * n_pref])
        chosen, rejected = rest.split([n_pref, n_pref])
        parts = aihf_reward_loss(
            demo_rewards=demo if n_demo else None,
            agent_rewards=agent_r if n_demo else None,
            chosen_rewards=chosen if n_pref else None,
            rejected_rewards=rejected if n_pref else None,
            alpha=c.demo_weight,  # the paper's alpha / beta: the 1/beta of grad L1 scales here
            demo_form=c.demo_form,
            centering_coef=c.centering_coef,
        )
        metrics = {"loss/reward": parts.loss.item(), "loss/preference": parts.preference.item()}
        if n_demo:
            metrics |= {
                "loss/demo": parts.demo.item(),
                "rewards/demo": demo.mean().item(),
                "rewards/agent": agent_r.mean().item(),
                "rewards/demo_margin": (demo - agent_r).mean().item(),
            }
        if n_pref:
            metrics |= {
                "rewards/chosen": chosen.mean().item(),
                "rewards/rejected": rejected.mean().item(),
                "rewards/accuracies": (chosen > rejected).float().mean().item(),
                "rewards/margins": (chosen - rejected).mean().item(),
            }
        return parts.loss, metrics

    def draw_prompts(self) -> list[str]:
        return [r["prompt"] for micro in self.draw("prompts", self.prompt_data) for r in micro]

    # --- one iteration --------------------------------------------------------------------------------

    def training_step(self) -> dict[str, float]:
        """(a) policy steps toward the current reward, (b) reward steps on demonstrations + preferences."""
        c = self.config
        logged = self.logs_step(self.state.step + 1)
        records = []
        for _ in range(c.policy_steps_per_iteration):
            ahead, self.ahead = self.ahead, None  # drawn with the last iteration's agent answers
            prompts, samples = ahead or (self.draw_prompts(), None)
            records.append(self.policy_step(prompts, self.current_reward(), logged, samples))
        metrics = runtime.mean_metrics(records)
        if self.train_reward:
            steps = c.reward_steps_per_iteration
            batches = [None] * steps
            if self.demos is not None:
                batches = self.demo_batches(steps, self.draw_prompts() if self.samples_ahead() else ())
            metrics |= runtime.mean_metrics([self.reward_step(batch) for batch in batches])
        return {"iteration": self.state.step + 1, **metrics}

    def save(self) -> None:
        super().save()
        if self.train_reward:
            runtime.save_model(
                self.accelerator,
                self.reward_model,
                self.reward_tokenizer,
                self.out_dir / "reward_model",
                runtime.model_card(  # saved merged: a one-label classifier any scorer loads
                    self.method,
                    self.sources | {"model": self.sources.get("reward_model")},
                    self.data(),
                    self.config.to_dict(),
                    self.logger.last,
                ),
            )
