"""The Hopper-v5 comparison of `results/control_hopper_protocol.md`, as a queue of resumable jobs.

One worker per core claims the next job whose inputs are ready, runs it (an interrupted run continues
from its checkpoint) and goes on until nothing is left; `status` shows where the queue stands and
`report` writes the tables, curves and per-seed JSON from whatever has finished:

    export OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    python benchmarks/control_hopper.py work --runs RUNS > RUNS/worker0.log 2>&1 &   # one per core
    python benchmarks/control_hopper.py work --runs RUNS > RUNS/worker1.log 2>&1 &
    python benchmarks/control_hopper.py status --runs RUNS
    python benchmarks/control_hopper.py report --runs RUNS     # benchmarks/results/control_hopper.*

The stages, as the protocol fixes them: the budget pilot (SAC on the true reward, seeds 0-2, 1M steps)
gives the budget B; each learned-reward method and BC is tuned on seed 0 at min(B, 300k) steps over a
grid of four settings; the best setting then runs seeds 0-2 at B steps; the pilot's runs, read at B,
are the oracle rows; SAC on the true reward also runs on sb3 (seed 0 in the protocol; seeds 1 and 2 added
when seed 0 ended far below sbx's) to show whether the backend decides, since IPL runs on sb3.
Locks are directories holding the worker's pid, so the workers must share one machine.

A job that finished on an earlier machine whose RUNS is gone counts as done when the committed
`results/control_hopper.json` holds its numbers ("recorded"): the queue runs only what is missing and
the report merges both (the record keeps the pilot's runs cut at B, so their curves past B are not restored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aihf.control.bench import cut_at, last3, load_result, run_bench, run_status, summarize
from aihf.control.config import load_config
from aihf.control.data import load_trajectories, shipped_data_dir
from aihf.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/control/hopper.yaml"
DATA = shipped_data_dir("Hopper-v5")  # the 1M-step expert's data (its README)
RESULTS = ROOT / "benchmarks/results"
SEEDS = (0, 1, 2)
PILOT_STEPS = 1_000_000
BUDGET_STEP = 100_000  # B is a multiple of this
TUNE_STEPS_CAP = 300_000
ORACLE_FRACTION = 0.8  # B: where the oracle's seed mean first reaches this share of the demonstrations

# The tuning grids of the protocol: four settings per method, picked by the final true return on seed 0.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "aihf": [{"reward_lr": lr, "reward_scale": s} for lr in (1e-4, 1e-3) for s in (1.0, 10.0)],
    "rlhf": [
        {"reward_lr": lr, "reward_scale": s, "bc_steps": 2000} for lr in (1e-4, 1e-3) for s in (1.0, 10.0)
    ],
    "bc": [{"bc_steps": n, "bc_lr": lr} for n in (2000, 10_000) for lr in (1e-3, 3e-4)],
    "ipl": [
        {"ipl_chi2_coef": c, "ipl_pref_batch_size": b, "backend": "sb3"} for c in (0.5, 2.0) for b in (8, 32)
    ],
}
# Queue priority: the headline methods' tuning and finals before IPL's (the slowest, on sb3).
PRIORITY = (("tune", "aihf"), ("tune", "rlhf"), ("tune", "bc"), ("final", "aihf"), ("final", "rlhf"))
PRIORITY += (("final", "bc"), ("tune", "ipl"), ("final", "ipl"))
PILOT_AFTER = "bc"  # the pilot's runs finish (to 1M steps) after this method's tuning


@dataclass(frozen=True)
class Job:
    """One (algo, seed) run of `aihf control bench` into `out`/<algo>/seed<N>."""

    name: str
    out: Path
    algo: str
    seed: int
    total_steps: int
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def run_dir(self) -> Path:
        return self.out / self.algo / f"seed{self.seed}"

    def status(self) -> str:
        """'finished' (in RUNS), 'recorded' (only in the committed record), 'checkpoint' (resumable) or
        'new'."""
        state = self._run_state()
        if state != "finished" and recorded(self) is not None:
            return "recorded"
        return state

    def result(self) -> dict[str, Any] | None:
        """The finished run's results (`load_result`'s form), from RUNS or else from the record."""
        if self._run_state() == "finished":
            return load_result(self.run_dir)
        return recorded(self)

    def _run_state(self) -> str:
        """The run's state in RUNS alone: 'finished', 'checkpoint' or 'new'."""
        return run_status(self.run_dir, load_config(str(CONFIG), self._config_values()))

    def run(self) -> None:
        run_bench(
            None,
            [self.algo],
            [self.seed],
            self.out,
            self.total_steps,
            str(CONFIG),
            str(DATA / "demos.npz"),
            str(DATA / "prefs.npz"),
            overrides=self.overrides,
        )

    def _config_values(self) -> dict[str, Any]:
        return {**self.overrides, "algo": self.algo, "seed": self.seed, "total_steps": self.total_steps}


def setting_name(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items() if k != "backend")


def demonstration_return() -> float:
    """Mean true return of the demonstration trajectories."""
    return float(np.mean(load_trajectories(DATA / "demos.npz").returns()))


# The oracle runs (pilot, sb3 check) keep the `termination` value the pilot ran with: the option acts only
# on learned rewards, and the YAML moved from "bootstrap" to "env" after the first tunings (protocol).
ORACLE = {"termination": "bootstrap"}


def pilot_jobs(runs: Path) -> list[Job]:
    return [Job(f"pilot/sac-true/seed{s}", runs / "pilot", "sac-true", s, PILOT_STEPS, ORACLE) for s in SEEDS]


def recorded(job: Job) -> dict[str, Any] | None:
    """`job`'s result as the committed control_hopper.json holds it, in `load_result`'s form (a tuning
    run's without its curve: the record keeps its final and last-three figures only); None if absent."""
    path = RESULTS / "control_hopper.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    kind = job.name.split("/")[0]
    if kind == "tune":
        rows = record.get("tuning", {}).get(job.algo, {}).get("runs", [])
        return next(
            (
                {"eval_return_mean": r["final"], "last3_return": r["last3"], "wall_time_s": r["wall_time_s"]}
                for r in rows
                if r["setting"] == job.overrides
            ),
            None,
        )
    if kind == "check":
        rows = record.get("sb3_check", {}).get("per_seed", [])
        return next(
            ({"eval_return_mean": r["final"], "curve": r["curve"]} for r in rows if r["seed"] == job.seed),
            None,
        )
    # the pilot's runs and the finals are the comparison's rows; a final counts only with the setting it ran
    if kind == "final" and record.get("tuning", {}).get(job.algo, {}).get("picked") != job.overrides:
        return None
    comparison = record.get("comparison", {})
    entry = comparison.get("algos", {}).get(job.algo, {})
    for i, row in enumerate(entry.get("per_seed", [])):
        if row["seed"] == job.seed:
            diagnostics = ("heldout_preference_accuracy", "learned_true_return_correlation")
            as_run = ("total_steps", "cut_from_steps", "backend", "ent_coef", "wall_time_s")
            return {
                "algo": job.algo,
                "seed": job.seed,
                "env": comparison["env"],
                "eval_return_mean": row["final_return"],
                "curve": [(int(step), float(value)) for step, value in row["curve"]],
                "reward_diagnostics": {key: entry[key][i] for key in diagnostics},
            } | {key: row[key] for key in as_run}
    return None


def run_curve(job: Job) -> list[tuple[int, float]]:
    """The evaluations so far: from the result when finished, else from the newest checkpoint."""
    result = job.result()
    if result is not None:
        return result["curve"]
    state = job.run_dir / "checkpoint" / "state.json"
    if not state.is_file():
        return []
    return [(int(r["step"]), float(r["eval_return_mean"])) for r in json.loads(state.read_text())["curve"]]


def budget(runs: Path) -> tuple[int | None, list[dict[str, Any]]]:
    """The budget B (None until the pilot has evaluated far enough) and the pilot's table rows."""
    curves = [dict(run_curve(job)) for job in pilot_jobs(runs)]
    threshold = ORACLE_FRACTION * demonstration_return()
    rows = []
    for step in range(BUDGET_STEP, PILOT_STEPS + 1, BUDGET_STEP):
        if not all(step in curve for curve in curves):
            return None, rows
        values = [curve[step] for curve in curves]
        rows.append({"step": step, "per_seed": values, "mean": float(np.mean(values))})
        if rows[-1]["mean"] >= threshold:
            return step, rows
    return PILOT_STEPS, rows  # never reached: B = 1M, and the table says so


def tune_jobs(runs: Path, b: int) -> dict[str, list[tuple[dict[str, Any], Job]]]:
    steps = min(b, TUNE_STEPS_CAP)
    return {
        algo: [
            (
                s,
                Job(
                    f"tune/{algo}/{setting_name(s)}",
                    runs / "tune" / algo / setting_name(s),
                    algo,
                    0,
                    steps,
                    s,
                ),
            )
            for s in grid
        ]
        for algo, grid in GRIDS.items()
    }


def best_setting(tuned: list[tuple[dict[str, Any], Job]]) -> dict[str, Any] | None:
    """The setting with the best final true return on seed 0 (the first on ties); None until all ran."""
    results = [job.result() for _, job in tuned]
    if any(result is None for result in results):
        return None
    return tuned[int(np.argmax([result["eval_return_mean"] for result in results]))][0]


def plan(runs: Path) -> list[tuple[Job | None, str]]:
    """Every job in priority order with why it cannot start yet ('' when it can); a None job stands for
    jobs that cannot be named yet (they depend on B or on a tuning result)."""
    # the least advanced pilot seed first: B is known once every seed has evaluated far enough
    pilot = [(job, "") for job in sorted(pilot_jobs(runs), key=lambda job: len(run_curve(job)))]
    b, _ = budget(runs)
    if b is None:
        return [*pilot, (None, "tuning, finals and the sb3 checks wait for the budget B (the pilot)")]
    # once B is known, the rest of the pilot (the oracle rows' curves past B) waits for the first tunings
    out: list[tuple[Job | None, str]] = []
    tuning = tune_jobs(runs, b)
    for stage, algo in PRIORITY:
        if stage == "tune":
            out += [(job, "") for _, job in tuning[algo]]
            if algo == PILOT_AFTER:
                out, pilot = out + pilot, []
            continue
        best = best_setting(tuning[algo])
        if best is None:
            out.append((None, f"{algo} finals wait for its tuning"))
            continue
        out += [(Job(f"final/{algo}/seed{s}", runs / "final", algo, s, b, best), "") for s in SEEDS]
    out += pilot  # unless placed above
    out += [(job, "") for job in check_jobs(runs, b)]
    return out


def check_jobs(runs: Path, b: int) -> list[Job]:
    """SAC on the true reward on sb3: does the backend decide the oracle's result (and so IPL's)?"""
    settings = ORACLE | {"backend": "sb3"}
    return [Job(f"check/sac-true-sb3/seed{s}", runs / "sb3-check", "sac-true", s, b, settings) for s in SEEDS]


def lock_path(runs: Path, job: Job) -> Path:
    return runs / "locks" / re.sub(r"[^\w.=,-]+", "_", job.name)


def holder(lock: Path) -> int | None:
    """The pid of the live worker holding `lock`, else None."""
    try:
        pid = int((lock / "pid").read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def claim(runs: Path, job: Job) -> bool:
    lock = lock_path(runs, job)
    lock.parent.mkdir(parents=True, exist_ok=True)
    if lock.exists() and holder(lock) is None:  # its worker died: take the stale lock away atomically
        stale = lock.with_name(f".stale-{lock.name}-{os.getpid()}")
        try:
            lock.rename(stale)
            shutil.rmtree(stale)
        except OSError:
            return False
    try:
        lock.mkdir()
    except FileExistsError:
        return False
    (lock / "pid").write_text(str(os.getpid()))
    return True


def work(runs: Path) -> None:
    """Claim and run jobs until every one has finished."""
    while True:
        pending = [(job, why) for job, why in plan(runs) if job is None or job.result() is None]
        if not pending:
            print("every job has finished", flush=True)
            return
        for job, why in pending:
            if job is not None and not why and claim(runs, job):
                start = time.time()
                print(f"{time.strftime('%H:%M:%S')} start {job.name} ({job.status()})", flush=True)
                try:
                    job.run()
                finally:
                    shutil.rmtree(lock_path(runs, job), ignore_errors=True)
                print(
                    f"{time.strftime('%H:%M:%S')} done {job.name} in {time.time() - start:.0f} s", flush=True
                )
                break
        else:  # every ready job is taken by another worker: wait for one to finish
            time.sleep(60)


def status(runs: Path) -> str:
    b, _ = budget(runs)
    lines = [f"budget B: {b if b else 'not yet known'}"]
    for job, why in plan(runs):
        if job is None:
            lines.append(f"  waiting   {why}")
            continue
        state = job.status()
        pid = holder(lock_path(runs, job))
        if state in ("finished", "recorded"):
            result = job.result()
            detail = (
                f"true return {result['eval_return_mean']:.1f} ({result.get('wall_time_s', 0) / 60:.0f} min)"
            )
        else:
            curve = run_curve(job)
            detail = f"at {curve[-1][0]} of {job.total_steps} steps" if curve else "not started"
            state = f"running (pid {pid})" if pid else state
        lines.append(f"  {state:<22} {job.name}: {detail}")
    return "\n".join(lines)


def report(runs: Path) -> str:
    """Write control_hopper.json, the generated tables in control_hopper.md and the curves."""
    b, pilot_rows = budget(runs)
    demo_return = demonstration_return()
    threshold = ORACLE_FRACTION * demo_return
    md = [
        f"Demonstrations: {demo_return:.1f} mean true return; "
        f"{ORACLE_FRACTION:.0%} of it: {threshold:.1f}.\n",
        "**Budget pilot** (SAC on the true reward, deterministic true return at each 100k steps):\n",
        "| steps | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean |",
        "|---:|" + "---:|" * (len(SEEDS) + 1),
        *(
            f"| {r['step']} | " + " | ".join(f"{v:.0f}" for v in r["per_seed"]) + f" | {r['mean']:.0f} |"
            for r in pilot_rows
        ),
        f"\nBudget B = **{b if b else 'not yet known'}** steps.\n",
    ]
    summary: dict[str, Any] = {
        "budget": b,
        "demonstration_return": demo_return,
        "pilot": pilot_rows,
    }
    if b is None:
        return _write_report(md, summary)
    tuning = tune_jobs(runs, b)
    summary["tuning"] = {}
    md += [
        f"**Tuning** (seed 0, {min(b, TUNE_STEPS_CAP)} steps; final / mean of the last three evaluations):\n",
        "| method | setting | final | last 3 | picked |",
        "|---|---|---:|---:|---|",
    ]
    for algo, tuned in tuning.items():
        best = best_setting(tuned)
        rows = []
        for setting, job in tuned:
            result = job.result()
            if result is None:
                md.append(f"| {algo} | {setting_name(setting)} | (not finished) | | |")
                continue
            last3_return = result["last3_return"] if "last3_return" in result else last3(result)
            rows.append(
                {
                    "setting": setting,
                    "final": result["eval_return_mean"],
                    "last3": last3_return,
                    "wall_time_s": result.get("wall_time_s"),
                }
            )
            final, mark = result["eval_return_mean"], "yes" if setting == best else ""
            md.append(f"| {algo} | {setting_name(setting)} | {final:.0f} | {last3_return:.0f} | {mark} |")
        summary["tuning"][algo] = {"runs": rows, "picked": best}
    finals: dict[str, list[dict[str, Any]]] = {}
    for job, _ in plan(runs):
        result = job.result() if job is not None and job.name.startswith(("final/", "pilot/")) else None
        if result is not None:
            finals.setdefault(job.algo, []).append(cut_at(result, b))
    if finals:
        staging = runs / "report"
        table = summarize(finals, staging)
        summary["comparison"] = json.loads((staging / "results.json").read_text())
        shutil.copyfile(staging / "curves.png", RESULTS / "control_hopper_curves.png")
        shutil.copyfile(staging / "curves.csv", RESULTS / "control_hopper_curves.csv")
        md += ["**Comparison** (seeds 0-2 at B; the oracle rows are the pilot's runs read at B):\n", table]
    checks = [(job.seed, result) for job in check_jobs(runs, b) if (result := job.result()) is not None]
    if checks:
        finals = [result["eval_return_mean"] for _, result in checks]
        summary["sb3_check"] = {
            "per_seed": [{"seed": s, "final": r["eval_return_mean"], "curve": r["curve"]} for s, r in checks],
            "mean": float(np.mean(finals)),
            "std": float(np.std(finals, ddof=1)) if len(finals) > 1 else None,
        }
        per_seed = ", ".join(f"seed {s}: {r['eval_return_mean']:.0f}" for s, r in checks)
        md.append(f"SAC on the true reward on sb3 at B (the oracle rows above are sbx): {per_seed}.\n")
    return _write_report(md, summary)


BEGIN, END = "<!-- generated by benchmarks/control_hopper.py report -->", "<!-- end of generated part -->"


def _write_report(md: list[str], summary: dict[str, Any]) -> str:
    write_json(RESULTS / "control_hopper.json", summary)
    text = "\n".join(md)
    path = RESULTS / "control_hopper.md"
    old = path.read_text() if path.is_file() else f"# Hopper-v5 comparison\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old:
        old = f"{old.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    write_text(path, f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["work", "status", "report"])
    parser.add_argument("--runs", type=Path, required=True, help="directory of every run of the comparison")
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.command == "work":
        work(args.runs)
    else:
        print({"status": status, "report": report}[args.command](args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
