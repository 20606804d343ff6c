"""`aihf control bench`: AIHF against its baselines on the same data and budget, over seeds (paper Fig. 3).

Writes one run directory per (algo, seed), `curves.csv` (true return vs SAC steps, mean +- std over
seeds), `curves.png`, `results.md` (final true return per algorithm) and `results.json` (with every
seed's final return and curve).

Long benches are sharded and resumable (`aihf.experiments`' queue): `shard=(i, n)` runs every n-th
(algo, seed) pair starting at the i-th (one process per core), a finished run with the same config is
skipped, an interrupted one continues from its checkpoint, and a failed one is listed after the others
ran (`JobsFailed`). `report()` then merges every shard's runs.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from aihf.control.algorithms import ALGORITHM_LABELS
from aihf.control.callbacks import TrainerCallback
from aihf.control.config import RENAMES, AIHFControlConfig, load_config
from aihf.control.data import resolve_data
from aihf.control.train import load_run_data, train
from aihf.errors import InputError
from aihf.experiments import queue
from aihf.experiments.jobs import Job
from aihf.experiments.report import fmt, mean_curve, mean_sd, sd
from aihf.experiments.store import Store
from aihf.flags import canonical
from aihf.io import atomic_path, write_json, write_text


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
    callbacks: Sequence[TrainerCallback] = (),
    workers: int = 1,
    only: Iterable[str] | None = None,
) -> str | None:
    """Run every (algo, seed) of this shard; returns the Markdown table of the runs under `out_dir`
    (also written to results.md). `env_id` None: the YAML file's environment (else Pendulum-v1).
    `callbacks` go to every run's trainer loop (`aihf.control.callbacks`).

    `workers` > 1 runs the pending runs in that many fresh processes of one thread each, taking the
    next run from one queue (a run's numbers do not depend on the process it ran in). `only` (run
    names, or a worker's queue) runs just those and returns None: the caller writes the report."""
    out_dir = Path(out_dir)
    # precedence: the environment's preset < the YAML file < the arguments given here
    explicit = dict(overrides or {})
    if env_id is not None:
        explicit["env_id"] = env_id
    if total_steps is not None:
        explicit["n_timesteps"] = total_steps
    index, count = shard
    if not 0 <= index < count:
        raise InputError(f"--shard {index}/{count}: expected 0 <= I < N")
    jobs, configs = [], {}
    for algo, seed in [(algo, seed) for algo in algos for seed in seeds]:
        cfg = load_config(config_path, {**explicit, "algo": algo, "seed": seed})
        jobs.append(Job(algo, seed, name=f"{algo}/seed{seed}", spec={"config": cfg.to_dict()}))
        configs[jobs[-1].name] = cfg
    if workers > 1 and callbacks:
        raise InputError("control bench: callbacks run in this process only; use workers=1 with them")
    selected = queue.select(jobs, shard)
    plan = {}  # every config and data set is checked before the first (long) run starts
    for job in selected:
        cfg = configs[job.name]
        plan[job.name] = (cfg, *load_run_data(cfg, *resolve_data(cfg.env_id, demos_path, prefs_path)))
    store = run_store(out_dir)
    pending = [job.name for job in selected if store.finished(job) is None] if workers > 1 else []
    if only is None and len(pending) > 1:
        arguments = (env_id, algos, seeds, str(out_dir), total_steps, config_path, demos_path, prefs_path)
        queue.run_workers(pending, workers, _worker, (*arguments, progress, overrides))
    if only is not None:  # taken one name at a time: a worker's queue is shared with the others
        by_name = {job.name: job for job in selected}
        selected = (by_name[name] for name in only)

    def run_job(job: Job) -> dict[str, Any]:
        cfg, demos, prefs = plan[job.name]
        run_dir = store.run_dir(job)
        resume = run_status(run_dir, cfg) == "checkpoint"
        try:
            return train(cfg, run_dir, demos, prefs, resume=resume, progress=progress, callbacks=callbacks)
        except Exception as err:  # one failing run must not stop the others
            return queue.failure(err)

    outcome = queue.run_queue(jobs, run_job, store, selected, label=None)  # stdout: the table only
    if only is not None:
        return None
    table = report(out_dir)
    if outcome.failed:
        raise queue.JobsFailed(outcome.failed, "the output above")
    return table


def _worker(*arguments: Any) -> None:
    """One of `run_bench`'s worker processes: the runs named by its queue (the last argument)."""
    from aihf.threads import limit_threads

    limit_threads(1)  # or the share of the cores that `queue.run_workers` put in the environment
    *bench, progress, overrides, names = arguments
    run_bench(*bench, progress=progress, overrides=overrides, only=names)


def run_store(out_dir: str | Path) -> Store:
    """Runs in OUT/<algo>/seed<N>/, finished when their results.json holds the job's config."""
    return Store(
        Path(out_dir),
        "results.json",
        layout=lambda root, job: root / job.method / f"seed{job.seed}",
        canonical=canonical_result,
    )


def canonical_result(result: dict[str, Any]) -> dict[str, Any]:
    """A results.json or checkpoint state with its config under the current key names (`n_timesteps`,
    `learning_rate`, ...: config.RENAMES), so runs written before the rename are still recognised."""
    if not isinstance(result.get("config"), dict):
        return result
    return result | {"config": canonical(result["config"], RENAMES, warn=False)}


def run_status(run_dir: Path, cfg: AIHFControlConfig) -> str:
    """'finished' (results.json of this config), 'checkpoint' (resumable, same config) or 'new'."""
    results, state = run_dir / "results.json", run_dir / "checkpoint" / "state.json"
    if results.is_file() and _saved_config(results) == cfg.to_dict():
        return "finished"
    if state.is_file() and _saved_config(state) == cfg.to_dict():
        return "checkpoint"
    return "new"


def _saved_config(path: Path) -> dict[str, Any] | None:
    """The config a run saved, under today's names and with today's defaults for the fields added
    since (a run saved before `train_freq` existed ran with its default); None if it no longer reads."""
    saved = canonical_result(json.loads(path.read_text())).get("config")
    try:
        return AIHFControlConfig.from_dict(saved, str(path)).to_dict() if isinstance(saved, dict) else None
    except InputError:
        return None


def report(out_dir: str | Path, budget: int | None = None) -> str:
    """Rebuild the summary files from every finished run under `out_dir` (its <algo>/seed<N>/ dirs).

    For benches split over several processes or machines writing to one directory: the table and plot
    then cover all of them. `budget`: runs longer than it are read at that step (`cut_at`), e.g. a
    budget pilot's long oracle runs beside the comparison. Returns the Markdown table.
    """
    out_dir = Path(out_dir)
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*/seed*/results.json")):
        result = load_result(path.parent)
        runs.setdefault(result["algo"], []).append(cut_at(result, budget) if budget else result)
    if not runs:
        raise InputError(f"{out_dir}: no finished runs (<algo>/seed<N>/results.json) to report on")
    return summarize(runs, out_dir)


def summarize(runs: dict[str, list[dict[str, Any]]], out_dir: str | Path) -> str:
    """Write curves.csv, curves.png, results.json and results.md under `out_dir` for `runs` (algo ->
    the `load_result` of each seed); returns the Markdown table."""
    out_dir = Path(out_dir)
    envs = {r["env"] for rs in runs.values() for r in rs}
    if len(envs) > 1:
        raise InputError(f"{out_dir}: runs on several environments ({', '.join(sorted(envs))}); expected one")
    budgets = {r["total_steps"] for algo, rs in runs.items() for r in rs if algo != "bc"}
    ordered = {algo: sorted(runs[algo], key=lambda r: r["seed"]) for algo in ALGORITHM_LABELS if algo in runs}
    return _summarize(ordered, out_dir, envs.pop(), budgets.pop() if len(budgets) == 1 else None)


def load_result(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's results.json with its evaluation curve [(step, true return), ...]."""
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "results.json").read_text())
    curve = list(csv.DictReader((run_dir / "curve.csv").open()))
    return {**result, "curve": [(int(r["step"]), float(r["eval_return_mean"])) for r in curve]}


def cut_at(result: dict[str, Any], budget: int) -> dict[str, Any]:
    """`result` as if the run had stopped at `budget` steps: its curve up to there, its final return the
    evaluation at that step. Runs of at most `budget` steps (and BC, which takes none) are unchanged."""
    if result["algo"] == "bc" or result["total_steps"] <= budget:
        return result
    curve = dict(result["curve"])
    if budget not in curve:
        raise InputError(
            f"{result['algo']} seed {result['seed']}: no evaluation at step {budget} to cut the "
            f"{result['total_steps']}-step run at (evaluated every {result['config']['eval_interval']} steps)"
        )
    cut = {**result, "curve": [(s, r) for s, r in result["curve"] if s <= budget]}
    cut |= {"eval_return_mean": curve[budget], "total_steps": budget, "cut_from_steps": result["total_steps"]}
    return cut


def last3(result: dict[str, Any]) -> float:
    """Mean of the last three evaluations: less noisy than the final one."""
    return float(np.mean([r for _, r in result["curve"][-3:]]))


def _summarize(
    runs: dict[str, list[dict[str, Any]]], out_dir: Path, env_id: str, total_steps: int | None
) -> str:
    """Write curves.csv, curves.png, results.json and results.md for `runs` (algo -> results)."""
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    curves = {algo: mean_curve([r["curve"] for r in rs]) for algo, rs in runs.items()}
    _write_curves(out_dir / "curves.csv", curves)
    _plot(out_dir / "curves.png", curves, env_id, len(seeds))
    table = _table(runs, env_id, total_steps)
    summary = {
        algo: {
            "final_return_mean_over_seeds": float(np.mean([r["eval_return_mean"] for r in rs])),
            "final_return_std_over_seeds": sd([r["eval_return_mean"] for r in rs]),
            "last3_return_mean_over_seeds": float(np.mean([last3(r) for r in rs])),
            "seeds": [r["seed"] for r in rs],
            "per_seed": [
                {
                    "seed": r["seed"],
                    "final_return": r["eval_return_mean"],
                    "backend": _backend(r),
                    "ent_coef": r.get("ent_coef", "auto-tuned (auto)"),  # runs from before the option
                    "total_steps": r["total_steps"],
                    "cut_from_steps": r.get("cut_from_steps"),
                    "last3_return": last3(r),
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


def _write_curves(path: Path, curves: dict[str, list[tuple[int, float, float]]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["algo", "step", "true_return_mean", "true_return_std"])
    for algo, rows in curves.items():
        writer.writerows([algo, *row] for row in rows)
    write_text(path, buf.getvalue())


def _plot(path: Path, curves: dict[str, list[tuple[int, float, float]]], env_id: str, seeds: int) -> None:
    """True return against SAC steps, every method of the table; a band (one sample std) only where
    there is more than one seed to spread."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for algo, rows in curves.items():
        steps, mean, std = (np.array(x) for x in zip(*rows))
        if algo == "bc":  # no environment steps: a level line
            ax.axhline(
                mean[-1], linestyle=":", color="gray", label=f"{ALGORITHM_LABELS[algo]} (no SAC steps)"
            )
            continue
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=ALGORITHM_LABELS.get(algo, algo))
        if seeds > 1:
            ax.fill_between(steps, mean - std, mean + std, alpha=0.15, color=line.get_color())
    ax.set_xlabel("SAC environment steps")
    ax.set_ylabel("true return (deterministic policy)")
    banded = seeds > 1 and any(algo != "bc" for algo in curves)  # BC's level line has no band
    what = f"mean over {seeds} seeds" + (", band: +- 1 std" if banded else "") if seeds > 1 else "one seed"
    ax.set_title(f"{env_id}: {what}")
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
            f"{_backend(r)} SAC, entropy coefficient {r.get('ent_coef', 'auto-tuned (auto)')}"
            for algo, rs in runs.items()
            if algo != "bc"
            for r in rs
        }
    )
    lines = [
        f"{env_id}, "
        + (f"{total_steps} SAC steps, " if total_steps else "")
        + f"seeds {seeds} ({'; '.join(settings) or 'no SAC'}): "
        "final deterministic true return ("
        + ("mean +- sample std over seeds" if len(seeds) > 1 else "one seed: no spread to show")
        + "; last 3: the mean of each seed's last three evaluations, averaged)\n",
        "| algorithm | seeds | true return | last 3 evaluations | every seed | held-out pref. accuracy "
        "| corr(learned, true return) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for algo, rs in runs.items():
        finals = [r["eval_return_mean"] for r in rs]
        acc = [r.get("reward_diagnostics", {}).get("heldout_preference_accuracy") for r in rs]
        corr = [r.get("reward_diagnostics", {}).get("learned_true_return_correlation") for r in rs]
        score = mean_sd(finals)
        recent = f"{np.mean([last3(r) for r in rs]):.1f}"
        each = ", ".join(f"{f:.0f}" for f in finals)
        label = ALGORITHM_LABELS.get(algo, algo)
        if len(settings) > 1 and algo != "bc":  # which row ran on which SAC
            label += f" ({_backend(rs[0])} SAC)"
        if rs[0].get("cut_from_steps"):
            label += f" (cut at {rs[0]['total_steps']} of {rs[0]['cut_from_steps']} steps)"
        lines.append(f"| {label} | {len(rs)} | {score} | {recent} | {each} | {_mean(acc)} | {_mean(corr)} |")
    return "\n".join(lines) + "\n"


def _backend(result: dict[str, Any]) -> str:
    """The SAC implementation a run used (runs from before the option used sb3)."""
    return result.get("backend", "sb3")


def _mean(values: list[float | None]) -> str:
    """The mean of the seeds' diagnostics, "-" where no seed has one."""
    values = [v for v in values if v is not None]
    return fmt(float(np.mean(values)) if values else None, 2, missing="-")
