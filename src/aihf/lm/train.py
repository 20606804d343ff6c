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
from aihf.flags import canonical
from aihf.lm.config import RENAMES, load_yaml
from aihf.lm.data import TextData, prepare_text_data
from aihf.lm.methods import MODEL_KEY, RunInputs, build_config, get_method
from aihf.lm.modeling import RewardFn, check_model_source, load_tokenizer


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
    overrides: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train `trainer` and write OUT/policy (and OUT/reward_model), OUT/metrics.jsonl; return final metrics.

    `config` is a dict or a YAML path of the trainer's config fields; it may also name the run's
    `model`, `reward_model`, `demos`, `prefs` and `prompts` (Hub names, `name:split[slice]`, or paths).
    Explicit arguments, then `overrides` (config fields, e.g. the flags given), override it.
    `reward_fn` (aihf / rlhf only) replaces the reward model by a frozen Python reward.
    """
    method = get_method(trainer)
    where = str(config) if isinstance(config, (str, Path)) else "config"
    values = load_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    values = canonical(values, RENAMES, where)  # old key names still read, with a deprecation line
    model = model or values.get(MODEL_KEY)
    reward_model = reward_model or values.get("reward_model")
    required, optional = method.required, method.optional
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
        raise InputError(f"{trainer}: needs --{MODEL_KEY} (or `{MODEL_KEY}:` in the config)")
    limits: dict[str, int | None] = {}
    if method.iterative:
        limits["max_iterations"] = max_iterations if max_iterations is not None else max_steps
    else:
        limits["max_steps"] = max_steps if max_steps is not None else max_iterations
    cfg = build_config(trainer, values, where, **(overrides or {}), output_dir=str(out), **limits)

    for name in required:
        if data_args[name] is None:
            raise InputError(f"{trainer}: needs --{name}")
    if method.needs_reward_model and reward_fn is None and reward_model is None:
        raise InputError(f"{trainer}: needs --reward-model (a one-label sequence classifier to start from)")
    if reward_fn is not None and not method.needs_reward_model:
        raise InputError(f"{trainer}: does not take a reward function")
    from transformers import SchedulerType

    if cfg.lr_scheduler_type not in {s.value for s in SchedulerType}:
        names = ", ".join(s.value for s in SchedulerType)
        raise InputError(
            f"{where}: field 'lr_scheduler_type' = {cfg.lr_scheduler_type!r}: expected one of {names}"
        )
    if method.check is not None:  # the method's own demands on the data, before anything loads
        given = {name: value is not None for name, value in data_args.items()}
        method.check(cfg, given, reward_fn is not None)
    if getattr(cfg, "use_vllm", False):
        from trl.import_utils import is_vllm_available

        if not is_vllm_available():
            raise InputError("use_vllm: vLLM is not installed (pip install vllm), or set use_vllm: false")
    from aihf.lm.runtime import resolve_resume

    if not method.staged:  # a staged method (RLHF) resumes stage by stage and checks its checkpoints
        resolve_resume(Path(out), cfg.resume_from_checkpoint)  # a missing or damaged one stops here
    check_model_source(model, f"--{MODEL_KEY}")  # before any data or weights load (and print progress bars)
    starts_from_reward = method.needs_reward_model or "reward_model" in method.outputs
    if reward_model is not None and reward_fn is None and starts_from_reward:
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
    return method.run(RunInputs(cfg, model, tokenizer, reward_model, loaded, sources, reward_fn))
