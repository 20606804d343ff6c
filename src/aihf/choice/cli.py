"""`aihf choice ...`: the exact discrete-choice lab.

    aihf choice solve --demo-counts 50,50 --pref-counts "0>1:6,1>0:4" --beta 1 --alpha 1 [--json]
    aihf choice solve --data counts.json|counts.csv [--prior 0.5,0.5]
    aihf choice example1|example2|variance|sweep --out DIR

`solve --json` prints one JSON object {"sft": [...], "rm": [...], "rlhf": [...], "aihf": [...]} of
policy probabilities per action (0-indexed); `--details` adds rewards and first-order-condition
residuals. Data file formats are documented in `aihf.choice.data` and docs/choice.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aihf.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    choice = subparsers.add_parser("choice", help="exact discrete-choice estimators (SFT, RM, RLHF, AIHF)")
    commands = choice.add_subparsers(dest="choice_command", required=True, parser_class=type(choice))

    solve = commands.add_parser("solve", help="estimate the four policies from counts")
    source = solve.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo-counts", help="demonstration count per action, e.g. 50,50")
    source.add_argument("--data", help="JSON or CSV data file (see docs/choice.md)")
    solve.add_argument("--pref-counts", help="preferences 'winner>loser:count', e.g. \"0>1:6,1>0:4\"")
    solve.add_argument("--prior", help="prior policy pi_0 for AIHF, comma-separated probabilities")
    _add_beta_alpha(solve)
    solve.add_argument("--json", action="store_true", help="print one JSON object of the four policies")
    solve.add_argument("--details", action="store_true", help="with --json: add rewards and residuals")
    solve.set_defaults(handler=_solve)

    for name, helptext in (
        ("example1", "the paper's Example 1 (two actions, both data sets)"),
        ("example2", "the paper's coverage experiment (50 actions, Fig. 2)"),
        ("variance", "Monte-Carlo variance of each estimator vs p(1-p)/(|D|+|P|)"),
        ("sweep", "error of each estimator as |D| and |P| vary (heat map)"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--out", required=True, help="output directory for JSON/CSV/PNG results")
        _add_beta_alpha(sub)
        if name != "example1":
            sub.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
            sub.add_argument("--repeats", type=int, default=None, help="Monte-Carlo repeats")
        if name == "sweep":
            sub.add_argument(
                "--demo-sizes", default="10,30,100,300,1000", help="|D| values (default: %(default)s)"
            )
            sub.add_argument(
                "--pref-sizes", default="10,30,100,300,1000", help="|P| values (default: %(default)s)"
            )
            sub.add_argument(
                "--actions", type=int, default=10, help="number of actions (default: %(default)s)"
            )
        sub.set_defaults(handler=_experiment, experiment=name)


def _add_beta_alpha(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--beta", type=float, default=1.0, help="KL weight beta > 0 (default: %(default)s)")
    parser.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="weight of the demonstration term, >= 0 (default: %(default)s)",
    )


def _check_beta_alpha(args: argparse.Namespace) -> None:
    """Outside these ranges exp(r / beta) and alpha * n overflow float64: the answers would be noise."""
    if not 1e-6 <= args.beta <= 1e6:
        raise InputError(f"--beta must be a number in [1e-06, 1e+06], got {args.beta}")
    if not 0 <= args.alpha <= 1e6:
        raise InputError(f"--alpha must be a number in [0, 1e+06], got {args.alpha}")


def _solve(args: argparse.Namespace) -> int:
    from aihf.choice.data import (
        load_data,
        make_data,
        parse_demo_counts,
        parse_pref_counts,
        parse_prior,
    )
    from aihf.choice.estimators import estimate_all

    _check_beta_alpha(args)
    if args.data is not None:
        if args.pref_counts is not None:
            raise InputError("--pref-counts cannot be combined with --data (put preferences in the file)")
        data = load_data(args.data)
        if args.prior is not None:
            data = make_data(data.demo_counts, data.pref_counts, parse_prior(args.prior), source="--prior")
    else:
        demos = parse_demo_counts(args.demo_counts)
        if not demos:
            raise InputError("--demo-counts is empty (expected one count per action, e.g. 50,50)")
        prefs = parse_pref_counts(args.pref_counts, len(demos)) if args.pref_counts else None
        prior = parse_prior(args.prior) if args.prior is not None else None
        data = make_data(demos, prefs, prior, source="command line")
    est = estimate_all(data, args.beta, args.alpha)
    if args.json:
        out: dict = est.policies()
        if args.details:
            out |= {
                "rm_reward": est.rm.reward.tolist(),
                "aihf_reward": est.aihf.reward.tolist(),
                "residual": {"rm": est.rm.residual, "aihf": est.aihf.residual},
                "ridge": {"rm": est.rm.ridge, "aihf": est.aihf.ridge},
            }
        print(json.dumps(out))
        return 0
    policies = est.policies()
    print(
        f"{data.n_actions} actions, |D| = {data.n_demos}, |P| = {data.n_prefs}, beta = {args.beta:g}, "
        f"alpha = {args.alpha:g}" + (", prior given" if data.prior is not None else "")
    )
    print(f"{'action':>6}  {'n_i':>6}  {'SFT':>8}  {'RM only':>8}  {'RLHF':>8}  {'AIHF':>8}  {'r_AIHF':>9}")
    for i in range(data.n_actions):
        print(
            f"{i:>6}  {data.demo_counts[i]:>6}  {policies['sft'][i]:>8.4f}  {policies['rm'][i]:>8.4f}  "
            f"{policies['rlhf'][i]:>8.4f}  {policies['aihf'][i]:>8.4f}  {est.aihf.reward[i]:>9.4f}"
        )
    print(f"first-order-condition residual: RM {est.rm.residual:.1e}, AIHF {est.aihf.residual:.1e}")
    for name, fit in (("RM", est.rm), ("AIHF", est.aihf)):
        if fit.ridge:
            print(
                f"note: the {name} optimum is at infinity or not unique for these data; a ridge of "
                f"{fit.ridge:.1e} was used (see docs/choice.md)"
            )
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from aihf.choice import experiments

    _check_beta_alpha(args)
    from aihf.choice.data import MAX_ACTIONS
    from aihf.validation import SEED, Range, check_value

    repeats = getattr(args, "repeats", None)
    if repeats is not None and not 2 <= repeats <= MAX_REPEATS:
        raise InputError(f"--repeats must be in [2, {MAX_REPEATS}], got {repeats}")
    if hasattr(args, "seed"):
        check_value("--seed", args.seed, int, SEED)
    out_dir = Path(args.out)  # already checked to be usable (aihf.cli.main)
    kwargs: dict = {"beta": args.beta, "alpha": args.alpha}
    if args.experiment != "example1":
        kwargs["seed"] = args.seed
        if repeats is not None:
            kwargs["repeats"] = repeats
    if args.experiment == "sweep":
        kwargs["demo_sizes"] = _sizes(args.demo_sizes, "--demo-sizes")
        kwargs["pref_sizes"] = _sizes(args.pref_sizes, "--pref-sizes")
        check_value("--actions", args.actions, int, Range(2, MAX_ACTIONS))
        kwargs["n_actions"] = args.actions
    report = getattr(experiments, args.experiment)(out_dir, **kwargs)
    print(report.table())
    print(f"results written to {out_dir}", file=sys.stderr)
    return 0


MAX_REPEATS = 10**6  # Monte-Carlo repeats; more is a typo, not a plan


def _sizes(text: str, option: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise InputError(f"{option}: expected comma-separated positive integers, got {text!r}") from None
    from aihf.choice.data import MAX_COUNT

    if not sizes or min(sizes) < 1 or max(sizes) > MAX_COUNT:
        raise InputError(f"{option}: expected comma-separated integers in [1, {MAX_COUNT:.0e}], got {text!r}")
    return sizes
