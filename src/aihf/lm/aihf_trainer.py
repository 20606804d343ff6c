"""AIHFTrainer: Algorithm 1 of the paper for Hugging Face causal LMs (METHOD.md sections 2-4).

Each outer iteration alternates
  (a) `policy_steps_per_iteration` RL steps of the policy toward the *current* reward (`PolicyStep`),
  (b) `reward_steps_per_iteration` steps of the reward model on
        alpha * demonstration term (demonstrations vs the policy's fresh samples on the same prompts)
        + Bradley-Terry on preferences (+ optional centring),  via `aihf.losses.aihf_reward_loss`.
With `train_reward=False` (or a Python `reward_fn`) the reward is frozen and this is the RL stage of
RLHF. The reward model may use its own tokenizer: it always scores text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.lm import runtime
from aihf.lm.config import AIHFConfig
from aihf.lm.data import TextData
from aihf.lm.modeling import RewardFn, RewardScorer
from aihf.lm.policy_step import PolicyStep
from aihf.losses import aihf_reward_loss


class AIHFTrainer:
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
    ) -> None:
        if reward_model is None and reward_fn is None:
            raise InputError(f"{method}: needs a reward model (--reward-model) or a reward function")
        self.train_reward = train_reward and reward_fn is None and config.reward_steps_per_iteration > 0
        uses_demos = self.train_reward and config.alpha > 0 and demos is not None
        if self.train_reward and not uses_demos and prefs is None:
            raise InputError(
                f"{method}: learning the reward needs demonstrations (with alpha > 0) or preferences"
            )
        self.config, self.method, self.sources = config, method, sources or {}
        self.demos = demos if uses_demos else None
        self.prefs = prefs if self.train_reward else None
        policy_prompts = prompts.column("prompt") if prompts is not None else []
        if not policy_prompts:
            policy_prompts = [r["prompt"] for d in (demos, prefs) if d is not None for r in d.rows]
        if not policy_prompts:
            raise InputError(
                f"{method}: the policy step needs prompts (--prompts, or demonstrations/preferences)"
            )
        self.policy_prompts = policy_prompts
        self.tokenizer = tokenizer
        self.reward_tokenizer = reward_tokenizer or tokenizer
        self.reward_fn = reward_fn

        self.accelerator = acc = runtime.make_accelerator(config)
        policy = runtime.maybe_peft(policy, config, "CAUSAL_LM")
        ref_policy = None if config.use_peft else runtime.frozen_copy(policy)
        policy_opt = runtime.make_optimizer(
            policy, config.policy_learning_rate or config.learning_rate, config.weight_decay
        )
        self.policy, self.policy_opt = runtime.prepare_trainable(
            acc, policy, policy_opt, config.prompt_batch_size
        )
        policy_total = config.max_iterations * config.policy_steps_per_iteration
        policy_schedule = runtime.make_scheduler(acc, self.policy_opt, config, policy_total)
        self.ref_policy = (
            runtime.prepare_frozen(acc, ref_policy, config.bf16) if ref_policy is not None else None
        )
        self.reward_model = None
        if reward_model is not None:
            if self.train_reward:
                reward_model = runtime.maybe_peft(reward_model, config, "SEQ_CLS")
                reward_opt = runtime.make_optimizer(
                    reward_model, config.reward_learning_rate or config.learning_rate, config.weight_decay
                )
                self.reward_model, self.reward_opt = runtime.prepare_trainable(
                    acc, reward_model, reward_opt, config.reward_batch_size or config.batch_size
                )
                reward_total = config.max_iterations * config.reward_steps_per_iteration
                self.reward_schedule = runtime.make_scheduler(acc, self.reward_opt, config, reward_total)
            else:
                self.reward_model = runtime.prepare_frozen(acc, reward_model, config.bf16)

        self.policy_step = PolicyStep(
            self.policy,
            self.policy_opt,
            policy_schedule,
            tokenizer,
            config,
            acc,
            ref_policy=self.ref_policy,
            max_prompt_length=config.max_prompt_length,
            max_grad_norm=config.max_grad_norm,
        )
        rank, world = acc.process_index, acc.num_processes
        reward_bs = config.reward_batch_size or config.batch_size
        samplers = {
            "prompts": runtime.BatchSampler(
                len(policy_prompts), config.prompt_batch_size, config.seed, rank, world
            )
        }
        if self.demos is not None:
            samplers["demos"] = runtime.BatchSampler(len(self.demos), reward_bs, config.seed + 1, rank, world)
        if self.prefs is not None:
            samplers["prefs"] = runtime.BatchSampler(len(self.prefs), reward_bs, config.seed + 2, rank, world)
        self.samplers = samplers
        self.state = runtime.TrainerState(samplers)
        acc.register_for_checkpointing(self.state)
        self.out_dir = Path(config.output_dir)
        self.logger = runtime.MetricsLogger(self.out_dir, acc.is_main_process, config.tensorboard)

    # --- the two steps ------------------------------------------------------------------------------

    def current_reward(self) -> RewardScorer | RewardFn:
        if self.reward_fn is not None:
            return self.reward_fn
        model = self.accelerator.unwrap_model(self.reward_model)
        return RewardScorer(
            model, self.reward_tokenizer, self.config.reward_max_length or self.config.max_length
        )

    def demo_batches(self, steps: int) -> list[list[tuple[dict[str, str], str]]]:
        """Demonstration batches for `steps` reward steps, each row paired with a fresh policy sample.

        The policy does not change during the reward steps, so all agent samples of an iteration come
        from one batched `generate` call (in chunks of `generation_batch_size` prompts).
        """
        rows = [[self.demos.rows[i] for i in self.samplers["demos"].next()] for _ in range(steps)]
        prompts = [r["prompt"] for batch in rows for r in batch]
        chunk = self.config.generation_batch_size
        agent = [
            c
            for i in range(0, len(prompts), chunk)
            for c in self.policy_step.sample(prompts[i : i + chunk], 1).completions
        ]
        pairs, start = [], 0
        for batch in rows:
            pairs.append(list(zip(batch, agent[start : start + len(batch)])))
            start += len(batch)
        return pairs

    def reward_step(self, demo_batch: list[tuple[dict[str, str], str]] | None = None) -> dict[str, float]:
        """One step on alpha * demonstration term + Bradley-Terry (upper level, METHOD.md section 3).

        `demo_batch`: demonstrations paired with the current policy's samples (drawn here if omitted).
        """
        c = self.config
        prompts: list[str] = []
        completions: list[str] = []
        n_demo = n_pref = 0
        if self.demos is not None:
            demo_batch = demo_batch if demo_batch is not None else self.demo_batches(1)[0]
            demo_prompts = [r["prompt"] for r, _ in demo_batch]
            prompts += demo_prompts + demo_prompts
            completions += [r["completion"] for r, _ in demo_batch] + [agent for _, agent in demo_batch]
            n_demo = len(demo_batch)
        if self.prefs is not None:
            rows = [self.prefs.rows[i] for i in self.samplers["prefs"].next()]
            prompts += [r["prompt"] for r in rows] * 2
            completions += [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
            n_pref = len(rows)
        self.reward_model.train()
        scorer = RewardScorer(self.reward_model, self.reward_tokenizer, c.reward_max_length or c.max_length)
        scores = scorer(prompts, completions)  # one forward pass over every text (one DDP forward)
        demo, agent_r, rest = scores.split([n_demo, n_demo, 2 * n_pref])
        chosen, rejected = rest.split([n_pref, n_pref])
        parts = aihf_reward_loss(
            demo_rewards=demo if n_demo else None,
            agent_rewards=agent_r if n_demo else None,
            chosen_rewards=chosen if n_pref else None,
            rejected_rewards=rejected if n_pref else None,
            alpha=c.alpha,
            demo_form=c.demo_form,
            centering_coef=c.centering_coef,
        )
        runtime.optimizer_step(
            self.accelerator,
            self.reward_model,
            self.reward_opt,
            self.reward_schedule,
            parts.loss,
            c.max_grad_norm,
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
        return metrics

    # --- the loop ---------------------------------------------------------------------------------

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
            records = []
            for _ in range(c.policy_steps_per_iteration):
                prompts = [self.policy_prompts[i] for i in self.samplers["prompts"].next()]
                records.append(self.policy_step(prompts, self.current_reward()))
            metrics = runtime.mean_metrics(records)
            if self.train_reward:
                steps = c.reward_steps_per_iteration
                demo_batches = self.demo_batches(steps) if self.demos is not None else [None] * steps
                metrics |= runtime.mean_metrics([self.reward_step(batch) for batch in demo_batches])
            self.state.step += 1
            metrics = runtime.gather_mean(acc, metrics)
            if self.state.step % c.logging_steps == 0 or self.state.step == c.max_iterations:
                self.logger.log(self.state.step, {"iteration": self.state.step, **metrics})
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in _BAR_KEYS})
            bar.update(1)
            if c.save_steps and self.state.step % c.save_steps == 0:
                runtime.save_checkpoint(acc, self.out_dir, self.state.step, c.save_total_limit)
        bar.close()
        self.save()
        self.logger.close()
        return self.logger.last

    def save(self) -> None:
        config = self.config.to_dict()
        card = runtime.model_card(
            self.method, self.sources.get("model", "?"), self.sources, config, self._notes()
        )
        runtime.save_model(self.accelerator, self.policy, self.tokenizer, self.out_dir / "policy", card)
        if self.train_reward:
            runtime.save_model(
                self.accelerator,
                self.reward_model,
                self.reward_tokenizer,
                self.out_dir / "reward_model",
                card,
            )

    def _notes(self) -> list[str]:
        return [n for d in (self.demos, self.prefs) if d is not None for n in d.notes]


_BAR_KEYS = (
    "loss/policy",
    "loss/reward",
    "objective/scores",
    "objective/kl",
    "rewards/accuracies",
    "rewards/demo_margin",
)
