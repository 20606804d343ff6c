"""Per-run times of the SmolLM2 benchmark, measured before its budgets are fixed (issue 12 item 6).

Runs every method of `--preset smollm2` once at a small budget (seed 0, the shipped chat data,
the protocol's settings), reads each run's training and evaluation seconds, and extrapolates to the
protocol's budgets: offline methods by optimiser steps, AIHF by iterations, RLHF as its SFT stage plus
its RL stage (whose reward stage has as many reward steps as AIHF spreads over its iterations).
Prints the table and the estimated core-hours of every job of the full benchmark.

    OMP_NUM_THREADS=1 python benchmarks/lm_bench_budget.py --out RUNS [--fp32] [--methods dpo aihf]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from aihf.lm.bench import bench
from aihf.lm.methods import METHODS, VARIANTS
from aihf.lm.pretrained import get_model

PILOT = {"steps": 8, "iterations": 4, "rlhf_reward_steps": 8, "n_test": 32}


def units(method: str, cfg: bench.BenchConfig) -> float:
    """How many of the method's own units (steps or iterations) a job of `cfg` trains."""
    variant = VARIANTS[method]
    if METHODS[variant.method].family == "rl":  # AIHF: one policy step per iteration
        return cfg.iterations
    return cfg.steps * (2 if variant.start == "sft" else 1)  # the SFT start counts as steps too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--fp32", action="store_true", help="train in float32 instead of the preset's bf16")
    parser.add_argument("--methods", nargs="+")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = get_model("smollm2-135m-instruct")
    full = bench.BenchConfig.preset("smollm2", model_dir=model)
    pilot = bench.BenchConfig.preset("smollm2", quick=True, model_dir=model)
    for key, value in PILOT.items():
        setattr(pilot, key, value)
    pilot.methods = args.methods or full.methods
    if args.fp32:
        pilot.settings["common"] = pilot.settings["common"] | {"bf16": False}
    bench.run_bench(args.out, pilot, workers=1)
    measured = {}
    for job in pilot.jobs():
        record = json.loads((args.out / "runs" / job.name / "eval.json").read_text())
        measured[job.method] = (record["train_seconds"], record["seconds"] - record["train_seconds"])
    train_full = {  # the training seconds of one full-budget job
        m: train / units(m, pilot) * units(m, full) for m, (train, _) in measured.items() if m != "rlhf"
    }
    if "rlhf" in measured:  # its SFT stage + its RL stage (whose reward stage AIHF spreads over iterations)
        train_full["rlhf"] = train_full.get("sft", float("nan")) + train_full.get("aihf", float("nan"))
    rows, per_job = [], {}
    for method, (train, evaluation) in measured.items():
        per_job[method] = train_full[method] + evaluation / pilot.n_test * full.n_test
        per_unit = train / units(method, pilot) if method != "rlhf" else None
        rows.append((method, train, per_unit, evaluation / pilot.n_test, per_job[method]))
    precision = "float32" if args.fp32 else "bf16" if full.settings["common"]["bf16"] else "float32"
    lines = [
        f"SmolLM2 bench pilot ({precision}, one thread; {PILOT}); budgets of the full protocol: "
        f"steps={full.steps}, iterations={full.iterations}, rlhf_reward_steps={full.rlhf_reward_steps}, "
        f"n_test={full.n_test}",
        "| method | pilot train s | s per unit | eval s per prompt | estimated s per full job |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, train, per_unit, per_prompt, estimate in rows:
        unit = f"{per_unit:.1f}" if per_unit is not None else "(SFT + AIHF)"
        lines.append(f"| {method} | {train:.0f} | {unit} | {per_prompt:.2f} | {estimate:.0f} |")
    total = sum(per_job.get(job.method, float("nan")) for job in full.jobs())
    lines.append(f"\nfull benchmark ({len(full.jobs())} jobs): about {total / 3600:.1f} core-hours")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
