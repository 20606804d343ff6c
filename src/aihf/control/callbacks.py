"""Callbacks of the control trainer, in the style of stable-baselines3's: `Trainer.learn` calls each
one's hooks around its loop, and evaluation, checkpoints and the progress bar are callbacks too, so a
benchmark measures or watches a run by passing its own (`train(..., callbacks=[...])`) instead of
patching the trainer.

    on_train_start     before the first SAC chunk of this call (a fresh run or a resumed one)
    on_iteration_end   after each SAC chunk and the algorithm's work on it (reward step, re-scoring)
    on_train_end       when the loop ends, also by an error or Ctrl-C (close what you opened)

Built-in order per iteration: evaluation, checkpoint, progress bar, then the user's callbacks; the
trainer then writes its logger (so a callback's `trainer.model.logger.record(...)` is kept).
Stable-baselines3's own per-step callbacks still go to `train(..., callback=...)` (passed to SAC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from aihf.control.train import Trainer


class PauseTraining(BaseException):
    """Raised by a callback's `on_iteration_end` to leave the loop after the iteration's checkpoint: the
    run stops unfinished and resumes from there (a BaseException, so the per-job `except Exception`
    handlers that turn failures into records let it through)."""


class TrainerCallback:
    """Base class: override the hooks you need; `steps` is the number of SAC steps just taken."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first SAC chunk of this `learn()` call."""

    def on_iteration_end(self, trainer: Trainer, steps: int) -> None:
        """After a SAC chunk and the algorithm's work on it; `trainer.state["iteration"]` is counted."""

    def on_train_end(self, trainer: Trainer) -> None:
        """When the loop is left, normally or not."""


class EvaluationCallback(TrainerCallback):
    """The deterministic policy's true return: at step 0 of a fresh run, every `every` environment steps
    and at the end, into the curve (`trainer.state["curve"]`) and the logger; with the learned reward's
    diagnostics after step 0 (`trainer.last_eval`)."""

    def __init__(self, every: int, total_steps: int) -> None:
        self.every, self.total_steps = every, total_steps

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.state["curve"]:
            self._record(trainer, 0, trainer.evaluate())

    def on_iteration_end(self, trainer: Trainer, steps: int) -> None:
        now = trainer.model.num_timesteps
        if now >= self.total_steps or now // self.every > (now - steps) // self.every:
            trainer.last_eval = trainer.evaluate(with_reward=True)
            self._record(trainer, now, trainer.last_eval)
            trainer.model.logger.record("eval/true_return", trainer.last_eval["return_mean"])

    @staticmethod
    def _record(trainer: Trainer, step: int, result: dict[str, Any]) -> None:
        row = {
            "step": step,
            "eval_return_mean": result["return_mean"],
            "eval_return_std": result["return_std"],
        }
        trainer.state["curve"].append(row)


class CheckpointCallback(TrainerCallback):
    """The run's checkpoint (atomic, verified on resume): once when a fresh run starts, then after
    every iteration; a crash or Ctrl-C loses at most the iteration in progress."""

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.checkpoint_path.is_dir():
            trainer.save_checkpoint()

    def on_iteration_end(self, trainer: Trainer, steps: int) -> None:
        trainer.save_checkpoint()


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar of environment steps, showing the latest evaluation's true return."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.cfg
        self.bar = tqdm(
            total=cfg.n_timesteps, initial=trainer.model.num_timesteps, unit="step", desc=cfg.algo
        )

    def on_iteration_end(self, trainer: Trainer, steps: int) -> None:
        assert self.bar is not None
        if trainer.state["curve"][-1]["step"] == trainer.model.num_timesteps:
            self.bar.set_postfix(true_return=f"{trainer.state['curve'][-1]['eval_return_mean']:.1f}")
        self.bar.update(steps)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
