"""`run_training`: one entry point for every LM trainer (what `aihf lm train` calls).

Everything is loaded and validated before any training starts, so bad data or a bad config stops
the run with an `InputError` at once. Limits: `max_iterations` applies to the iterative methods
(aihf, rlhf, self-play-aihf, spin), `max_steps` to the others; a method given only the other
limit uses it instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aihf.errors import InputError
from aihf.flags import canonical
from aihf.lm.config import RENAMES, load_yaml
from aihf.lm.data import TextData, prepare_text_data
from aihf.lm.methods import MODEL_KEY, Method, RunInputs, build_config, get_method
from aihf.lm.modeling import RewardFn, check_model_source, load_tokenizer

if TYPE_CHECKING:  # torch loads only when a method runs
    from aihf.lm.loop import EvalData

logger = logging.getLogger(__name__)


def run_training(
    trainer: str,
    model: str | None,
    out: str,
    reward_model: str | None = None,
    demos: str | list[dict] | None = None,
    prefs: str | list[dict] | None = None,
    prompts: str | list[dict] | None = None,
    eval_prefs: str | list[dict] | None = None,
    eval_prompts: str | list[dict] | None = None,
    max_iterations: int | None = None,
    max_steps: int | None = None,
    config: dict[str, Any] | str | None = None,
    reward_fn: RewardFn | None = None,
    command: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train `trainer` and write OUT/policy (and OUT/reward_model), OUT/metrics.jsonl; return final metrics.

    `config` is a dict or a YAML path of the trainer's config fields; it may also name the run's
    `model_name_or_path`, `reward_model`, `demos`, `prefs`, `prompts`, `eval_prefs` and `eval_prompts`
    (Hub names, `name:split[slice]`, or paths). Explicit arguments, then `overrides` (config fields, e.g.
    the flags given), override it. `reward_fn` (aihf / rlhf only) replaces the reward model by a frozen
    Python reward. `eval_prefs` / `eval_prompts` are held-out data for evaluation during training
    (`eval_strategy: steps`, see `LMConfig`). `command` (the aihf command line that asked for the run)
    goes into the model cards. With `push_to_hub`, the saved models are uploaded at the end (main process).
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
    held_out = {"eval_prefs": eval_prefs, "eval_prompts": eval_prompts}
    held_out = {k: v if v is not None else values.get(k) for k, v in held_out.items()}
    _check_evaluation(method, cfg, held_out, data_args)

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
        from aihf.lm.vllm_sampling import require_vllm

        require_vllm()  # before anything loads
    from aihf.lm.runtime import resolve_resume

    if not method.staged:  # a staged method (RLHF) resumes stage by stage and checks its checkpoints
        resolve_resume(Path(out), cfg.resume_from_checkpoint)  # a missing or damaged one stops here
    check_model_source(model, f"--{MODEL_KEY}")  # before any data or weights load (and print progress bars)
    check_batch_memory(cfg, model, where)
    starts_from_reward = method.needs_reward_model or "reward_model" in method.outputs
    if reward_model is not None and reward_fn is None and starts_from_reward:
        check_model_source(reward_model, "--reward-model")

    tokenizer = load_tokenizer(model)
    if cfg.chat_template:
        template = Path(cfg.chat_template)
        tokenizer.chat_template = template.read_text() if template.is_file() else cfg.chat_template
    loaded: dict[str, TextData | None] = {
        name: prepare_text_data(
            source, name, tokenizer, cfg.max_length, cfg.overlong, num_proc=cfg.dataset_num_proc
        )
        if source is not None
        else None
        for name, source in data_args.items()
    }
    evaluation = _evaluation(cfg, held_out, loaded, tokenizer) if cfg.eval_strategy == "steps" else None
    data_args |= held_out
    sources = {"model": model, "reward_model": reward_model, "command": command} | {
        k: (v if isinstance(v, str) else f"<{len(v)} rows>") for k, v in data_args.items() if v is not None
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    if not cfg.resume_from_checkpoint:  # a fresh run into an old directory starts a fresh log
        (Path(out) / "metrics.jsonl").unlink(missing_ok=True)
    metrics = method.run(
        RunInputs(cfg, model, tokenizer, reward_model, loaded, sources, reward_fn, evaluation)
    )
    if cfg.push_to_hub and int(os.environ.get("RANK", "0")) == 0:
        _push_outputs(Path(out), method.outputs, cfg.hub_model_id, trainer)
    return metrics


def _check_evaluation(method: Method, cfg: Any, held_out: dict[str, Any], data: dict[str, Any]) -> None:
    """What evaluation during training needs, before anything loads: something to measure, and a
    method that has it (a reward for --eval-prefs, a policy for eval_gold) and prompts for the gold."""
    name = method.name
    if cfg.eval_strategy == "no":
        given = [f"--{k.replace('_', '-')}" for k, v in held_out.items() if v is not None]
        if given or cfg.eval_gold is not None:
            what = ", ".join(given + ["eval_gold"] * (cfg.eval_gold is not None))
            logger.warning(f"{name}: {what} given but eval_strategy is 'no': no evaluation during training")
        return
    if held_out["eval_prefs"] is None and cfg.eval_gold is None:
        raise InputError(
            f"{name}: eval_strategy 'steps' needs --eval-prefs (the reward's held-out accuracy) or eval_gold "
            "(a gold reward for the policy's samples)"
        )
    if held_out["eval_prefs"] is not None and not method.scores_prefs:
        raise InputError(f"{name}: learns no reward, so --eval-prefs does not apply (eval_gold does)")
    if cfg.eval_gold is not None and "policy" not in method.outputs:
        raise InputError(f"{name}: trains no policy, so eval_gold does not apply (--eval-prefs does)")
    prompt_sources = (held_out["eval_prompts"], held_out["eval_prefs"], data.get("prompts"))
    if cfg.eval_gold is not None and all(source is None for source in prompt_sources):
        raise InputError(f"{name}: eval_gold needs prompts: --eval-prompts (or --eval-prefs, or --prompts)")


def _evaluation(cfg: Any, held_out: dict[str, Any], loaded: dict[str, Any], tokenizer: Any) -> EvalData:
    """The held-out data (validated like the training data) and the gold reward of evaluation during
    training; the gold's prompts are --eval-prompts, else those of --eval-prefs, else --prompts."""
    from aihf.lm.gold import load_gold_reward
    from aihf.lm.loop import EvalData

    data = {
        name: prepare_text_data(
            source, kind, tokenizer, cfg.max_length, cfg.overlong, num_proc=cfg.dataset_num_proc
        )
        for (name, kind), source in zip(
            (("eval_prefs", "prefs"), ("eval_prompts", "prompts")), held_out.values()
        )
        if source is not None
    }
    prompts: list[str] = []
    for source in (data.get("eval_prompts"), data.get("eval_prefs"), loaded.get("prompts")):
        if source is not None:
            prompts = list(dict.fromkeys(source.column("prompt")))  # each prompt once, in order
            break
    gold = load_gold_reward(cfg.eval_gold) if cfg.eval_gold is not None else None
    return EvalData(prefs=data.get("eval_prefs"), prompts=prompts, gold=gold)


def _push_outputs(out: Path, outputs: tuple[str, ...], repo_id: str, method: str) -> None:
    """Upload the run's saved models: the first (the policy, or a lone reward model) to `repo_id`, a
    second (a reward model beside the policy) to `repo_id`-reward."""
    from aihf.lm.runtime import push_to_hub

    for output in outputs:
        target = repo_id if output == outputs[0] else f"{repo_id}-reward"
        print(f"pushed {out / output} to {push_to_hub(out / output, target, method)}")


# What one drawn row index costs in the optimiser step's row list: a Python int and its list slot.
ROW_INDEX_BYTES = 36


def check_batch_memory(cfg: Any, model: str, where: str) -> None:
    """Refuse, before anything loads, a batch that cannot fit in memory (`safety.check_memory`).

    Two rough lower bounds: the float32 logits of one micro-batch of full-length sequences
    (rows x max_length x vocab_size x 4 bytes, rows the largest of per_device_train_batch_size,
    reward_batch_size and prompt_batch_size x num_generations; the model, its activations and the
    optimiser come on top), and the row indices drawn for one optimiser step
    (per_device_train_batch_size x gradient_accumulation_steps x 36 bytes).
    """
    import torch

    from aihf.safety import check_memory

    cuda = torch.cuda.is_available()
    batch = cfg.per_device_train_batch_size
    accumulation = (
        f"per_device_train_batch_size {batch} x gradient_accumulation_steps {cfg.gradient_accumulation_steps}"
    )
    vocab = _vocab_size(model)
    sizes = {
        "per_device_train_batch_size": batch,
        "reward_batch_size": getattr(cfg, "reward_batch_size", None) or batch,
    }
    if hasattr(cfg, "prompt_batch_size"):
        sizes["prompt_batch_size x num_generations"] = cfg.prompt_batch_size * cfg.num_generations
    name, rows = max(sizes.items(), key=lambda item: item[1])
    if vocab is not None:
        check_memory(
            rows * cfg.max_length * vocab * 4,
            f"{where}: {name} {rows} x max_length {cfg.max_length} x vocab {vocab} x 4 bytes of logits per "
            "micro-batch",
            f"lower {name.split()[0]} (and raise gradient_accumulation_steps) or max_length",
            cuda,
        )
    check_memory(
        batch * cfg.gradient_accumulation_steps * ROW_INDEX_BYTES,
        f"{where}: {accumulation} rows drawn per optimiser step x {ROW_INDEX_BYTES} bytes",
        "lower gradient_accumulation_steps or per_device_train_batch_size",
    )


def _vocab_size(model: str) -> int | None:
    """The model's vocabulary size from its config alone (no weights load); None when it has none."""
    from transformers import AutoConfig

    from aihf.safety import hub_offline

    try:
        with hub_offline():
            vocab = getattr(AutoConfig.from_pretrained(model), "vocab_size", None)
    except (OSError, ValueError):  # no readable config: the model's own load names the problem
        return None
    return vocab if isinstance(vocab, int) and vocab > 0 else None
