"""Control quick run for `aihf quickstart`: AIHF vs RLHF and BC on Pendulum-v1 beside the oracle (SAC on
the true reward), one seed, with the demonstrations and preferences shipped in the package.

The budget is one where the oracle learns: with the JAX SAC (sbx) and automatic entropy tuning it
reached -150 and -225 (mean of the last three evaluations, seeds 1 and 0) within 6000 steps in the
pilot, so a method far below it at 6000 steps did not learn in this budget; the task was in reach.
One seed keeps the section's four runs within a few minutes of one core; `aihf control bench` adds the
other baselines and more seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aihf.control.algorithms import ALGORITHM_LABELS
from aihf.control.bench import run_bench
from aihf.control.config import preset
from aihf.control.data import shipped_data_dir

ENV = "Pendulum-v1"
ALGOS = ["sac-true", "aihf", "rlhf", "bc"]
SEEDS = [0]
TOTAL_STEPS = 6000
SETTINGS = {"backend": "sbx", "ent_coef": "auto"}


def run(out_dir: Path, workers: int = 1) -> str:
    sub = Path(out_dir) / "control"
    table = run_bench(ENV, ALGOS, SEEDS, sub, total_steps=TOTAL_STEPS, overrides=SETTINGS, workers=workers)
    quality = (shipped_data_dir(ENV) / "quality.md").read_text()
    algos = json.loads((sub / "results.json").read_text())["algos"]
    return (
        "AIHF learns the reward jointly with SAC from the shipped demonstrations (the best third of the "
        "expert's checkpoint rollouts) and preferences (pairs from the worse two thirds); RLHF fits the "
        "reward on the preferences alone, starting SAC from a behaviour-cloned actor; the oracle is SAC "
        f"on the true reward. {seeds(len(SEEDS)).capitalize()}, {TOTAL_STEPS} SAC steps each (JAX SAC, "
        "automatic entropy tuning); the paper's runs are about 1M steps on MuJoCo.\n\n"
        f"Shipped data quality (true return):\n\n{quality}\n{table}\n"
        f"![true return vs SAC steps](control/curves.png)\n\n"
        f"**Verdict.** {verdict(algos)}\n\n"
        f"Reproduce: `aihf control bench --env {ENV} --algos {' '.join(ALGOS)} --seeds "
        f"{' '.join(map(str, SEEDS))} --total-steps {TOTAL_STEPS} --out runs/pendulum` "
        "with `backend: sbx` and `ent_coef: auto` in a `--config` YAML.\n"
    )


def verdict(algos: dict[str, Any]) -> str:
    """What the table shows: AIHF against RLHF seed by seed (means of the last three evaluations, less
    noisy than the final one), against the oracle, how much of the oracle's climb from the random start
    AIHF made (not learning: less than half; part of the way: less than three quarters) and what a seed
    or two cannot show."""

    def last3(algo: str) -> list[float]:
        return [run["last3_return"] for run in algos[algo]["per_seed"]]

    aihf, rlhf, oracle = last3("aihf"), last3("rlhf"), last3("sac-true")
    wins = sum(a > r for a, r in zip(aihf, rlhf))
    mean = {algo: sum(v) / len(v) for algo, v in (("aihf", aihf), ("rlhf", rlhf), ("sac-true", oracle))}
    better = "above" if mean["aihf"] > mean["rlhf"] else "at or below"
    gap = mean["sac-true"] - mean["aihf"]
    spread = f" on average and ahead in {wins} of {len(aihf)} seeds" if len(aihf) > 1 else ""
    text = (
        f"Over the last three evaluations, AIHF ({mean['aihf']:.0f}) is {better} RLHF "
        f"({mean['rlhf']:.0f}){spread}; "
        f"{ALGORITHM_LABELS['sac-true']} reaches {mean['sac-true']:.0f}, "
        + (f"{gap:.0f} above AIHF. " if gap > 0 else f"{-gap:.0f} below AIHF. ")
    )
    starts = [run["curve"][0][1] for run in algos["aihf"]["per_seed"] if run.get("curve")]
    start = sum(starts) / len(starts) if starts else None
    if start is not None and mean["aihf"] < start + 0.75 * (mean["sac-true"] - start):
        text += (
            (
                f"At this budget AIHF does not learn Pendulum: it ends nearer its random start ({start:.0f}) "
                "than the oracle. "
                if mean["aihf"] < (start + mean["sac-true"]) / 2
                else f"At this budget AIHF learns only part of the way: from its random start ({start:.0f}) "
                f"to {mean['aihf']:.0f}, {(mean['aihf'] - start) / (mean['sac-true'] - start):.0%} of the "
                "oracle's climb. "
            )
            + _reward_quality(algos["aihf"])
            + "This is the quick run's limit, not the benchmark's verdict (the paper-scale Hopper-v5 "
            "protocol under Results in the README: 500k steps, tuned settings, 3 seeds). "
        )
    return text + (
        f"With {seeds(len(aihf))} and one short budget this shows the direction on this task only, "
        "not a significant difference, and says nothing about MuJoCo at the paper's scale."
    )


def seeds(count: int) -> str:
    return "one seed" if count == 1 else f"{count} seeds"


def _reward_quality(aihf: dict[str, Any]) -> str:
    """Whether the learned reward is the weak part: its held-out preference accuracy and how well its
    return tracks the true one (the bench's per-seed diagnostics)."""
    acc = [v for v in aihf.get("heldout_preference_accuracy", []) if v is not None]
    corr = [v for v in aihf.get("learned_true_return_correlation", []) if v is not None]
    if not acc or not corr:
        return ""
    return (
        f"Its learned reward is not the weak part (held-out preference accuracy {sum(acc) / len(acc):.2f}, "
        f"correlation of learned and true return {sum(corr) / len(corr):.2f}); the likely limit is the "
        f"policy's: SAC has {TOTAL_STEPS} steps to follow a reward refit every "
        f"{preset(ENV)['steps_per_iter']} steps, where the oracle's reward never changes (a one-seed pilot "
        "with twice the reward scale ended no better). "
    )
