"""The LM section of `aihf quickstart`: the quick offline sentiment benchmark (`aihf lm bench --quick`)."""

from __future__ import annotations

import re
from pathlib import Path


def run(out_dir: Path) -> str:
    """Run the quick benchmark into `out_dir/lm`; return its report with plot paths relative to `out_dir`."""
    from aihf.lm.bench.bench import BenchConfig, default_workers, run_bench

    bench_dir = Path(out_dir) / "lm"
    run_bench(bench_dir, BenchConfig(), workers=default_workers())
    report = (bench_dir / "report.md").read_text()
    intro = (
        "Every method is trained on the same shipped data (demonstrations from the best third of "
        "gold-RL samples, preferences from the lower two thirds) and scored on held-out prompts under "
        "the gold reward (VADER sentiment), as in the paper's IMDb experiment: RLHF, DPO and IPO start "
        "from the SFT policy, the AIHF variants from the base policy. Full results: `lm/results.json`; "
        "the full benchmark (3 seeds, data-size sweeps, KL frontier) is `aihf lm bench --out DIR`.\n\n"
    )
    return intro + re.sub(r"\]\(([^)/]+\.png)\)", r"](lm/\1)", report)
