"""`LoopTrainer`: the one training loop of the hand-written trainers (AIHF, Direct AIHF, Self-Play AIHF).

A subclass says what one unit of progress is (`training_step`: an optimiser step, or an outer
iteration of several) and how many there are (`total`); this class owns everything around it:
the accelerator, the policy with its PEFT adapter, optimiser, schedule and frozen reference, the
data samplers, logging every `logging_steps` units, checkpoints every `save_steps` units, resume,
the progress bar, and saving OUT/policy at the end (evaluation every `eval_steps` units through
`add_evaluation`). What happens around a unit without being part of
the algorithm (policy snapshots, throughput, periodic evaluation, a benchmark's clock) is a `Callback`,
in the manner of transformers' `TrainerCallback`.

Why not transformers' `Trainer`: AIHF updates two models with two optimisers and samples from the
policy inside the step; Self-Play regenerates its opponent's answers every iteration. TRL's own
on-policy trainers bend `Trainer` to this by overriding most of it; a short explicit loop on
accelerate keeps each algorithm readable top to bottom and gives the same features (accumulation,
checkpointing, mixed precision, DDP/DeepSpeed, trackers). The TRL-backed baselines share the
config's meaning through `baselines.trl_args`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aihf import checkpoints
from aihf.lm import runtime
from aihf.lm.config import LMConfig
from aihf.lm.data import TextData
from aihf.safety import NonFiniteError


class Callback:
    """Hooks around the loop's units; each receives the trainer. `on_step_end` may add to the unit's
    metrics before they are logged (the unit's number is `trainer.state.step`)."""

    def on_train_begin(self, trainer: LoopTrainer) -> None:
        """Before the first unit of this `train` call (after a resume has loaded its checkpoint)."""

    def on_step_begin(self, trainer: LoopTrainer) -> None:
        """Before each unit."""

    def on_step_end(self, trainer: LoopTrainer, metrics: dict[str, float]) -> None:
        """After each unit, before its metrics are logged and its checkpoint is written."""

    def on_train_end(self, trainer: LoopTrainer) -> None:
        """After the last unit, before the final outputs are saved."""


class Snapshots(Callback):
    """The policy as a loadable model every `every` units, in OUT/snapshots/step-N (`runtime.snapshot_dir`).

    `save(path)` writes one snapshot: our loop's `save_policy`, or TRL's model through `as_trl_callback`."""

    def __init__(self, every: int, out_dir: Path, save: Callable[[Path], None] | None = None) -> None:
        self.every, self.out_dir, self.save = every, Path(out_dir), save

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if trainer.state.step % self.every == 0:
            path = runtime.snapshot_dir(self.out_dir, trainer.state.step)
            (self.save or trainer.save_policy)(path)


class Throughput(Callback):
    """`train/tokens_per_second`: the tokens of all units so far over their wall-clock time (logging and
    checkpoints between units excluded). A unit reports its tokens as `train/tokens` in its metrics."""

    def __init__(self) -> None:
        self.tokens, self.seconds, self.start = 0, 0.0, 0.0

    def on_step_begin(self, trainer: LoopTrainer) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer: LoopTrainer, metrics: dict[str, float]) -> None:
        self.seconds += time.perf_counter() - self.start
        self.tokens += int(metrics.pop("train/tokens", 0))
        metrics["train/tokens_per_second"] = self.tokens / max(self.seconds, 1e-9)


@contextlib.contextmanager
def isolated_rng(device: Any) -> Iterator[None]:
    """Random draws inside (evaluation's sampling) leave the training's random streams where they were:
    torch's CPU generator and, on CUDA, the device's, restored on exit."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@dataclass
class EvalData:
    """What evaluation during training measures on: held-out preference pairs (the reward's accuracy)
    and, with a gold reward, the prompts its samples are drawn for."""

    prefs: TextData | None = None
    prompts: list[str] = dataclasses.field(default_factory=list)
    gold: Any = None  # a RewardFn (`aihf.lm.gold.load_gold_reward`)


class Evaluate(Callback):
    """Evaluation every `every` units (TRL's eval_steps), logged with an `eval/` prefix.

    - With `prefs`: the trainer's reward on the held-out pairs (`trainer.pair_rewards`: the learned
      reward, or the implicit beta * log(pi / pi_ref)), as `eval/rewards/accuracies` (share of pairs
      where chosen scores strictly above rejected) and `eval/rewards/margins`.
    - With `gold` and `prompts`: `aihf.lm.evaluation.evaluate` (gold reward mean, KL to `reference`, win
      rate, ...); `reference` is the frozen model the KL and the win rate compare against.

    Nothing here moves the training: the policy is scored in eval mode (its mode restored after) and
    sampling runs on forked random streams (`isolated_rng`). Every process evaluates the whole held-out
    set on the bare model (the same numbers on each), so no process waits on another's forward pass."""

    def __init__(
        self,
        every: int,
        prompts: Sequence[str] = (),
        gold: Any = None,
        reference: Any = None,
        config: Any = None,
        prefs: TextData | None = None,
    ) -> None:
        self.every, self.prompts, self.gold, self.reference = every, list(prompts), gold, reference
        self.config, self.prefs = config, prefs
        self.ref_samples: Any = None

    def on_step_end(self, trainer: LoopTrainer, metrics: dict[str, float]) -> None:
        if trainer.state.step % self.every:
            return
        policy = trainer.accelerator.unwrap_model(trainer.policy)
        was_training = policy.training
        policy.eval()
        with isolated_rng(trainer.accelerator.device):
            if self.prefs is not None:
                chosen, rejected = trainer.pair_rewards(self.prefs.rows)
                metrics["eval/rewards/accuracies"] = (chosen > rejected).float().mean().item()
                metrics["eval/rewards/margins"] = (chosen - rejected).mean().item()
            if self.gold is not None and self.prompts:
                # sampled as the policy step samples: ZeRO-3 parameters gathered, FSDP2 ones unsharded
                with runtime.generation_model(trainer.accelerator, trainer.policy) as model:
                    metrics |= {f"eval/{k}": v for k, v in self._gold(trainer, model).items()}
        policy.train(was_training)

    def _gold(self, trainer: LoopTrainer, policy: Any) -> dict[str, float]:
        from aihf.lm.evaluation import evaluate, reference_samples
        from aihf.lm.modeling import SamplingConfig

        config = self.config or SamplingConfig()
        if self.ref_samples is None:  # the reference's samples are the same at every evaluation
            self.ref_samples = reference_samples(
                self.reference, trainer.tokenizer, self.prompts, self.gold, config, trainer.config.seed
            )
        result = evaluate(
            policy,
            trainer.tokenizer,
            self.reference,
            self.prompts,
            self.gold,
            config=config,
            ref=self.ref_samples,
            seed=trainer.config.seed,
        )
        return result.metrics


class LoopTrainer:
    method = "?"
    bar_keys: tuple[str, ...] = ("loss",)

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        config: LMConfig,
        *,
        sources: dict[str, str | None] | None,
        learning_rate: float,
        total_policy_steps: int,
        micro_batch_size: int,
        keep_reference: bool = True,
        callbacks: Sequence[Callback] = (),
        accelerator: Any = None,
    ) -> None:
        self.config, self.tokenizer, self.sources = config, tokenizer, sources or {}
        self.callbacks: list[Callback] = list(callbacks)
        if config.snapshot_steps:
            self.callbacks.append(Snapshots(config.snapshot_steps, Path(config.output_dir)))
        # `accelerator`: made before the models were loaded (`methods`), so DeepSpeed ZeRO-3 built them
        # sharded; made here for a trainer called from Python with models already loaded.
        self.accelerator = acc = accelerator or runtime.make_accelerator(config)
        runtime.check_accumulation(acc, config)
        # pi_0: loaded again from the policy's source, or (PEFT) the base with the adapter switched off.
        ref = runtime.load_reference(policy, config) if keep_reference and not config.use_peft else None
        policy = runtime.prepare_model(policy, config, "CAUSAL_LM")
        optimizer = runtime.make_optimizer(policy, learning_rate, config)
        self.policy, self.optimizer = runtime.prepare_trainable(acc, policy, optimizer, micro_batch_size)
        self.scheduler = runtime.make_scheduler(acc, self.optimizer, config, total_policy_steps)
        self.ref = runtime.prepare_frozen(acc, ref, config.bf16) if ref is not None else None
        self.samplers: dict[str, runtime.BatchSampler] = {}
        self.state = runtime.TrainerState(self.samplers)
        runtime.register_state(acc, self.state)
        self.out_dir = Path(config.output_dir)
        self.logger = runtime.MetricsLogger(acc, self.out_dir, self.method, config)

    # --- what a subclass provides --------------------------------------------------------------------

    @property
    def total(self) -> int:
        raise NotImplementedError

    def training_step(self) -> dict[str, float]:
        """One unit of progress; returns its metrics (already averaged over micro-batches)."""
        raise NotImplementedError

    def data(self) -> Sequence[TextData | None]:
        """The data sets whose notes go into the model card."""
        return ()

    def pair_rewards(self, rows: Sequence[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward this method learns, on (prompt, chosen) and (prompt, rejected) of preference rows:
        what evaluation during training scores held-out pairs with (`Evaluate`)."""
        raise NotImplementedError(f"{self.method} learns no reward to evaluate on preference pairs")

    def add_callback(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def add_evaluation(self, data: EvalData, model: str) -> None:
        """Evaluation during training as the config's eval_* fields say (`Evaluate`), if eval_strategy is
        "steps". `model` is the policy's starting point, loaded as the KL's reference when the trainer
        keeps no frozen copy (LoRA, self-play)."""
        from aihf.lm.modeling import SamplingConfig, load_causal_lm

        c = self.config
        if c.eval_strategy == "no":
            return
        prompts = data.prompts[: c.eval_num_prompts] if data.gold is not None else []
        reference = self.ref
        if prompts and reference is None:
            reference = runtime.prepare_frozen(self.accelerator, load_causal_lm(model), c.bf16)
        sampling = SamplingConfig(max_new_tokens=c.eval_max_new_tokens)
        every = c.eval_steps or c.logging_steps
        self.add_callback(Evaluate(every, prompts, data.gold, reference, sampling, data.prefs))

    def logs_step(self, step: int) -> bool:
        """Whether unit `step`'s metrics are logged: every `logging_steps` units and the last. Diagnostics
        that cost compute (the policy's entropy) are computed only then."""
        return step % self.config.logging_steps == 0 or step == self.total

    def _call(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # --- shared helpers --------------------------------------------------------------------------------

    def add_sampler(self, key: str, data: TextData, batch_size: int, seed_offset: int) -> None:
        acc = self.accelerator
        self.samplers[key] = runtime.BatchSampler(
            len(data), batch_size, self.config.seed + seed_offset, acc.process_index, acc.num_processes
        )

    def draw(self, key: str, data: TextData) -> list[list[dict[str, str]]]:
        """The rows of one optimiser step: `gradient_accumulation_steps` micro-batches."""
        steps = self.config.gradient_accumulation_steps
        return [[data.rows[i] for i in self.samplers[key].next()] for _ in range(steps)]

    def accumulate(
        self, micro_batches: Sequence[Any], loss_fn: Callable[[Any], tuple[torch.Tensor, dict[str, float]]]
    ) -> dict[str, float]:
        """backward over the micro-batches (each loss already scaled to its share), then one policy step."""
        records = []
        for i, micro in enumerate(micro_batches):
            loss, metrics = loss_fn(micro)
            runtime.backward(self.accelerator, self.policy, loss, sync=i == len(micro_batches) - 1)
            records.append(metrics)
        runtime.optimizer_step(
            self.accelerator, self.policy, self.optimizer, self.scheduler, self.config.max_grad_norm
        )
        return runtime.mean_metrics(records)

    # --- the loop --------------------------------------------------------------------------------------

    def train(self) -> dict[str, float]:
        c, acc, total = self.config, self.accelerator, self.total
        run = {"method": self.method, "config": c.to_dict()}
        bar = runtime.start_or_resume(
            acc, self.out_dir, c.resume_from_checkpoint, self.state, self.logger, total, self.method, run
        )
        self._call("on_train_begin")
        try:  # the bar is closed before any error line, so that line stands alone
            while self.state.step < total:
                self._call("on_step_begin")
                try:
                    metrics = self.training_step()
                except NonFiniteError as err:  # before any save: the newest checkpoint is the last good one
                    last = checkpoints.newest_complete(self.out_dir)
                    resume = f"the last good checkpoint is {last}" if last else "no checkpoint was saved"
                    raise NonFiniteError(f"step {self.state.step + 1}: {err}; stopped, {resume}") from None
                self.state.step += 1
                self._call("on_step_end", metrics)
                metrics = runtime.gather_mean(acc, metrics)
                if self.logs_step(self.state.step) or any(k.startswith("eval/") for k in metrics):
                    self.logger.log(self.state.step, metrics)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in self.bar_keys})
                bar.update(1)
                if c.save_steps and self.state.step % c.save_steps == 0:
                    runtime.save_checkpoint(acc, self.out_dir, self.state.step, c.save_total_limit, run)
        finally:
            bar.close()
        self._call("on_train_end")
        self.save()
        self.logger.close()
        return self.logger.last

    def save(self) -> None:
        """The run's outputs (a subclass adds its own): the policy in OUT/policy (`runtime.save_policy`:
        with LoRA its adapter)."""
        runtime.save_policy(
            self.accelerator,
            self.policy,
            self.tokenizer,
            self.out_dir / "policy",
            self.config,
            self.model_card,
        )

    def save_policy(self, path: Path) -> None:
        """The policy as full weights (LoRA merged), as a snapshot: what evaluation loads at each step."""
        runtime.save_model(self.accelerator, self.policy, self.tokenizer, path, self.model_card())

    def model_card(self, adapter: bool = False) -> str:
        return runtime.model_card(
            self.method, self.sources, self.data(), self.config.to_dict(), self.logger.last, adapter
        )
