"""`aihf control bench`: AIHF against its baselines on the same data and budget, over seeds (paper Fig. 3).

Writes one run directory per (algo, seed), `curves.csv` (true return vs SAC steps, mean +- std over
seeds), `curves.png`, `results.md` (final true return per algorithm) and `results.json`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from aihf.control.config import AIHFControlConfig, preset
from aihf.control.train import load_run_data, train
from aihf.errors import InputError
from aihf.io import atomic_path, write_json, write_text

LABELS = {
    "aihf": "AIHF",
    "rlhf": "RLHF (BC -> RM -> SAC)",
    "pref-only": "preferences only (alpha = 0)",
    "demo-only": "demonstrations only (ML-IRL)",
    "bc": "behaviour cloning",
    "sac-true": "SAC on the true reward (oracle)",
}


def run_bench(
    env_id: str,
    algos: list[str],
    seeds: list[int],
    out_dir: str | Path,
    total_steps: int | None = None,
    config_path: str | None = None,
    demos_path: str | None = None,
    prefs_path: str | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Run every (algo, seed); returns the Markdown results table (also written to results.md)."""
    from aihf.control.cli import resolve_data

    out_dir = Path(out_dir)
    demos_path, prefs_path = resolve_data(env_id, demos_path, prefs_path)
    # precedence: the environment's preset < the YAML file < the arguments given here
    explicit = {**(overrides or {}), "env_id": env_id}
    if total_steps is not None:
        explicit["total_steps"] = total_steps
    plan = []  # every config and data set is checked before the first (long) run starts
    for algo in algos:
        for seed in seeds:
            values = {**explicit, "algo": algo, "seed": seed}
            cfg = (
                AIHFControlConfig.from_yaml(config_path, base=preset(env_id), **values)
                if config_path
                else AIHFControlConfig.from_dict({**preset(env_id), **values})
            )
            plan.append((cfg, *load_run_data(cfg, demos_path, prefs_path)))
    runs: dict[str, list[dict[str, Any]]] = {}
    for cfg, demos, prefs in plan:
        run_dir = out_dir / cfg.algo / f"seed{cfg.seed}"
        result = _with_curve(train(cfg, run_dir, demos, prefs, progress=progress), run_dir)
        runs.setdefault(cfg.algo, []).append(result)
    return _summarize(runs, out_dir, env_id, cfg.total_steps)


def report(out_dir: str | Path) -> str:
    """Rebuild the summary files from every finished run under `out_dir` (its <algo>/seed<N>/ dirs).

    For benches split over several processes or machines writing to one directory: the table and plot
    then cover all of them. Returns the Markdown table.
    """
    out_dir = Path(out_dir)
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*/seed*/results.json")):
        result = _with_curve(json.loads(path.read_text()), path.parent)
        runs.setdefault(result["algo"], []).append(result)
    if not runs:
        raise InputError(f"{out_dir}: no finished runs (<algo>/seed<N>/results.json) to report on")
    envs = {r["env"] for rs in runs.values() for r in rs}
    if len(envs) > 1:
        raise InputError(f"{out_dir}: runs on several environments ({', '.join(sorted(envs))}); expected one")
    budgets = {r["total_steps"] for algo, rs in runs.items() for r in rs if algo != "bc"}
    ordered = {algo: sorted(runs[algo], key=lambda r: r["seed"]) for algo in LABELS if algo in runs}
    return _summarize(ordered, out_dir, envs.pop(), budgets.pop() if len(budgets) == 1 else None)


def _with_curve(result: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    curve = list(csv.DictReader((run_dir / "curve.csv").open()))
    return {**result, "curve": [(int(r["step"]), float(r["eval_return_mean"])) for r in curve]}


def _summarize(
    runs: dict[str, list[dict[str, Any]]], out_dir: Path, env_id: str, total_steps: int | None
) -> str:
    """Write curves.csv, curves.png, results.json and results.md for `runs` (algo -> results)."""
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    curves = _aggregate(runs)
    _write_curves(out_dir / "curves.csv", curves)
    _plot(out_dir / "curves.png", curves, env_id)
    table = _table(runs, env_id, total_steps)
    summary = {
        algo: {
            "final_return_mean_over_seeds": float(np.mean([r["eval_return_mean"] for r in rs])),
            "final_return_std_over_seeds": float(np.std([r["eval_return_mean"] for r in rs])),
            "seeds": [r["seed"] for r in rs],
            "heldout_preference_accuracy": [
                r.get("reward_diagnostics", {}).get("heldout_preference_accuracy") for r in rs
            ],
            "learned_true_return_correlation": [
                r.get("reward_diagnostics", {}).get("learned_true_return_correlation") for r in rs
            ],
        }
        for algo, rs in runs.items()
    }
    write_json(out_dir / "results.json", {"env": env_id, "seeds": seeds, "algos": summary})
    write_text(out_dir / "results.md", table)
    return table


def _aggregate(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[int, float, float]]]:
    """Mean and std over seeds at every step that all seeds evaluated."""
    out = {}
    for algo, rs in runs.items():
        common = sorted(set.intersection(*(set(s for s, _ in r["curve"]) for r in rs)))
        rows = []
        for step in common:
            values = [dict(r["curve"])[step] for r in rs]
            rows.append((step, float(np.mean(values)), float(np.std(values))))
        out[algo] = rows
    return out


def _write_curves(path: Path, curves: dict[str, list[tuple[int, float, float]]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["algo", "step", "true_return_mean", "true_return_std"])
    for algo, rows in curves.items():
        writer.writerows([algo, *row] for row in rows)
    write_text(path, buf.getvalue())


def _plot(path: Path, curves: dict[str, list[tuple[int, float, float]]], env_id: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for algo, rows in curves.items():
        steps, mean, std = (np.array(x) for x in zip(*rows))
        if algo == "bc":  # no environment steps: a level line
            ax.axhline(mean[-1], linestyle=":", color="gray", label=LABELS[algo])
            continue
        ax.plot(steps, mean, marker="o", markersize=3, label=LABELS.get(algo, algo))
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("SAC environment steps")
    ax.set_ylabel("true return (deterministic policy)")
    ax.set_title(f"{env_id}: mean +- std over seeds")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _table(runs: dict[str, list[dict[str, Any]]], env_id: str, total_steps: int | None) -> str:
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    lines = [
        f"{env_id}, {total_steps} SAC steps, seeds {seeds}: "
        "final deterministic true return (mean +- std over seeds)\n",
        "| algorithm | seeds | true return | held-out pref. accuracy | corr(learned, true return) |",
        "|---|---:|---:|---:|---:|",
    ]
    for algo, rs in runs.items():
        finals = [r["eval_return_mean"] for r in rs]
        acc = [r.get("reward_diagnostics", {}).get("heldout_preference_accuracy") for r in rs]
        corr = [r.get("reward_diagnostics", {}).get("learned_true_return_correlation") for r in rs]
        score = f"{np.mean(finals):.1f} +- {np.std(finals):.1f}"
        lines.append(f"| {LABELS.get(algo, algo)} | {len(rs)} | {score} | {_fmt(acc)} | {_fmt(corr)} |")
    return "\n".join(lines) + "\n"


def _fmt(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.2f}" if values else "-"
