"""The LM section of `aihf quickstart`: a quick preset of the SmolLM2 protocol
(configs/protocols/lm_smollm2_quick.yaml: SFT, DPO and Direct AIHF with LoRA at the same number of
optimiser steps, one seed) beside the verdict table of the committed full SmolLM2 benchmark
(docs/lm_bench_smollm2.md, 3 seeds). Each is labelled for what it is: the quick run shows the real
model training end to end; only the full benchmark's table says anything about the methods."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from aihf.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
PROTOCOL = ROOT / "configs" / "protocols" / "lm_smollm2_quick.yaml"
FULL = ROOT / "docs" / "lm_bench_smollm2.md"


def run(out_dir: Path, workers: int = 1) -> str:
    """Run the quick preset into `out_dir/lm`; return the section with plot paths relative to `out_dir`."""
    from aihf.lm.bench.bench import method_config, policy_updates, read_bench_protocol, run_bench
    from aihf.lm.bench.report import gold_range

    if not PROTOCOL.is_file():
        raise InputError(f"{PROTOCOL}: the quick SmolLM2 protocol is missing (a source checkout ships it)")
    cfg = read_bench_protocol(PROTOCOL)
    bench_dir = Path(out_dir) / "lm"
    run_bench(bench_dir, cfg, workers=workers)
    report = (bench_dir / "report.md").read_text()
    results = json.loads((bench_dir / "results.json").read_text())
    seed = cfg.seeds[0]
    updates = {m: policy_updates(cfg, m, method_config(m, cfg, seed)[2]) for m in cfg.methods}
    starts = ", ".join(
        f"{m} {n}" + (" (from the SFT policy)" if cfg.variant(m).start == "sft" else "")
        for m, n in updates.items()
    )
    intro = (
        "**Quick run (this machine, now).** SmolLM2-135M-Instruct with LoRA on the shipped v2 chat data "
        f"(continue a text; prompts from fortune cookies); policy updates, SFT starts included: {starts}; "
        f"seed {seed} only, "
        f"{cfg.n_test} test prompts. Gold reward `{cfg.gold}`: {gold_range(cfg.gold)}; KL to the base "
        "policy in nats per completion. "
        f"Protocol: `{PROTOCOL.relative_to(ROOT)}`.\n\n"
    )
    quick = re.sub(r"\]\(([^)/]+\.png)\)", r"](lm/\1)", report)
    return (
        intro
        + quick
        + f"\n\n**Verdict (quick run).** {quick_verdict(results, cfg.n_test)}\n\n"
        + full_table()
    )


def quick_verdict(results: dict[str, Any], n_test: int) -> str:
    """What the one-seed quick run can say: how far each method moved the gold reward from the `base`
    row (the base policy scored as a method), and whether that is more than sampling noise."""
    runs = [row for row in results["runs"] if row.get("kl_scale", 1.0) == 1.0]
    base = next((row for row in runs if row["method"] == "base"), None)
    moved = ", ".join(
        f"{row['method']} {row['gold_reward_mean']:.3f} (KL {row['kl_to_ref']:.1f} nats)"
        for row in runs
        if row["method"] != "base"
    )
    start = f"from the `base` row's {base['gold_reward_mean']:.3f}" if base is not None else ""
    noise = ""
    if base is not None and all("gold_reward_sem" in row for row in runs):
        z = max(
            abs(row["gold_reward_mean"] - base["gold_reward_mean"])
            / math.hypot(row["gold_reward_sem"], base["gold_reward_sem"])
            for row in runs
            if row["method"] != "base"
        )
        noise = f" The largest move is {z:.1f} standard errors of the difference (over {n_test} prompts)" + (
            ", within sampling noise." if z < 2 else "."
        )
    if any(row["kl_to_ref"] < 0 for row in runs):
        noise += (
            " A KL below 0 is the sampling error of its estimate (the mean log-ratio over the test "
            "samples): that policy has barely moved."
        )
    return (
        f"After a few policy updates the gold means moved {start} to: {moved}.{noise} One seed, "
        f"{n_test} test prompts and a few updates: this shows the real model training, saving and scoring "
        "end to end; it cannot say whether AIHF helps (see the full benchmark below for that)."
    )


def full_table() -> str:
    """The committed full benchmark's verdict table, labelled as such (not rerun here)."""
    if not FULL.is_file():
        return "The full SmolLM2 benchmark's verdicts: docs/lm_bench_smollm2.md in the source checkout.\n"
    table = re.search(r"(?m)^\| claim .*?(?=\n\n)", FULL.read_text(), re.S)  # the page's verdict table
    return (
        "**The full SmolLM2 benchmark (committed, not rerun here: 3 seeds an arm, 500 demonstrations, "
        "1000 preference pairs, 128 test prompts, a fixed 40-iteration budget that does not match policy "
        "updates; see docs/lm_bench_smollm2.md).**\n\n"
        + (table.group(0) if table else "(table not found)")
        + "\n\n**Verdict (full benchmark).** At that budget AIHF does not beat RLHF and Direct AIHF does "
        "not beat DPO (the baselines did more updates and moved two to three times as far from the base); "
        "Direct AIHF beats RPO; the scarce-data and reward-KL claims are undecided.\n"
    )
