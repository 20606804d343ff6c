"""`aihf control {train,collect,pairs,bench,protocol}`: AIHF and its baselines with SAC on gymnasium.

Only argparse work happens at import time; torch / stable-baselines3 load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aihf.control.config import ALGOS, BACKENDS, RANGES, RENAMES, AIHFControlConfig
from aihf.errors import InputError, RunFailed
from aihf.flags import add_field_flags
from aihf.safety import refuse_out_over_input

# Extra spellings of field flags (the earlier short names, still read without a warning).
_ALIASES = {"env_id": ["--env"], "reward_updates_per_iter": ["--reward-updates"]}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("control", help="AIHF with SAC on gymnasium / MuJoCo environments")
    sub = parser.add_subparsers(dest="control_command", required=True)

    train = sub.add_parser(
        "train",
        usage="aihf control train [--config FILE] [--FIELD VALUE ...] [--out DIR | --resume DIR]",
        help="train one algorithm; writes results.json and curve.csv",
        description="Every AIHFControlConfig field is a flag (--field_name or --field-name; SB3 / RL Zoo "
        "names where they mean the same): defaults < the environment's preset "
        "(aihf.control.config.PRESETS, e.g. a small budget for Pendulum-v1) < --config < flags.",
    )
    train.add_argument("--config", help="YAML file of AIHFControlConfig options (flags override it)")
    add_field_flags(train, [AIHFControlConfig], RANGES, RENAMES, aliases=_ALIASES)
    train.add_argument(
        "--demos", help="demonstrations .npz, or minari:DATASET_ID (default: the data shipped for --env)"
    )
    train.add_argument("--prefs", help="preferences .npz (default: the data shipped for --env)")
    train.add_argument("--out", help="output directory")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into an --out that holds a finished or interrupted run (its checkpoint is deleted)",
    )
    train.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run whose checkpoint is in DIR, with its saved settings and data (a larger "
        "--n_timesteps extends it, finished or not)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    collect = sub.add_parser("collect", help="expert-data pipeline: SAC checkpoints -> demos.npz, prefs.npz")
    collect.add_argument("--env", default="Pendulum-v1")
    collect.add_argument("--out", required=True)
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--expert-steps", type=int, default=12_000, help="SAC steps of the expert run")
    collect.add_argument("--checkpoint-every", type=int, default=1000)
    collect.add_argument("--episodes-per-checkpoint", type=int, default=5)
    collect.add_argument("--max-demos", type=int, default=0, help="at most this many demonstrations (0: all)")
    collect.add_argument("--rollout-from", type=int, default=0, help="roll out checkpoints from this step on")
    collect.add_argument("--backend", choices=BACKENDS, default="sb3", help="SAC implementation")
    collect.add_argument(
        "--sac-hidden", type=int, nargs="+", default=[64, 64], help="expert network widths (e.g. 256 256)"
    )
    collect.add_argument("--learning-starts", type=int, default=1000)
    collect.add_argument("--num-preferences", type=int, default=500)
    collect.add_argument("--segment-length", type=int, default=50, help="0: whole trajectories")
    collect.add_argument("--label-mode", choices=("deterministic", "bradley-terry"), default="deterministic")
    collect.add_argument("--temperature", type=float, default=1.0, help="Bradley-Terry label temperature")
    collect.set_defaults(handler=_collect)

    pairs = sub.add_parser(
        "pairs",
        help="whole-trajectory preferences at the paper's gaps from a collected pool (falls included)",
        description="Pairs whole trajectories of the pool (e.g. a collected prefs.npz) from the window of "
        "returns whose non-preferred / preferred sides come closest to --targets x the demonstrations' "
        "mean return; writes demos.npz, prefs.npz and table1.{json,md} (returns, falls, n per set).",
    )
    pairs.add_argument("--pool", nargs="+", required=True, help="trajectory or preference .npz files")
    pairs.add_argument("--demos", required=True, help="the demonstrations .npz")
    pairs.add_argument("--out", required=True)
    pairs.add_argument("--num-preferences", type=int, default=0, help="0: every distinct pair of the window")
    pairs.add_argument(
        "--targets", type=float, nargs=2, default=[0.66, 0.85], help="non-preferred and preferred side means"
    )
    pairs.add_argument("--min-pool", type=int, default=20, help="fewest trajectories to pair up")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.set_defaults(handler=_pairs)

    bench = sub.add_parser("bench", help="compare AIHF with the baselines over seeds (paper Fig. 3)")
    bench.add_argument("--env", default=None, help="default: the --config file's env_id, else Pendulum-v1")
    bench.add_argument(
        "--algos",
        nargs="+",
        choices=ALGOS,
        default=list(ALGOS),
    )
    bench.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    bench.add_argument("--total-steps", type=int, default=None)
    bench.add_argument("--config", help="YAML file of AIHFControlConfig options shared by all runs")
    bench.add_argument("--demos")
    bench.add_argument("--prefs")
    bench.add_argument("--out", required=True)
    bench.add_argument("--backend", choices=BACKENDS, help="SAC implementation (default: config's)")
    bench.add_argument("--ent-coef", help="SAC entropy coefficient: a number or 'auto' (default: config's)")
    bench.add_argument(
        "--shard",
        default="0/1",
        help="I/N: run every N-th (algo, seed) pair from the I-th, e.g. one process per core; "
        "finished runs are skipped and interrupted ones resumed",
    )
    bench.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the pending (algo, seed) pairs in this many single-threaded processes on one machine, "
        "each taking the next pair from one queue (default: %(default)s)",
    )
    bench.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild results.md / curves.png from every finished run under --out "
        "(e.g. after benches run in parallel processes into one directory)",
    )
    bench.add_argument(
        "--budget",
        type=int,
        help="with --report-only: read runs longer than this many steps at this step (e.g. a budget "
        "pilot's 1M-step oracle runs beside a 500k comparison); needs an evaluation there",
    )
    bench.set_defaults(handler=_bench, claims_jobs=True)

    protocol = sub.add_parser(
        "protocol",
        help="run a staged protocol (budget pilot, tuning, finals) as a queue of resumable jobs",
        description="work: claim and run the next ready job until none is left (one worker per core); "
        "status: where the queue stands; report: the tables, curves and record from what has finished "
        "(jobs in the committed record are not rerun).",
    )
    protocol.add_argument("action", choices=("work", "status", "report"))
    protocol.add_argument("--runs", required=True, help="directory of every run of the protocol")
    protocol.add_argument(
        "--protocol",
        help="protocol file (default: configs/protocols/control_hopper.yaml, the Hopper-v5 comparison)",
    )
    protocol.add_argument(
        "--time-limit",
        type=float,
        metavar="MINUTES",
        help="work: start no job expected to end later than MINUTES from now (its steps at the slowest "
        "seconds per step of its method's finished runs, else of every SAC method's; a job of unknown "
        "length starts while time is left): the next one in priority that fits runs instead, and the "
        "worker stops when none fits, so a session ending then cuts no job short",
    )
    protocol.set_defaults(handler=_protocol)


def _config_from_args(args: argparse.Namespace):
    """Defaults < the environment's preset (config.PRESETS; the env of the flags, else the YAML's) <
    the YAML file < the flags given."""
    from aihf.control.config import RANGES, RENAMES, AIHFControlConfig, load_config
    from aihf.flags import canonical, check_flags, given_fields

    flags = canonical(given_fields(args), RENAMES, "arguments", prefix="--")
    flags = check_flags(flags, AIHFControlConfig, RANGES, "control train")  # named as flags, not the file's
    AIHFControlConfig.from_dict(flags, "arguments")  # and their checks across fields
    return load_config(args.config, flags)


def _train(args: argparse.Namespace) -> int:
    from aihf.control.data import resolve_data
    from aihf.control.train import RewardDivergedError, load_run_data, train

    try:
        if args.resume:
            extend_to = _check_resume_flags(args)
            results = train(
                None, args.resume, resume=True, progress=not args.no_progress, n_timesteps=extend_to
            )
        else:
            if not args.out:
                raise InputError("--out is required (or --resume DIR)")
            refuse_out_over_input(
                args.out,
                {},
                overwrite=args.overwrite,
                finished=("results.json",),
                unfinished=("checkpoint", ".checkpoint.old"),
                resume_hint=f"continue it with --resume {args.out}",
            )
            cfg = _config_from_args(args)
            demos_path, prefs_path = resolve_data(cfg.env_id, args.demos, args.prefs)
            demos, prefs = load_run_data(cfg, demos_path, prefs_path)
            results = train(cfg, args.out, demos, prefs, progress=not args.no_progress)
    except RewardDivergedError as err:
        raise RunFailed(f"{err}; the last good checkpoint is kept") from err
    print(
        f"{results['algo']} on {results['env']}: true return {results['eval_return_mean']:.1f} "
        f"+- {results['eval_return_std']:.1f} after {results['env_steps']} steps "
        f"-> {Path(args.resume or args.out)}"
    )
    return 0


def _check_resume_flags(args: argparse.Namespace) -> int | None:
    """A resume continues the run with its saved settings and data: options that would change them are
    refused, naming each field whose value differs from the checkpoint's (the same value passes). The
    one exception is a larger `n_timesteps`, which extends the run (returned; None when not given)."""
    from aihf.flags import canonical, given_fields
    from aihf.validation import load_yaml

    given = [flag for flag in ("--demos", "--prefs", "--overwrite") if getattr(args, flag[2:])]
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        given.append("--out")
    if given:
        raise InputError(
            f"--resume {args.resume}: {', '.join(given)} cannot be combined with a resume (it keeps the "
            "run's data and directory)"
        )
    flags = canonical(given_fields(args), RENAMES, "arguments", prefix="--")
    wanted = {**(canonical(load_yaml(args.config), RENAMES, args.config) if args.config else {}), **flags}
    if not wanted:
        return None
    state = Path(args.resume) / "checkpoint" / "state.json"
    if not state.is_file():
        return None  # train() names the missing or damaged checkpoint
    values = json.loads(state.read_text())["config"]
    values.setdefault("ent_coef", "auto")  # as train() reads checkpoints from before the option
    saved = AIHFControlConfig.from_dict(values).to_dict()
    fresh = AIHFControlConfig.from_dict(wanted, "arguments").to_dict()
    extend_to = fresh["n_timesteps"] if "n_timesteps" in wanted else None
    if extend_to is not None and extend_to < saved["n_timesteps"]:
        raise InputError(
            f"--resume {args.resume}: n_timesteps {extend_to} is below the run's {saved['n_timesteps']}; a "
            "resume can only extend it"
        )
    changed = [
        f"{k}: {saved[k]!r} -> {fresh[k]!r}"
        for k in sorted(wanted)
        if saved.get(k) != fresh.get(k) and k != "n_timesteps"
    ]
    if changed:
        raise InputError(
            f"--resume {args.resume}: the checkpoint was trained with other settings ({'; '.join(changed)}); "
            "resume without them (only n_timesteps may grow), or start a new --out"
        )
    return extend_to


def _collect(args: argparse.Namespace) -> int:
    from aihf.control.collect import CollectConfig, collect, format_quality

    cfg = CollectConfig(
        env_id=args.env,
        seed=args.seed,
        expert_steps=args.expert_steps,
        checkpoint_every=args.checkpoint_every,
        episodes_per_checkpoint=args.episodes_per_checkpoint,
        rollout_from=args.rollout_from,
        max_demos=args.max_demos,
        backend=args.backend,
        sac_hidden=tuple(args.sac_hidden),
        learning_starts=args.learning_starts,
        num_preferences=args.num_preferences,
        segment_length=args.segment_length,
        label_mode=args.label_mode,
        temperature=args.temperature,
    )
    table = collect(cfg, args.out)
    print(format_quality(table, args.env), end="")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from aihf.control.collect import build_pairs, format_table1

    table = build_pairs(
        args.pool, args.demos, args.out, args.num_preferences, tuple(args.targets), args.min_pool, args.seed
    )
    print(format_table1(table), end="")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from aihf.control.bench import report as rebuild_report
    from aihf.control.bench import run_bench
    from aihf.experiments.queue import parse_shard
    from aihf.threads import limit_threads, share

    if args.budget is not None and (not args.report_only or args.budget < 1):
        raise InputError(f"--budget {args.budget}: expected a positive step count, with --report-only")
    if args.report_only:
        print(rebuild_report(args.out, args.budget), end="")
        return 0
    shard = parse_shard(args.shard)
    if args.workers < 1 or (args.workers > 1 and shard[1] > 1):
        raise InputError(f"--workers {args.workers}: expected a positive count, and no --shard beside it")
    if shard[1] > 1:  # shards run side by side, one process per core: each its share of the cores
        limit_threads(share(shard[1]))
    overrides = {k: v for k, v in (("backend", args.backend), ("ent_coef", args.ent_coef)) if v is not None}
    report = run_bench(
        args.env,
        args.algos,
        args.seeds,
        args.out,
        args.total_steps,
        args.config,
        args.demos,
        args.prefs,
        overrides=overrides,
        shard=shard,
        workers=args.workers,
    )
    print(report, end="")
    return 0


def _protocol(args: argparse.Namespace) -> int:
    from aihf.control.protocol import DEFAULT_PROTOCOL, ProtocolQueue, read_control_protocol
    from aihf.threads import limit_threads
    from aihf.validation import POSITIVE, check_value

    deadline = None
    if args.time_limit is not None:
        if args.action != "work":
            raise InputError(f"--time-limit limits work, and {args.action} runs nothing: leave it out")
        deadline = time.time() + 60 * check_value("--time-limit", args.time_limit, float, POSITIVE)
    proto, root = read_control_protocol(args.protocol or DEFAULT_PROTOCOL)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    jobs = ProtocolQueue(proto, root, runs)
    if args.action == "work":
        limit_threads(1)  # one worker per core: a second thread would only compete with the next worker
        failed = jobs.work(deadline=deadline)
        if failed:
            raise RunFailed(f"{len(failed)} protocol job(s) failed: {', '.join(failed)}")
        return 0
    print(jobs.status() if args.action == "status" else jobs.report())
    return 0
