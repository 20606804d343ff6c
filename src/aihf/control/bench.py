"""`aihf control bench`: AIHF against its baselines on the same data and budget, over seeds (paper Fig. 3).

Writes one run directory per (algo, seed), `curves.csv` (true return vs SAC steps, mean +- std over
seeds), `curves.png`, `results.md` (final true return per algorithm) and `results.json` (with every
seed's final return and curve).

Long benches are sharded and resumable: `shard=(i, n)` runs every n-th (algo, seed) pair starting at
the i-th (one process per core), a finished run with the same config is skipped, and an interrupted
one continues from its checkpoint. `report()` then merges every shard's runs.
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

from aihf.control.config import AIHFControlConfig, load_config
from aihf.control.data import resolve_data
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
    "ipl": "IPL (inverse preference learning)",
}


def run_bench(
    env_id: str | None,
    algos: list[str],
    seeds: list[int],
    out_dir: str | Path,
    total_steps: int | None = None,
    config_path: str | None = None,
    demos_path: str | None = None,
    prefs_path: str | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> str:
    """Run every (algo, seed) of this shard; returns the Markdown table of the runs under `out_dir`
    (also written to results.md). `env_id` None: the YAML file's environment (else Pendulum-v1)."""
    out_dir = Path(out_dir)
    # precedence: the environment's preset < the YAML file < the arguments given here
    explicit = dict(overrides or {})
    if env_id is not None:
        explicit["env_id"] = env_id
    if total_steps is not None:
        explicit["total_steps"] = total_steps
    index, count = shard
    if not 0 <= index < count:
        raise InputError(f"--shard {index}/{count}: expected 0 <= I < N")
    pairs = [(algo, seed) for algo in algos for seed in seeds][index::count]
    plan = []  # every config and data set is checked before the first (long) run starts
    for algo, seed in pairs:
        cfg = load_config(config_path, {**explicit, "algo": algo, "seed": seed})
        demos, prefs = resolve_data(cfg.env_id, demos_path, prefs_path)
        plan.append((cfg, *load_run_data(cfg, demos, prefs)))
    for cfg, demos, prefs in plan:
        run_dir = out_dir / cfg.algo / f"seed{cfg.seed}"
        status = _run_status(run_dir, cfg)
        if status == "finished":
            continue
        train(cfg, run_dir, demos, prefs, resume=status == "checkpoint", progress=progress)
    return report(out_dir)


def _run_status(run_dir: Path, cfg: AIHFControlConfig) -> str:
    """'finished' (results.json of this config), 'checkpoint' (resumable, same config) or 'new'."""
    results, state = run_dir / "results.json", run_dir / "checkpoint" / "state.json"
    if results.is_file() and json.loads(results.read_text())["config"] == cfg.to_dict():
        return "finished"
    if state.is_file() and json.loads(state.read_text())["config"] == cfg.to_dict():
        return "checkpoint"
    return "new"


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
            "per_seed": [
                {
                    "seed": r["seed"],
                    "final_return": r["eval_return_mean"],
                    "backend": r.get("backend", "sb3"),
                    "ent_coef": r.get("ent_coef", "auto-tuned (auto)"),  # runs from before the option
                    "total_steps": r["total_steps"],
                    "wall_time_s": r.get("wall_time_s"),
                    "curve": r["curve"],
                }
                for r in rs
            ],
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
    # how SAC ran: runs from before these options used sb3 with automatic entropy tuning
    settings = sorted(
        {
            f"{r.get('backend', 'sb3')} SAC, entropy coefficient {r.get('ent_coef', 'auto-tuned (auto)')}"
            for algo, rs in runs.items()
            if algo != "bc"
            for r in rs
        }
    )
    lines = [
        f"{env_id}, {total_steps} SAC steps, seeds {seeds} ({'; '.join(settings) or 'no SAC'}): "
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
