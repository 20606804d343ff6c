"""`aihf lm bench | pretrain | generate-data | data-variants`: the offline sentiment benchmark from
the shell.

`register(lm_subparsers)` adds the four subcommands to the `aihf lm` group (`aihf.lm.cli` calls it
only when this package is there); heavy imports stay inside the handlers so `aihf --help` stays fast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from aihf.errors import InputError, RunFailed
from aihf.experiments.queue import parse_shard


def register(lm_subparsers: argparse._SubParsersAction) -> None:
    p = lm_subparsers.add_parser("bench", help="train every method on the shipped data and compare them")
    p.add_argument("--out", required=True, help="output directory (report.md, results.json, PNG plots)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="one seed, short runs (3.5 min on 2 CPU cores); without it the full benchmark runs "
        "(3 seeds, longer runs, data-size sweeps and the KL frontier: 126 runs, 1 hour on 2 CPU cores)",
    )
    p.add_argument(
        "--preset",
        choices=["tiny", "smollm2"],
        default="tiny",
        help="tiny (default): the 1M-parameter replica on its shipped data; smollm2: SmolLM2-135M-Instruct "
        "with LoRA on the shipped chat data, gold fluent-sentiment (docs/lm_bench_smollm2.md; converts the "
        "model with `aihf lm get-model` first); --quick is then a smoke run of that path. Each is a "
        "protocol file in configs/protocols/ (lm_tiny.yaml, lm_smollm2.yaml)",
    )
    p.add_argument(
        "--protocol",
        metavar="FILE",
        help="a protocol file (the fields of configs/protocols/lm_*.yaml) instead of --preset",
    )
    p.add_argument("--methods", nargs="+", help="subset of methods (default: the preset's)")
    p.add_argument("--seeds", nargs="+", type=int, help="override the seeds")
    p.add_argument(
        "--diagnostic-methods",
        nargs="*",
        help="methods run after the main runs at the sweep seeds, marked in the report and kept out of "
        "the verdict (default: the preset's; none to run none)",
    )
    p.add_argument("--n-test", type=int, help="number of test prompts")
    p.add_argument("--pref-sizes", nargs="+", type=int, help="sweep: preference pairs (demonstrations fixed)")
    p.add_argument("--demo-sizes", nargs="+", type=int, help="sweep: demonstrations (preference pairs fixed)")
    p.add_argument("--kl-scales", nargs="+", type=float, help="frontier: each method's beta times these")
    p.add_argument(
        "--workers",
        default="auto",
        help="processes of one thread each that share the runs; auto (default): one per idle CPU core "
        "(the load average subtracted), at most 4, or 1 on a GPU",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run every N-th job from the I-th (0-based) only, e.g. 0/2 and 1/2 in two processes; "
        "a final call without --shard reuses their runs and writes the report",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="MINUTES",
        help="start no job expected to end later than MINUTES from now (its expected length: the "
        "longest finished run of its method here or in --records; a method with none finished starts "
        "while time is left), so that a session or batch slot ending then cuts no job short; the "
        "jobs left over are listed for the next call",
    )
    p.add_argument("--sweep-seeds", nargs="+", type=int, help="seeds of the sweep runs (default: --seeds)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the report from the jobs finished so far (the others read 'not run')",
    )
    p.add_argument(
        "--override",
        nargs="+",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="trainer config of one method, e.g. aihf.reward_steps_per_iteration=3 (YAML values)",
    )
    p.add_argument(
        "--records",
        metavar="DIR",
        help="finished jobs' records from an earlier machine (the NAME.json files a report writes to "
        "OUT/records/, e.g. committed beside the results): those jobs are reused, not rerun",
    )
    p.add_argument("--gold", help="gold reward: vader, module:function or a classifier path[#label]")
    p.add_argument(
        "--data-dir",
        help="generated data directory, or a shipped one by key (smollm2, smollm2-v2, smollm2-v2/scarce, "
        "/noisy, /partial; default: the protocol's)",
    )
    p.add_argument("--base-model", help="base policy directory (default: the shipped one)")
    p.set_defaults(handler=_bench, claims_jobs=True)

    p = lm_subparsers.add_parser(
        "pretrain", help="pretrain the benchmark's base policy on the shipped corpus"
    )
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--steps", type=int, help="optimiser steps (default: 1000)")
    p.add_argument("--build-corpus", action="store_true", help="first rebuild the corpus from fortune files")
    p.add_argument("--fortune-dir", default="/usr/share/games/fortunes", help="Debian `fortunes` data files")
    p.set_defaults(handler=_pretrain)

    p = lm_subparsers.add_parser("generate-data", help="gold-reward RL, checkpoints, bucketed demos/prefs")
    p.add_argument(
        "--out", required=True, help="directory for demos/prefs/prompts JSONL and the quality table"
    )
    p.add_argument("--base-model", help="base policy (default: the shipped one)")
    p.add_argument("--gold", default="vader", help="gold reward spec (default: %(default)s)")
    p.add_argument(
        "--preset",
        choices=["tiny", "smollm2", "smollm2-v2"],
        default="tiny",
        help="settings: tiny (the shipped 1M-parameter replica, raw prompts), smollm2 (a chat model: "
        "instruction-wrapped prompts, LoRA, bf16, 32-token completions; see datagen.PRESETS) or "
        "smollm2-v2 (smollm2 with the assistant's turn started with the text)",
    )
    p.add_argument("--rl-steps", type=int, help="GRPO steps on the gold reward")
    p.add_argument("--save-every", type=int, help="checkpoint interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--work-dir",
        help="gold-RL checkpoints (default: OUT/gold_rl); a finished run there is reused, not repeated",
    )
    p.set_defaults(handler=_generate)

    p = lm_subparsers.add_parser(
        "data-variants", help="the scarce, noisy and partial-coverage variants of a generated data set"
    )
    p.add_argument("--data", required=True, help="a data directory of `aihf lm generate-data`")
    p.add_argument("--out", required=True, help="writes OUT/scarce, OUT/noisy and OUT/partial")
    p.add_argument("--seed", type=int, default=0, help="which rows flip and how types split (default: 0)")
    p.set_defaults(handler=_variants)


def _bench(args: argparse.Namespace) -> int:
    from aihf.lm.bench.bench import BenchConfig, read_bench_protocol, run_bench
    from aihf.validation import POSITIVE, check_value

    if args.protocol:
        cfg = read_bench_protocol(args.protocol, quick=args.quick)
    else:
        cfg = BenchConfig.preset(args.preset, quick=args.quick)
    cfg.overrides = _parse_overrides(args.override)
    names = ("methods", "seeds", "n_test", "pref_sizes", "demo_sizes", "kl_scales", "sweep_seeds")
    names += ("diagnostic_methods",)
    for name in (*names, "gold", "data_dir", "base_model", "records"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.data_dir is not None:  # a shipped data set by its key, as in a protocol file
        from aihf.lm.bench.bench import SHIPPED_DATA

        cfg.data_dir = str(SHIPPED_DATA.get(args.data_dir, args.data_dir))
    if args.shard:
        if args.report_only:
            raise InputError("--report-only writes the report of every shard: leave out --shard")
        cfg.shard = parse_shard(args.shard)
    deadline = None
    if args.time_limit is not None:
        if args.report_only:
            raise InputError("--time-limit limits training, and --report-only trains nothing: leave one out")
        deadline = time.time() + 60 * check_value("--time-limit", args.time_limit, float, POSITIVE)
    _check_bench(cfg)
    workers = _parse_workers(args.workers)
    result = run_bench(args.out, cfg, workers=workers, report_only=args.report_only, deadline=deadline)
    if result["postponed"]:
        left = result["postponed"]
        print(f"{len(left)} job(s) left for a later call (--time-limit): {', '.join(left)}")
    failed = result["failed"]
    if failed:
        where = Path(args.out) / "runs"
        raise RunFailed(
            f"{len(failed)} bench job(s) failed: {', '.join(failed)} (tracebacks in {where}/JOB/eval.json)"
        )
    if cfg.shard:
        print(f"shard {args.shard} done; run again without --shard to write the report")
    else:
        print(f"report written to {Path(args.out) / 'report.md'}")
    return 0


def _check_bench(cfg: Any) -> None:
    """Every option and every job's trainer config (with its --override) checked before any run starts."""
    from aihf.lm.bench.bench import check_pending, method_config, trainer_values
    from aihf.lm.methods import VARIANTS, build_config
    from aihf.lm.modeling import check_model_source
    from aihf.validation import AT_LEAST_1, POSITIVE, SEED, check_value

    checked = [("--methods", cfg.methods), ("--diagnostic-methods", cfg.diagnostic_methods)]
    for name, values in (*checked, ("--override", list(cfg.overrides))):
        unknown = sorted(set(values) - set(VARIANTS) - set(cfg.variants))
        if unknown:
            known = ", ".join([*VARIANTS, *cfg.variants])
            raise InputError(f"{name}: unknown methods {unknown}: expected some of {known}")
    check_value("--n-test", cfg.n_test, int, AT_LEAST_1)
    for flag, values, limits in (
        ("--seeds", cfg.seeds, SEED),
        ("--sweep-seeds", cfg.sweep_seeds or [], SEED),
        ("--pref-sizes", cfg.pref_sizes, AT_LEAST_1),
        ("--demo-sizes", cfg.demo_sizes, AT_LEAST_1),
    ):
        check_value(flag, values, list[int], limits)
    check_value("--kl-scales", cfg.kl_scales, list[float], POSITIVE)
    check_pending(cfg)
    check_model_source(cfg.base_model, "--base-model")
    if cfg.records is not None and not Path(cfg.records).is_dir():
        raise InputError(f"--records {cfg.records}: not a directory (expected the job records, NAME.json)")
    for job in cfg.jobs():
        trainer, _, values = method_config(job.method, cfg, job.seed, job.get("kl_scale"))
        values = trainer_values(cfg, job.method, values)
        build_config(trainer, values, f"{job.method} config (with --override)")


def _parse_workers(text: str) -> int:
    from aihf.lm.bench.bench import default_workers

    if text == "auto":
        return default_workers()
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"--workers {text!r}: expected auto or a whole number >= 1")
    return int(text)


def _parse_overrides(items: list[str]) -> dict[str, dict]:
    import yaml

    overrides: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise InputError(f"--override {item!r}: expected METHOD.KEY=VALUE, e.g. aihf.beta=0.1")
        overrides.setdefault(method, {})[name] = yaml.safe_load(value)
    return overrides


def _pretrain(args: argparse.Namespace) -> int:
    from aihf.lm.bench import corpus
    from aihf.lm.bench.pretrain import PretrainConfig, pretrain

    if args.build_corpus:
        corpus.write_corpus(corpus.build_corpus(corpus.read_cookies(args.fortune_dir)))
    from aihf.validation import AT_LEAST_1, check_value

    cfg = PretrainConfig()
    if args.steps is not None:
        cfg.steps = check_value("--steps", args.steps, int, AT_LEAST_1)
    pretrain(args.out, cfg)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from aihf.lm.bench.datagen import PRESETS, DataGenConfig, generate_data
    from aihf.lm.bench.pretrain import BASE_MODEL_DIR
    from aihf.lm.gold import load_gold_reward
    from aihf.lm.modeling import check_model_source
    from aihf.validation import AT_LEAST_1, SEED, check_value

    cfg = DataGenConfig(**PRESETS[args.preset], seed=check_value("--seed", args.seed, int, SEED))
    if args.rl_steps is not None:
        cfg.rl_steps = check_value("--rl-steps", args.rl_steps, int, AT_LEAST_1)
    if args.save_every is not None:
        cfg.save_every = check_value("--save-every", args.save_every, int, AT_LEAST_1)
    if args.base_model:
        check_model_source(args.base_model, "--base-model")
    base, gold = args.base_model or BASE_MODEL_DIR, load_gold_reward(args.gold)
    generate_data(args.out, base, gold, cfg, work_dir=args.work_dir)
    return 0


def _variants(args: argparse.Namespace) -> int:
    from aihf.lm.bench.variants import build_variants
    from aihf.validation import SEED, check_value

    summary = build_variants(args.data, args.out, check_value("--seed", args.seed, int, SEED))
    for name, info in summary.items():
        print(f"{name}: {'; '.join(info['changed'].values())} ({args.out}/{name})")
    return 0
