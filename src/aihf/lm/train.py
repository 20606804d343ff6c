"""`run_training`: one entry point for every LM trainer (what `aihf lm train` calls).

Everything is loaded and validated before any training starts, so bad data or a bad config stops
the run with an `InputError` at once. Limits: `max_iterations` applies to the iterative methods
(aihf, rlhf, self-play-aihf, spin), `max_steps` to the others; a method given only the other
limit uses it instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.lm.config import CONFIGS, build_config, load_yaml
from aihf.lm.data import TextData, prepare_text_data
from aihf.lm.modeling import RewardFn, check_model_source, load_causal_lm, load_reward_model, load_tokenizer

TRAINERS = tuple(CONFIGS)
ITERATIVE = ("aihf", "rlhf", "self-play-aihf", "spin")

# Data each trainer needs (required) and can use (optional).
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "aihf": ((), ("demos", "prefs", "prompts")),
    "rlhf": ((), ("prefs", "prompts", "demos")),
    "direct-aihf": (("prefs",), ("demos",)),
    "dpo": (("prefs",), ()),
    "ipo": (("prefs",), ()),
    "self-play-aihf": (("demos",), ("prefs",)),
    "spin": (("demos",), ()),
    "sft": (("demos",), ()),
    "reward": (("prefs",), ()),
}


def run_training(
    trainer: str,
    model: str | None,
    out: str,
    reward_model: str | None = None,
    demos: str | list[dict] | None = None,
    prefs: str | list[dict] | None = None,
    prompts: str | list[dict] | None = None,
    max_iterations: int | None = None,
    max_steps: int | None = None,
    config: dict[str, Any] | str | None = None,
    reward_fn: RewardFn | None = None,
) -> dict[str, float]:
    """Train `trainer` and write OUT/policy (and OUT/reward_model), OUT/metrics.jsonl; return final metrics.

    `config` is a dict or a YAML path of the trainer's config fields; it may also name the run's
    `model`, `reward_model`, `demos`, `prefs` and `prompts` (Hub names, `name:split[slice]`, or paths).
    Explicit arguments override it. `reward_fn` (aihf / rlhf only) replaces the reward model by a
    frozen Python reward.
    """
    if trainer not in CONFIGS:
        raise InputError(f"unknown trainer {trainer!r}: expected one of {', '.join(TRAINERS)}")
    where = str(config) if isinstance(config, (str, Path)) else "config"
    values = load_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    model = model or values.get("model")
    reward_model = reward_model or values.get("reward_model")
    required, optional = NEEDS[trainer]
    explicit = {"demos": demos, "prefs": prefs, "prompts": prompts}
    unused = [f"--{k}" for k, v in explicit.items() if v is not None and k not in required + optional]
    if unused:
        raise InputError(f"{trainer}: does not use {', '.join(unused)}")
    # Data named in the config fills what the call leaves out; a config shared by several trainers
    # (e.g. direct-aihf and dpo) may name data that this trainer does not use.
    data_args = {
        k: v if v is not None else (values.get(k) if k in required + optional else None)
        for k, v in explicit.items()
    }
    if not model:
        raise InputError(f"{trainer}: needs --model (or `model:` in the config)")
    limits: dict[str, int | None] = {}
    if trainer in ITERATIVE:
        limits["max_iterations"] = max_iterations if max_iterations is not None else max_steps
    else:
        limits["max_steps"] = max_steps if max_steps is not None else max_iterations
    cfg = build_config(trainer, values, where, output_dir=str(out), **limits)

    for name in required:
        if data_args[name] is None:
            raise InputError(f"{trainer}: needs --{name}")
    needs_reward = trainer in ("aihf", "rlhf") and reward_fn is None
    if needs_reward and reward_model is None:
        raise InputError(f"{trainer}: needs --reward-model (a one-label sequence classifier to start from)")
    from transformers import SchedulerType

    if cfg.lr_scheduler_type not in {s.value for s in SchedulerType}:
        names = ", ".join(s.value for s in SchedulerType)
        raise InputError(
            f"{where}: field 'lr_scheduler_type' = {cfg.lr_scheduler_type!r}: expected one of {names}"
        )
    _check_data_for_config(trainer, cfg, data_args, reward_fn)
    from aihf.lm.runtime import resolve_resume

    resolve_resume(Path(out), cfg.resume_from_checkpoint)  # a missing or damaged checkpoint stops here
    check_model_source(model, "--model")  # before any data or weights load (and print progress bars)
    if reward_model is not None:
        check_model_source(reward_model, "--reward-model")

    tokenizer = load_tokenizer(model)
    if cfg.chat_template:
        template = Path(cfg.chat_template)
        tokenizer.chat_template = template.read_text() if template.is_file() else cfg.chat_template
    loaded: dict[str, TextData | None] = {
        name: prepare_text_data(source, name, tokenizer, cfg.max_length, cfg.overlong)
        if source is not None
        else None
        for name, source in data_args.items()
    }
    sources = {"model": model, "reward_model": reward_model} | {
        k: (v if isinstance(v, str) else f"<{len(v)} rows>") for k, v in data_args.items() if v is not None
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    if not cfg.resume_from_checkpoint:  # a fresh run into an old directory starts a fresh log
        (Path(out) / "metrics.jsonl").unlink(missing_ok=True)
    return _dispatch(trainer, cfg, model, tokenizer, reward_model, loaded, sources, reward_fn)


def _check_data_for_config(trainer: str, cfg: Any, data: dict[str, Any], reward_fn: RewardFn | None) -> None:
    """What the trainers would refuse after loading their models, refused before anything loads."""
    has = {name: value is not None for name, value in data.items()}
    if trainer == "direct-aihf" and cfg.alpha > 0 and not has["demos"]:
        raise InputError("direct-aihf: alpha > 0 needs demonstrations (--demos); use alpha: 0 for DPO")
    learns_reward = trainer == "aihf" and reward_fn is None and cfg.reward_steps_per_iteration > 0
    if learns_reward and not (cfg.alpha > 0 and has["demos"]) and not has["prefs"]:
        raise InputError(f"{trainer}: learning the reward needs demonstrations (alpha > 0) or preferences")
    if trainer in ("aihf", "rlhf") and not any(has.values()):
        raise InputError(f"{trainer}: the policy step needs prompts (--prompts, --demos or --prefs)")
    if getattr(cfg, "use_vllm", False):
        from trl.import_utils import is_vllm_available

        if not is_vllm_available():
            raise InputError("use_vllm: vLLM is not installed (pip install vllm), or set use_vllm: false")


def _dispatch(
    trainer: str,
    cfg: Any,
    model: str,
    tokenizer: Any,
    reward_model: str | None,
    data: dict[str, TextData | None],
    sources: dict[str, str | None],
    reward_fn: RewardFn | None,
) -> dict[str, float]:
    from aihf.lm import baselines

    if trainer == "sft":
        return baselines.run_sft(load_causal_lm(model), tokenizer, cfg, data["demos"], sources)
    if trainer == "reward":
        path = reward_model or model
        rm_tokenizer = load_tokenizer(path)
        return baselines.run_reward(load_reward_model(path), rm_tokenizer, cfg, data["prefs"], sources)
    if trainer in ("dpo", "ipo"):
        loss_type = "ipo" if trainer == "ipo" else cfg.loss_type
        return baselines.run_dpo(load_causal_lm(model), tokenizer, cfg, data["prefs"], sources, loss_type)
    if trainer == "direct-aihf":
        from aihf.lm.direct import DirectAIHFTrainer

        policy = load_causal_lm(model)
        return DirectAIHFTrainer(
            policy, tokenizer, cfg, prefs=data["prefs"], demos=data["demos"], sources=sources
        ).train()
    if trainer in ("self-play-aihf", "spin"):
        from aihf.lm.direct import SelfPlayAIHFTrainer

        policy = load_causal_lm(model)
        prefs = data["prefs"] if trainer == "self-play-aihf" else None
        return SelfPlayAIHFTrainer(
            policy, tokenizer, cfg, demos=data["demos"], prefs=prefs, sources=sources, method=trainer
        ).train()
    return _run_aihf_or_rlhf(trainer, cfg, model, tokenizer, reward_model, data, sources, reward_fn)


def _run_aihf_or_rlhf(
    trainer: str,
    cfg: Any,
    model: str,
    tokenizer: Any,
    reward_model: str | None,
    data: dict[str, TextData | None],
    sources: dict[str, str | None],
    reward_fn: RewardFn | None,
) -> dict[str, float]:
    """AIHF learns the reward during RL; RLHF fits a BTL reward first (TRL) and keeps it frozen."""
    import dataclasses

    from aihf.lm.aihf_trainer import AIHFTrainer

    rm = rm_tokenizer = None
    metrics: dict[str, float] = {}
    if trainer == "rlhf" and cfg.sft_steps > 0:  # SFT -> reward model -> RL
        from aihf.lm import baselines

        if data["demos"] is None:
            raise InputError("rlhf: sft_steps > 0 needs demonstrations (--demos)")
        sft_cfg = dataclasses.replace(
            cfg, max_steps=cfg.sft_steps, output_dir=str(Path(cfg.output_dir) / "sft")
        )
        metrics |= {
            f"sft/{k}": v
            for k, v in baselines.run_sft(
                load_causal_lm(model), tokenizer, sft_cfg, data["demos"], sources
            ).items()
        }
        model = str(Path(cfg.output_dir) / "sft" / "policy")
    if reward_fn is None:
        rm_tokenizer = load_tokenizer(reward_model)
        rm = load_reward_model(reward_model)
    if trainer == "rlhf" and reward_fn is None and data["prefs"] is not None:
        from aihf.lm import baselines

        steps = cfg.reward_warmup_steps or cfg.max_iterations
        rm_cfg = dataclasses.replace(
            cfg, max_steps=steps, learning_rate=cfg.reward_learning_rate or cfg.learning_rate
        )
        reward_metrics = baselines.run_reward(rm, rm_tokenizer, rm_cfg, data["prefs"], sources)
        metrics |= {f"reward_stage/{k}": v for k, v in reward_metrics.items()}
        rm = load_reward_model(str(Path(cfg.output_dir) / "reward_model"))
    demos = data["demos"] if trainer == "aihf" else None
    prefs = data["prefs"] if trainer == "aihf" else None
    prompts = data["prompts"]
    if trainer == "rlhf" and prompts is None:  # RL prompts default to every prompt we have
        rows = [
            {"prompt": r["prompt"]} for d in (data["demos"], data["prefs"]) if d is not None for r in d.rows
        ]
        prompts = TextData(kind="prompts", source="<demos+prefs prompts>", rows=rows) if rows else None
    result = AIHFTrainer(
        load_causal_lm(model),
        tokenizer,
        cfg,
        reward_model=rm,
        reward_tokenizer=rm_tokenizer,
        reward_fn=reward_fn,
        demos=demos,
        prefs=prefs,
        prompts=prompts,
        train_reward=trainer == "aihf",
        method=trainer,
        sources=sources,
    ).train()
    return metrics | result
