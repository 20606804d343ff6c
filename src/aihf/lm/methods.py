"""The one registry of LM methods: name, config class, data, outputs, and how each one trains.

`aihf lm train --trainer NAME`, `run_training`, the benchmark, the docs and the tests all read
`METHODS`; adding a method is one `Method(...)` entry and its `run` function here (its data checks and
its benchmark budget beside it). Heavy imports stay inside the runners. `VARIANTS` are the benchmark's
other starts of a registered method (from the SFT policy, or with a warmed reward).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aihf.errors import InputError
from aihf.flags import canonical
from aihf.lm.config import (
    RENAMES,
    AIHFConfig,
    DirectAIHFConfig,
    LMConfig,
    OddsRatioConfig,
    SelfPlayAIHFConfig,
    SFTRewardConfig,
)
from aihf.lm.data import TextData

if TYPE_CHECKING:  # torch and transformers load only when a method runs, not for `aihf --help`
    from aihf.lm.loop import EvalData
    from aihf.lm.modeling import RewardFn


@dataclass
class RunInputs:
    """What `run_training` has loaded and validated before a method's runner starts."""

    config: Any
    model: str
    tokenizer: Any
    reward_model: str | None
    data: dict[str, TextData | None]
    sources: dict[str, str | None]
    reward_fn: RewardFn | None = None
    evaluation: EvalData | None = None  # evaluation during training (eval_strategy "steps")


@dataclass(frozen=True)
class Budget:
    """A benchmark's training budget, which each method turns into its own config fields."""

    steps: int  # optimiser steps of the one-stage methods (and of an SFT start)
    iterations: int  # outer iterations of AIHF / RLHF (one policy step each)
    reward_steps: int  # RLHF's reward-model stage; AIHF spreads as many over its iterations
    spin_iterations: int  # Self-Play AIHF / SPIN iterations (`steps` spread over them)
    max_new_tokens: int  # the evaluation's completion length, for methods that sample while they train


def _steps_budget(budget: Budget) -> dict[str, Any]:
    return {"max_steps": budget.steps}


def _aihf_budget(budget: Budget) -> dict[str, Any]:
    """The same reward-update budget as RLHF's reward stage, spread over the iterations; a warmed
    reward (`aihf-warm`) changes only where the reward starts, not how often it is updated."""
    return {
        "max_iterations": budget.iterations,
        "reward_steps_per_iteration": max(1, round(budget.reward_steps / budget.iterations)),
    }


def _rlhf_budget(budget: Budget) -> dict[str, Any]:
    return {
        "max_iterations": budget.iterations,
        "reward_warmup_steps": budget.reward_steps,
        "sft_steps": budget.steps,
    }


def _self_play_budget(budget: Budget) -> dict[str, Any]:
    return {
        "max_iterations": budget.spin_iterations,
        "steps_per_iteration": max(1, budget.steps // budget.spin_iterations),
        "max_completion_length": budget.max_new_tokens,
    }


def _step_updates(config: Any) -> int:
    return config.max_steps


def _iteration_updates(config: Any) -> int:
    """AIHF's and RLHF's policy steps, one optimiser step each, after RLHF's SFT stage (0 for AIHF)."""
    return config.sft_steps + config.max_iterations * config.policy_steps_per_iteration


def _self_play_updates(config: Any) -> int:
    return config.max_iterations * config.steps_per_iteration


DataCheck = Callable[[Any, dict[str, bool], bool], None]  # (config, data given, reward_fn given)


def _check_aihf(cfg: Any, has: dict[str, bool], reward_fn: bool) -> None:
    learns_reward = not reward_fn and cfg.reward_steps_per_iteration > 0
    if learns_reward and not (cfg.alpha > 0 and has["demos"]) and not has["prefs"]:
        raise InputError("aihf: learning the reward needs demonstrations (alpha > 0) or preferences")
    if learns_reward and has["demos"]:
        cfg.demo_weight  # noqa: B018 -- alpha > 0 at beta 0 has no weight: refused before anything loads
    _check_policy_step("aihf", has)


def _check_rlhf(cfg: Any, has: dict[str, bool], reward_fn: bool) -> None:
    if cfg.sft_steps > 0 and not has["demos"]:
        raise InputError("rlhf: sft_steps > 0 needs demonstrations (--demos)")
    _check_policy_step("rlhf", has)


def _check_policy_step(name: str, has: dict[str, bool]) -> None:
    if not any(has.values()):
        raise InputError(f"{name}: the policy step needs prompts (--prompts, --demos or --prefs)")


def _check_direct_aihf(cfg: Any, has: dict[str, bool], reward_fn: bool) -> None:
    if cfg.alpha > 0 and not has["demos"]:
        raise InputError("direct-aihf: alpha > 0 needs demonstrations (--demos); use alpha: 0 for DPO")


@dataclass(frozen=True)
class Method:
    name: str
    config: type[LMConfig]
    summary: str
    run: Callable[[RunInputs], dict[str, float]]
    required: tuple[str, ...] = ()  # data it cannot run without (demos / prefs / prompts)
    optional: tuple[str, ...] = ()  # data it uses when given
    iterative: bool = False  # limited by max_iterations (else max_steps)
    outputs: tuple[str, ...] = ("policy",)
    needs_reward_model: bool = False  # --reward-model, unless a Python reward_fn is given
    # trains earlier stages in their own directories and resumes each on its own (`_rlhf`), so it
    # checks its own checkpoints rather than run_training checking OUT/checkpoints
    staged: bool = False
    # what the config asks of the data, checked by run_training once, before anything loads
    check: DataCheck | None = None
    # has a reward (learned, or implicit in the policy) that --eval-prefs can score during training
    scores_prefs: bool = True
    # --- how the benchmark runs it ---
    family: Literal["rl", "offline"] = "offline"  # its settings family: rl = samples while it trains
    start: Literal["base", "sft"] = "base"  # the policy it starts from (the paper: baselines from SFT)
    budget: Callable[[Budget], dict[str, Any]] = _steps_budget
    sft_stage: bool = False  # trains its own SFT stage into OUT/sft (the benchmark links a shared one)
    # optimiser steps on the policy that a config asks for, its own SFT stage included (a start it is
    # given is counted by whoever gives it): what a fair comparison matches
    policy_updates: Callable[[Any], int] = _step_updates


@dataclass(frozen=True)
class Variant:
    """A registered method as the benchmark runs it: its start and whether its reward is warmed."""

    method: str
    start: Literal["base", "sft"] = "base"
    warm_reward: bool = False  # the reward starts from the same Bradley-Terry warm-up as RLHF's
    summary: str = ""


# --- runners -----------------------------------------------------------------------------------------


def _policy(path: str, config: Any) -> Any:
    """The policy to train, built with the config's `dtype` and `attn_implementation`. Called after the
    accelerator (or TRL's arguments) exists, so that DeepSpeed ZeRO-3 builds it sharded."""
    from aihf.lm.modeling import load_causal_lm, model_init_kwargs

    return load_causal_lm(path, model_init_kwargs(config))


def _sft(run: RunInputs) -> dict[str, float]:
    from aihf.lm import baselines

    return baselines.run_sft(
        run.model, run.tokenizer, run.config, run.data["demos"], run.sources, run.evaluation
    )


def _reward(run: RunInputs) -> dict[str, float]:
    from aihf.lm import baselines
    from aihf.lm.modeling import load_tokenizer

    path = run.reward_model or run.model
    return baselines.run_reward(
        path, load_tokenizer(path), run.config, run.data["prefs"], run.sources, evaluation=run.evaluation
    )


def _trl_pairwise(loss: str) -> Callable[[RunInputs], dict[str, float]]:
    def run_pairwise(run: RunInputs) -> dict[str, float]:
        from aihf.lm import baselines

        return baselines.run_pairwise(
            run.model, run.tokenizer, run.config, run.data["prefs"], run.sources, loss, run.evaluation
        )

    return run_pairwise


def _direct_aihf(run: RunInputs) -> dict[str, float]:
    from aihf.lm import runtime
    from aihf.lm.direct import DirectAIHFTrainer

    accelerator = runtime.make_accelerator(run.config)  # before any model is loaded
    trainer = DirectAIHFTrainer(
        _policy(run.model, run.config),
        run.tokenizer,
        run.config,
        prefs=run.data["prefs"],
        demos=run.data["demos"],
        sources=run.sources,
        accelerator=accelerator,
    )
    if run.evaluation is not None:
        trainer.add_evaluation(run.evaluation, run.model)
    return trainer.train()


def _self_play(method: str) -> Callable[[RunInputs], dict[str, float]]:
    def run_self_play(run: RunInputs) -> dict[str, float]:
        from aihf.lm import runtime
        from aihf.lm.direct import SelfPlayAIHFTrainer

        prefs = run.data["prefs"] if method == "self-play-aihf" else None
        accelerator = runtime.make_accelerator(run.config)  # before any model is loaded
        trainer = SelfPlayAIHFTrainer(
            _policy(run.model, run.config),
            run.tokenizer,
            run.config,
            demos=run.data["demos"],
            prefs=prefs,
            sources=run.sources,
            method=method,
            accelerator=accelerator,
        )
        if run.evaluation is not None:
            trainer.add_evaluation(run.evaluation, run.model)
        return trainer.train()

    return run_self_play


def _aihf(run: RunInputs) -> dict[str, float]:
    """Algorithm 1: the reward is learned from demonstrations and preferences during RL."""
    return _rl_stage(run, run.model, run.reward_model, train_reward=True)


def _rlhf(run: RunInputs) -> dict[str, float]:
    """SFT -> BTL reward model -> RL against the frozen reward; each stage in its own directory.

    With `resume_from_checkpoint`, each stage resumes on its own: a stage whose output was saved is
    skipped, one with a checkpoint continues from its newest, any other starts afresh. The plan is
    made (and every checkpoint it uses verified) before any stage trains.
    """
    from aihf.lm import baselines
    from aihf.lm.modeling import load_tokenizer

    cfg, out = run.config, Path(run.config.output_dir)
    learns_reward = run.reward_fn is None and run.data["prefs"] is not None
    sft_done, sft_resume = _stage_plan(cfg, out / "sft", "policy")
    rm_done, rm_resume = _stage_plan(cfg, out / "reward_stage", "reward_model")
    rl_resume = _rl_stage_resume(cfg, out)
    metrics: dict[str, float] = {}
    model = run.model
    if cfg.sft_steps > 0:  # run_training has checked that demonstrations were given
        if not sft_done:
            # the earlier stages keep no snapshots: `snapshot_steps` counts the RL stage's iterations
            sft_cfg = dataclasses.replace(
                cfg,
                max_steps=cfg.sft_steps,
                output_dir=str(out / "sft"),
                snapshot_steps=0,
                resume_from_checkpoint=sft_resume,
            )
            baselines.run_sft(model, run.tokenizer, sft_cfg, run.data["demos"], run.sources)
        metrics |= {f"sft/{k}": v for k, v in _logged(out / "sft").items()}
        model = str(out / "sft" / "policy")
    reward_model = run.reward_model
    if learns_reward:
        if not rm_done:
            rm_cfg = dataclasses.replace(
                cfg,
                max_steps=cfg.reward_warmup_steps or cfg.max_iterations,
                learning_rate=cfg.reward_learning_rate or cfg.learning_rate,
                per_device_train_batch_size=cfg.reward_batch_size or cfg.per_device_train_batch_size,
                output_dir=str(out / "reward_stage"),
                snapshot_steps=0,
                resume_from_checkpoint=rm_resume,
            )
            held_out = run.evaluation and dataclasses.replace(run.evaluation, gold=None)
            baselines.run_reward(
                reward_model,
                load_tokenizer(reward_model),
                rm_cfg,
                run.data["prefs"],
                run.sources,
                evaluation=held_out,
            )
        metrics |= {f"reward_stage/{k}": v for k, v in _logged(out / "reward_stage").items()}
        reward_model = str(out / "reward_stage" / "reward_model")
    rl_run = dataclasses.replace(run, config=dataclasses.replace(cfg, resume_from_checkpoint=rl_resume))
    return metrics | _rl_stage(rl_run, model, reward_model, train_reward=False)


def _stage_plan(cfg: Any, stage_out: Path, output: str) -> tuple[bool, str | None]:
    """(done, checkpoint to resume from) of an earlier RLHF stage; a fresh run redoes every stage.

    Outputs are renamed into place only when complete, so a saved output means the stage finished.
    """
    from aihf.lm.modeling import is_saved_model

    if not cfg.resume_from_checkpoint:
        return False, None
    if is_saved_model(stage_out / output):
        return True, None
    return False, _newest_checkpoint(stage_out)


def _rl_stage_resume(cfg: Any, out: Path) -> str | None:
    """The RL stage's checkpoint: the one named, else its newest (verified), else none (start it)."""
    from aihf.lm import runtime

    resume = cfg.resume_from_checkpoint
    if resume is True or resume == "latest":
        return _newest_checkpoint(out)
    return str(runtime.resolve_resume(out, resume)) if resume else None


def _newest_checkpoint(out: Path) -> str | None:
    """A stage's newest checkpoint, verified; None when it has none (the stage starts afresh)."""
    from aihf.lm import runtime

    return str(runtime.resolve_resume(out, True)) if runtime.checkpoint_dirs(out) else None


def _logged(stage_out: Path) -> dict[str, float]:
    """A TRL stage's final metrics: its log records merged in order (what the stage returned)."""
    from aihf import checkpoints

    merged: dict[str, float] = {}
    path = stage_out / "metrics.jsonl"
    for record in checkpoints.read_log(path) if path.is_file() else []:
        merged |= {k: v for k, v in record.items() if isinstance(v, (int, float))}
    return merged


def _rl_stage(run: RunInputs, model: str, reward_model: str | None, train_reward: bool) -> dict[str, float]:
    from aihf.lm import runtime
    from aihf.lm.aihf_trainer import AIHFTrainer
    from aihf.lm.modeling import load_reward_model, load_tokenizer, model_init_kwargs

    accelerator = runtime.make_accelerator(run.config)  # before any model is loaded
    rm = rm_tokenizer = None
    if run.reward_fn is None:
        rm_tokenizer = load_tokenizer(reward_model)
        rm = load_reward_model(reward_model, model_init_kwargs(run.config))
    prompts = run.data["prompts"]
    if prompts is None:  # the policy step defaults to every prompt of the data
        rows = [{"prompt": r["prompt"]} for d in (run.data["demos"], run.data["prefs"]) if d for r in d.rows]
        prompts = TextData(kind="prompts", source="<demos+prefs prompts>", rows=rows) if rows else None
    trainer = AIHFTrainer(
        _policy(model, run.config),
        run.tokenizer,
        run.config,
        reward_model=rm,
        reward_tokenizer=rm_tokenizer,
        reward_fn=run.reward_fn,
        demos=run.data["demos"] if train_reward else None,
        prefs=run.data["prefs"] if train_reward else None,
        prompts=prompts,
        train_reward=train_reward,
        method="aihf" if train_reward else "rlhf",
        sources=run.sources,
        accelerator=accelerator,
    )
    if run.evaluation is not None:  # RLHF's reward is evaluated in its own stage, where it learns
        held_out = run.evaluation if train_reward else dataclasses.replace(run.evaluation, prefs=None)
        trainer.add_evaluation(held_out, model)
    return trainer.train()


# --- the registry ------------------------------------------------------------------------------------

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "aihf",
            AIHFConfig,
            "Algorithm 1: RL policy steps alternating with reward steps on demonstrations + preferences",
            _aihf,
            optional=("demos", "prefs", "prompts"),
            iterative=True,
            outputs=("policy", "reward_model"),
            needs_reward_model=True,
            check=_check_aihf,
            family="rl",
            budget=_aihf_budget,
            policy_updates=_iteration_updates,
        ),
        Method(
            "direct-aihf",
            DirectAIHFConfig,
            "DPO on the preferences + alpha * SFT on the separate demonstration set",
            _direct_aihf,
            required=("prefs",),
            optional=("demos",),
            check=_check_direct_aihf,
        ),
        Method(
            "self-play-aihf",
            SelfPlayAIHFConfig,
            "SPIN on the demonstrations against the current iterate + DPO on the preferences",
            _self_play("self-play-aihf"),
            required=("demos",),
            optional=("prefs",),
            iterative=True,
            budget=_self_play_budget,
            policy_updates=_self_play_updates,
        ),
        Method(
            "rlhf",
            AIHFConfig,
            "SFT -> BTL reward model (TRL) -> RL against the frozen reward",
            _rlhf,
            optional=("prefs", "prompts", "demos"),
            iterative=True,
            outputs=("policy", "reward_stage/reward_model"),
            needs_reward_model=True,
            staged=True,
            check=_check_rlhf,
            family="rl",
            budget=_rlhf_budget,
            sft_stage=True,
            policy_updates=_iteration_updates,
        ),
        Method(
            "sft",
            SFTRewardConfig,
            "TRL SFTTrainer on the demonstrations",
            _sft,
            required=("demos",),
            scores_prefs=False,
        ),
        Method(
            "reward",
            SFTRewardConfig,
            "TRL RewardTrainer (Bradley-Terry) on the preferences",
            _reward,
            required=("prefs",),
            outputs=("reward_model",),
            policy_updates=lambda config: 0,
        ),
        Method(
            "dpo", DirectAIHFConfig, "TRL DPOTrainer", _trl_pairwise("dpo"), required=("prefs",), start="sft"
        ),
        Method(
            "ipo",
            DirectAIHFConfig,
            "TRL DPOTrainer, IPO loss",
            _trl_pairwise("ipo"),
            required=("prefs",),
            start="sft",
        ),
        Method(
            "rpo",
            DirectAIHFConfig,
            "TRL DPOTrainer, DPO + alpha * SFT on the chosen answers (loss_type sigmoid + sft)",
            _trl_pairwise("rpo"),
            required=("prefs",),
            start="sft",
        ),
        Method(
            "orpo",
            OddsRatioConfig,
            "TRL ORPOTrainer: SFT on chosen + beta * odds ratio, no reference model",
            _trl_pairwise("orpo"),
            required=("prefs",),
        ),
        Method(
            "spin",
            SelfPlayAIHFConfig,
            "SPIN on the demonstrations (Self-Play AIHF without preferences)",
            _self_play("spin"),
            required=("demos",),
            iterative=True,
            budget=_self_play_budget,
            policy_updates=_self_play_updates,
        ),
    )
}

# What the benchmark can run: every method as registered, and these variants of one.
VARIANTS: dict[str, Variant] = {m.name: Variant(m.name, m.start, summary=m.summary) for m in METHODS.values()}
VARIANTS |= {
    "aihf-warm": Variant(
        "aihf",
        warm_reward=True,
        summary="AIHF whose reward starts from RLHF's Bradley-Terry warm-up (`reward_steps` steps)",
    ),
    "aihf-sft": Variant("aihf", start="sft", summary="AIHF started from the SFT policy, as RLHF is"),
}


def get_variant(name: str, where: str = "method") -> Variant:
    if name not in VARIANTS:
        raise InputError(f"{where}: unknown method {name!r}: expected one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown trainer {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]


def build_config(
    trainer: str, values: dict[str, Any] | None = None, where: str = "config", **overrides: Any
) -> Any:
    """The trainer's config from a dict (YAML keys), with non-None `overrides` (CLI flags) on top.

    Keys that name data or models (`trainer`, `model`, `demos`, ...) are allowed in the YAML and ignored
    here; the caller reads them.
    """
    config_cls = get_method(trainer).config
    given = canonical({k: v for k, v in overrides.items() if v is not None}, RENAMES, "arguments")
    config_cls.from_dict(given, "arguments")  # a bad flag is named as such, not as the file's
    values = canonical(values or {}, RENAMES, where)  # one source at a time: old names in either
    values = {k: v for k, v in values.items() if k not in RUN_KEYS} | given
    return config_cls.from_dict(values, where)


# YAML keys that describe the run rather than the optimiser (each also a flag of `aihf lm train`).
MODEL_KEY = "model_name_or_path"  # the policy to start from
RUN_KEYS = ("trainer", MODEL_KEY, "reward_model", "demos", "prefs", "prompts", "eval_prefs", "eval_prompts")
