"""The LM benchmark: every method trained on the same generated data, evaluated under the gold reward.

Pairs compared, as in the paper: AIHF vs RLHF, Direct AIHF vs DPO, Self-Play AIHF vs SPIN, with IPO
and SFT as references. Each run goes through `aihf.lm.train.run_training`, then `aihf.lm.evaluation`
scores its policy on the test prompts (gold reward, KL to the base model, win rate against it) and,
for methods that learn a reward (AIHF, RLHF), that reward's accuracy on held-out preferences and its
correlation with the gold reward on the policy's own samples (the paper's Fig. 8).

As in the paper's IMDb runs, the baselines that need a starting policy (RLHF, DPO, IPO) start from the
SFT model trained on the demonstrations; the AIHF variants start from the base policy. AIHF's reward
gets the same number of gradient steps as RLHF's reward stage (spread over the iterations).

`quick=True` is the main job's version (one seed, short runs, a small test set, at most ~10 minutes on
2 CPU cores); the full version adds seeds, the data-size sweeps (preferences varied with demonstrations
fixed, and the reverse) and the reward-vs-KL frontier (each method's KL weight scaled). Output:
report.md, results.json and PNG plots in the output directory. `shard=(i, n)` runs every n-th job only
(for parallel processes or machines); a final unsharded call reuses their runs and writes the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from aihf.errors import InputError
from aihf.io import write_json, write_text
from aihf.lm.bench.corpus import load_prompts
from aihf.lm.bench.datagen import GENERATED_DIR, SMOLLM2_DATA_DIR
from aihf.lm.bench.pretrain import BASE_MODEL_DIR
from aihf.lm.config import LMConfig
from aihf.lm.evaluation import Samples, SamplingConfig, evaluate, load_model, reference_samples
from aihf.lm.gold import gold_name, load_gold_reward
from aihf.lm.methods import METHODS as TRAINERS

# Settings of the tiny replica (a 1M-parameter model trains at larger learning rates than the 1e-5
# default), in three families: `common` to every trainer, `rl` for the methods that sample while they
# train (AIHF, RLHF), `offline` for those trained on the fixed data sets.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "common": {"max_length": 64, "max_prompt_length": 16, "report_to": "none", "cpu": True}
    | {"logging_steps": 10},
    "rl": {"max_new_tokens": 24, "num_samples": 4, "prompt_batch_size": 8, "beta": 0.05}
    | {"learning_rate": 1e-4, "policy_learning_rate": 5e-4, "reward_learning_rate": 3e-4, "batch_size": 16},
    "offline": {"learning_rate": 1e-4, "batch_size": 16},
}

# benchmark method -> (trainer in the aihf.lm.methods registry, settings family, its own settings).
# The data each gets is the trainer's (`required` + `optional` in the registry).
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "aihf": ("aihf", "rl", {}),
    "rlhf": ("rlhf", "rl", {}),
    # AIHF whose reward starts from the same Bradley-Terry warm-up as RLHF's reward stage (see WARM_START).
    "aihf-warm": ("aihf", "rl", {}),
    # AIHF started from the SFT policy, as RLHF is (see SFT_START); the paper starts AIHF from the base.
    "aihf-sft": ("aihf", "rl", {}),
    "direct-aihf": ("direct-aihf", "offline", {"beta": 0.1}),
    "dpo": ("dpo", "offline", {"beta": 0.1}),
    "ipo": ("ipo", "offline", {"beta": 0.1}),
    "rpo": ("rpo", "offline", {"beta": 0.1}),  # DPO + alpha (1) x NLL of the chosen answers
    "orpo": ("orpo", "offline", {"beta": 0.1}),  # odds-ratio weight; no reference model, from the base
    "self-play-aihf": ("self-play-aihf", "offline", {}),
    "spin": ("spin", "offline", {}),
    "sft": ("sft", "offline", {}),
}
TINY_METHODS = ["aihf", "rlhf", "aihf-warm", "aihf-sft", "direct-aihf", "dpo", "ipo", "self-play-aihf"]
TINY_METHODS += ["spin", "sft"]
# Methods whose reward model is first fitted to the preferences (TRL RewardTrainer, `rlhf_reward_steps`
# steps): plain AIHF starts its reward from a fresh head, so its first policy steps chase an untrained
# reward, while RLHF's reward stage gives it a trained one; this variant separates the two effects.
WARM_START = {"aihf-warm"}
# Methods trained from the SFT policy (`steps` SFT steps on the demonstrations), as in the paper; RLHF's
# trainer runs its own SFT stage (`sft_steps`).
SFT_START = {"dpo", "ipo", "rpo", "aihf-sft"}
PAIRS = (("aihf", "rlhf"), ("aihf-warm", "rlhf"), ("aihf-sft", "rlhf"), ("direct-aihf", "dpo"))
PAIRS += (("direct-aihf", "rpo"), ("self-play-aihf", "spin"))


# The SmolLM2 protocol's budgets and precision (docs/lm_bench_smollm2.md: from measured per-run times).
SMOLLM2_BF16 = True
SMOLLM2_BUDGET = {"n_test": 128, "steps": 125, "iterations": 40, "rlhf_reward_steps": 125}
SMOLLM2_QUICK_BUDGET = {"n_test": 8, "steps": 2, "iterations": 2, "rlhf_reward_steps": 2}
# Checkpoints per stage of a benchmark job (`_resumable`): what a job killed mid-way loses at most.
RESUME_POINTS = 8


@dataclass
class BenchConfig:
    quick: bool = True
    methods: list[str] = field(default_factory=lambda: list(TINY_METHODS))
    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(TINY_SETTINGS))
    seeds: list[int] = field(default_factory=lambda: [0])
    n_demos: int = 1000
    n_prefs: int = 1000
    pref_sizes: list[int] = field(default_factory=list)  # sweep: preference pairs, demonstrations fixed
    demo_sizes: list[int] = field(default_factory=list)  # sweep: demonstrations, preference pairs fixed
    kl_scales: list[float] = field(default_factory=list)  # frontier: each method's beta times these
    sweep_methods: list[str] = field(default_factory=lambda: ["aihf", "rlhf", "direct-aihf", "dpo"])
    sweep_seeds: list[int] | None = None  # default: `seeds`
    # methods run after the main runs, at the main data point and the sweep seeds, to explain a result
    # (added after seeing it, so they stay out of the verdict: the report marks them, and no pair with
    # fewer seeds than `seeds` is decided)
    diagnostic_methods: list[str] = field(default_factory=list)
    # gold reward against training steps (paper Fig. 6): the main runs of these seeds keep this many
    # evenly spaced policy snapshots, each evaluated like the final policy
    curve_points: int = 0
    curve_seeds: list[int] = field(default_factory=lambda: [0])
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> trainer config keys
    n_test: int = 200
    steps: int = 60  # optimiser steps of the one-stage methods (and of the SFT starts)
    iterations: int = 30  # AIHF / RLHF iterations (one policy step each)
    rlhf_reward_steps: int = 60  # RLHF's reward-model stage; AIHF spreads as many over its iterations
    spin_iterations: int = 2
    shard: tuple[int, int] | None = None  # (i, n): run jobs i, i + n, ... only; no report
    # finished jobs' records from an earlier machine (DIR/NAME.json, as the report writes OUT/records/):
    # jobs found there are reused, not rerun, so a long benchmark survives the loss of OUT
    records: str | None = None
    gold: str = "vader"
    base_model: str = str(BASE_MODEL_DIR)
    data_dir: str = str(GENERATED_DIR)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(
            quick=False,
            seeds=[0, 1, 2],
            pref_sizes=[2000, 3000],
            demo_sizes=[250, 500],
            kl_scales=[0.3, 0.5, 2.0, 3.0],
            n_test=1024,
            steps=80,
            iterations=40,
            rlhf_reward_steps=80,
        )

    @classmethod
    def smollm2(cls, model_dir: str | Path, quick: bool = False) -> BenchConfig:
        """SmolLM2-135M-Instruct with LoRA on the shipped chat data, gold `fluent-sentiment`: the
        protocol of docs/lm_bench_smollm2.md. `quick`: a smoke run of the same path
        (one seed, a few steps)."""
        settings = {
            # rendered prompts are 41-56 tokens (system turn included), completions at most 32 + EOS
            "common": {"max_length": 96, "max_prompt_length": 64, "use_peft": True, "bf16": SMOLLM2_BF16}
            | {"report_to": "none", "cpu": True, "logging_steps": 5},
            "rl": {"max_new_tokens": 32, "num_samples": 4, "prompt_batch_size": 4, "beta": 0.05}
            | {"learning_rate": 1e-4, "policy_learning_rate": 1e-4, "reward_learning_rate": 1e-4}
            | {"batch_size": 8},
            "offline": {"learning_rate": 1e-4, "batch_size": 8},
        }
        budget = SMOLLM2_QUICK_BUDGET if quick else SMOLLM2_BUDGET
        return cls(
            quick=quick,
            methods=["aihf", "rlhf", "direct-aihf", "dpo", "rpo", "orpo", "sft"],
            settings=settings,
            seeds=[0] if quick else [0, 1, 2],
            n_demos=500,
            n_prefs=1000,
            pref_sizes=[] if quick else [250, 500],
            demo_sizes=[] if quick else [125, 250],
            kl_scales=[] if quick else [0.5, 2.0],
            sweep_seeds=[0],
            # docs/lm_bench_smollm2.md, session 8: AIHF from the SFT policy, and with RLHF's reward stage
            diagnostic_methods=[] if quick else ["aihf-sft", "aihf-warm"],
            curve_points=0 if quick else 4,
            gold=f"fluent-sentiment:{model_dir}",
            base_model=str(model_dir),
            data_dir=str(SMOLLM2_DATA_DIR),
            sampling=SamplingConfig(max_new_tokens=32),
            **budget,
        )

    def jobs(self) -> list[Job]:
        """Every (method, demonstrations, preference pairs, KL scale, seed) to train, main runs first."""
        main = [Job(m, self.n_demos, self.n_prefs, 1.0, s) for m in self.methods for s in self.seeds]
        seeds = self.sweep_seeds if self.sweep_seeds is not None else self.seeds
        main += [Job(m, self.n_demos, self.n_prefs, 1.0, s) for m in self.diagnostic_methods for s in seeds]
        methods = [m for m in self.sweep_methods if m in self.methods]
        sweep = [Job(m, self.n_demos, n, 1.0, s) for n in self.pref_sizes for m in methods for s in seeds]
        sweep += [Job(m, n, self.n_prefs, 1.0, s) for n in self.demo_sizes for m in methods for s in seeds]
        sweep += [
            Job(m, self.n_demos, self.n_prefs, k, s) for k in self.kl_scales for m in methods for s in seeds
        ]
        return main + [job for job in sweep if job not in main]


@dataclass(frozen=True)
class Job:
    method: str
    demos: int
    prefs: int
    kl_scale: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}_d{self.demos}_p{self.prefs}_k{self.kl_scale:g}_s{self.seed}"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: missing (generate it with `aihf lm generate-data`)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trainer_and_data(method: str) -> tuple[str, tuple[str, ...]]:
    """The registry trainer a benchmark method runs, and the data sets it takes."""
    trainer = METHODS[method][0]
    registered = TRAINERS[trainer]
    return trainer, tuple(sorted(registered.required + registered.optional))


def method_config(
    method: str, cfg: BenchConfig, seed: int, kl_scale: float = 1.0
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    _, family, own = METHODS[method]
    trainer, needs = trainer_and_data(method)
    values = cfg.settings["common"] | cfg.settings[family] | own | {"seed": seed}
    if trainer in ("aihf", "rlhf"):
        values |= {"max_iterations": cfg.iterations}
        if trainer == "rlhf":
            values |= {"reward_warmup_steps": cfg.rlhf_reward_steps, "sft_steps": cfg.steps}
        elif method not in WARM_START:  # the same reward-update budget as RLHF's reward stage
            values["reward_steps_per_iteration"] = max(1, round(cfg.rlhf_reward_steps / cfg.iterations))
    elif trainer in ("self-play-aihf", "spin"):
        values |= {
            "max_iterations": cfg.spin_iterations,
            "steps_per_iteration": max(1, cfg.steps // cfg.spin_iterations),
            "max_new_tokens": cfg.sampling.max_new_tokens,
        }
    else:
        values |= {"max_steps": cfg.steps}
    values |= cfg.overrides.get(method, {})
    if kl_scale != 1.0:
        values["beta"] = values.get("beta", 0.1) * kl_scale
    return trainer, needs, values


def init_reward_model(base_model: str, out: Path) -> Path:
    """A one-logit reward model whose body is the base policy's (the paper starts rewards from the SFT
    model); its head is freshly initialised."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (out / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model.config.pad_token_id = tokenizer.pad_token_id
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")  # shards may race: write aside, then rename
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process got there first
            shutil.rmtree(tmp)
    return out


def run_bench(
    out_dir: str | Path,
    cfg: BenchConfig | None = None,
    workers: int = 1,
    only: Iterable[str] | None = None,
    report_only: bool = False,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Train and evaluate every (method, data size, seed); write report.md, results.json and plots.

    `workers` > 1 runs the pending jobs in that many processes of one thread each (the small models
    here train faster that way than on several threads), each taking the next job from one queue, then
    reuses their runs for the report. A run's numbers depend on its thread count in the last digits, so
    compare runs made with the same setting. `only` (job names, or a worker's queue) runs just those
    jobs and writes no report. `report_only` trains nothing and writes the report of the jobs finished
    so far (a long benchmark's results can be read, and committed, as they come in). `deadline` (a
    `time.time()` value) starts no job expected to end after it (`expected_seconds`), so that a
    session or batch slot that ends then cuts no job short; the jobs left are returned as `postponed`.
    """
    cfg = cfg or BenchConfig()
    cfg.data_dir, cfg.base_model = str(cfg.data_dir), str(cfg.base_model)
    unknown = sorted(set(cfg.methods + cfg.diagnostic_methods) - set(METHODS))
    if unknown:
        raise InputError(f"unknown methods {unknown}: expected some of {', '.join(METHODS)}")
    out = Path(out_dir)
    start = time.perf_counter()
    inputs = _Inputs.load(out, cfg)
    jobs = cfg.jobs()
    pending = [job.name for job in jobs if _finished(out, job, cfg) is None]
    if cfg.shard is None and only is None and not report_only and min(workers, len(pending)) > 1:
        _run_workers(out_dir, cfg, pending, workers, deadline)  # inputs checked above; reference cached
    if only is not None:
        by_name = {job.name: job for job in jobs}
        selected: Iterable[Job] = (by_name[name] for name in only)
    else:
        selected = [job for i, job in enumerate(jobs) if not cfg.shard or i % cfg.shard[1] == cfg.shard[0]]
    runs: list[dict[str, Any]] = []
    failed: list[str] = []  # the caller lists them and exits non-zero, after every other job ran
    postponed: list[str] = []  # not started: expected to end after the deadline
    for job in selected:
        print(f"[bench {jobs.index(job) + 1}/{len(jobs)}] {job.name}", flush=True)
        done = _finished(out, job, cfg)
        if done is not None:  # resume: an earlier run of the same job and settings is reused
            print(f"[bench] reusing the finished {job.name}", flush=True)
            runs.append(done)
        elif not report_only and deadline is not None and _ends_late(out, job, cfg, deadline):
            postponed.append(job.name)
        elif not report_only:
            runs.append(_run_job(job, _record(job, cfg), inputs))
            if "error" in runs[-1]:
                failed.append(job.name)
    if cfg.shard or only is not None:
        shard = list(cfg.shard) if cfg.shard else None
        return {"shard": shard, "runs": len(runs), "failed": failed, "postponed": postponed}

    for run in runs:  # every finished job's record in one place, to commit and reuse (`records`)
        if "metrics" in run:
            name = Job(**{f.name: run[f.name] for f in fields(Job)}).name
            write_json(out / "records" / f"{name}.json", run)
    runs.insert(0, _base_run(inputs))
    results = summarise(runs, cfg, inputs.ref, gold_name(inputs.gold), time.perf_counter() - start)
    plots = make_plots(out, results, runs)
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_report(results, plots, Path(cfg.data_dir)))
    return results | {"failed": failed, "postponed": postponed}


@dataclass
class _Inputs:
    """What every job of a benchmark shares, loaded once per process: the data, the gold reward, the
    base model and its reference samples (cached in OUT/reference.json, so every process and every
    later call evaluates against the same samples)."""

    cfg: BenchConfig
    out: Path
    demos: list[dict[str, Any]]
    prefs: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    rl_prompts: list[dict[str, Any]]
    test_prompts: list[str]
    gold: Any
    reference: Any
    tokenizer: Any
    ref: Samples
    reward_init: Path

    @classmethod
    def load(cls, out: Path, cfg: BenchConfig) -> _Inputs:
        data_dir = Path(cfg.data_dir)
        demos, prefs = _read_jsonl(data_dir / "demos.jsonl"), _read_jsonl(data_dir / "prefs.jsonl")
        heldout = _read_jsonl(data_dir / "prefs_heldout.jsonl")
        rl_prompts = _read_jsonl(data_dir / "prompts.jsonl")
        # chat-model data ship their test prompts rendered with the chat template (datagen.render_prompts)
        rendered = data_dir / "test_prompts.jsonl"
        if rendered.is_file():
            test_prompts = [row["prompt"] for row in _read_jsonl(rendered)][: cfg.n_test]
        else:
            test_prompts = load_prompts("test", limit=cfg.n_test)
        gold = load_gold_reward(cfg.gold)
        reference, tokenizer = load_model(cfg.base_model)
        cache, settings = out / "reference.json", _eval_settings(cfg)
        saved = json.loads(cache.read_text()) if cache.is_file() else {}
        if saved.get("evaluation") == settings:
            ref = Samples(**saved["samples"])
        else:
            ref = reference_samples(reference, tokenizer, test_prompts, gold, cfg.sampling)
            write_json(cache, {"evaluation": settings, "samples": asdict(ref)})
        reward_init = init_reward_model(cfg.base_model, out / "reward_init")
        return cls(
            cfg,
            out,
            demos,
            prefs,
            heldout,
            rl_prompts,
            test_prompts,
            gold,
            reference,
            tokenizer,
            ref,
            reward_init,
        )

    def evaluate(self, policy: Any, **extra: Any) -> Any:
        """`evaluation.evaluate` of `policy` on the test prompts against the base model and its cached
        samples, with this benchmark's sampling settings."""
        return evaluate(
            policy,
            self.tokenizer,
            self.reference,
            self.test_prompts,
            self.gold,
            config=self.cfg.sampling,
            ref=self.ref,
            **extra,
        )


def _run_job(job: Job, record: dict[str, Any], inputs: _Inputs) -> dict[str, Any]:
    """Train one job (resuming an interrupted attempt), evaluate it, save OUT/runs/NAME/eval.json."""
    import torch

    cfg = inputs.cfg
    trainer, needs = trainer_and_data(job.method)
    values = record["config"]  # method_config's, with the budget and KL scale of this job
    run_dir = inputs.out / "runs" / job.name
    data = {
        "demos": inputs.demos[: job.demos],
        "prefs": inputs.prefs[: job.prefs],
        "prompts": inputs.rl_prompts,
    }
    record["resumed"] = _claim(run_dir, record, cfg)
    t0 = time.perf_counter()
    try:
        torch.manual_seed(job.seed)
        record["train_metrics"] = _train(job.method, trainer, values, cfg, run_dir, inputs, needs, data)
        record["train_seconds"] = time.perf_counter() - t0
        policy, _ = load_model(run_dir / "policy")
        rm = rm_tok = None
        learned = [o for o in TRAINERS[trainer].outputs if Path(o).name == "reward_model"]
        if learned:
            rm, rm_tok = load_model(run_dir / learned[0], kind="reward")
        result = inputs.evaluate(
            policy,
            reward_model=rm,
            reward_tokenizer=rm_tok,
            prefs=inputs.heldout,
            seed=job.seed,
        )
        record["metrics"] = result.metrics
        record["samples"] = result.rows()
        record["curve"] = _gold_curve(run_dir, inputs, job.seed)
    except Exception as err:  # one failing method must not hide the others' results
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
        print(record["traceback"], flush=True)
    record["seconds"] = time.perf_counter() - t0
    record["evaluation"] = _eval_settings(cfg)
    write_json(run_dir / "eval.json", record)
    if "metrics" in record:  # finished: its checkpoints were only there to survive a kill
        _drop_checkpoints(run_dir)
    return record


def _base_run(inputs: _Inputs) -> dict[str, Any]:
    """The untrained base policy, evaluated like a method (KL 0 and a win rate near 1/2 calibrate the
    table); cached in OUT/base.json like a job's eval.json."""
    cfg, path = inputs.cfg, inputs.out / "base.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("evaluation") == _eval_settings(cfg):
        return saved
    base = inputs.evaluate(inputs.reference)
    main = {"demos": cfg.n_demos, "prefs": cfg.n_prefs, "kl_scale": 1.0}
    run = {"method": "base", **main, "seed": 0, "config": {}, "train_seconds": 0.0}
    run |= {"metrics": base.metrics, "samples": base.rows(), "evaluation": _eval_settings(cfg)}
    write_json(path, run)
    return run


def _gold_curve(run_dir: Path, inputs: _Inputs, seed: int) -> list[dict[str, float]]:
    """Gold reward and KL of every policy snapshot of a run (none unless it kept snapshots)."""
    from aihf.lm.runtime import snapshot_dirs

    curve = []
    for step, path in snapshot_dirs(run_dir):
        policy, _ = load_model(path)
        metrics = inputs.evaluate(policy, seed=seed)
        curve.append({"step": step} | {k: metrics.metrics[k] for k in ("gold_reward_mean", "kl_to_ref")})
    return curve


def default_workers() -> int:
    """On CPU, one single-threaded process per core (at most 4): the small models here train about as
    fast on one thread as on several, and single-threaded runs give the same numbers on any machine.
    On a GPU, one process."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(4, os.cpu_count() or 1))


def _run_workers(
    out_dir: str | Path, cfg: BenchConfig, pending: list[str], workers: int, deadline: float | None
) -> None:
    """The pending jobs, in order, on one queue that `workers` single-threaded processes take from: a
    worker that finishes early takes the next job instead of waiting on a fixed share."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
    queue = context.Queue()
    count = min(workers, len(pending))
    for name in pending + [None] * count:  # one stop sign per worker
        queue.put(name)
    args = (str(out_dir), cfg, queue, deadline)
    processes = [context.Process(target=_worker, args=args) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()  # a worker that died leaves its jobs to the caller, which runs what is missing


def _worker(out_dir: str, cfg: BenchConfig, queue: Any, deadline: float | None) -> None:
    import torch

    torch.set_num_threads(1)
    run_bench(out_dir, cfg, only=iter(queue.get, None), deadline=deadline)


def _train(
    method: str,
    trainer: str,
    values: dict[str, Any],
    cfg: BenchConfig,
    run_dir: Path,
    inputs: _Inputs,
    needs: tuple[str, ...],
    data: dict[str, list[dict[str, Any]]],
) -> dict[str, float]:
    """One method's training, with its warm starts (an SFT policy, a Bradley-Terry reward) first."""
    from aihf.lm.train import run_training

    stage = {k: v for k, v in values.items() if k in cfg.settings["common"] or k in ("seed", "batch_size")}
    policy_start, reward_start = cfg.base_model, inputs.reward_init
    warm_out = run_dir / "warmup"
    if method in SFT_START:  # the same SFT run as the `sft` method's
        sft = method_config("sft", cfg, values["seed"])[2] | {"max_steps": cfg.steps}
        policy_start = str(_sft_start(inputs.out, sft, cfg, data["demos"]) / "policy")
    if trainer == "rlhf" and values.get("sft_steps", 0) > 0:  # its SFT stage, the same run again
        sft = {k: v for k, v in values.items() if k in SFT_STAGE_FIELDS} | {"max_steps": values["sft_steps"]}
        _link_stage(_sft_start(inputs.out, sft, cfg, data["demos"]), run_dir / "sft")
    if method in WARM_START and not (warm_out / "reward_model" / "config.json").is_file():
        warm = stage | {"max_steps": cfg.rlhf_reward_steps, "learning_rate": values["reward_learning_rate"]}
        warm = _resumable(warm, warm_out, cfg.rlhf_reward_steps)
        run_training(
            "reward", cfg.base_model, str(warm_out), str(inputs.reward_init), config=warm, prefs=data["prefs"]
        )
    if method in WARM_START:
        reward_start = warm_out / "reward_model"
    units = values["max_iterations"] if TRAINERS[trainer].iterative else values["max_steps"]
    metrics = run_training(
        trainer,
        policy_start,
        str(run_dir),
        reward_model=str(reward_start) if TRAINERS[trainer].needs_reward_model else None,
        config=_resumable(values, run_dir, units, staged=TRAINERS[trainer].staged),
        **{k: data[k] for k in needs},
    )
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


# The config fields an SFT stage reads (RLHF's runs with its own config, other fields left out), less
# the ones that change where it writes or how often it checkpoints, not what it computes.
SFT_STAGE_FIELDS = {f.name for f in fields(LMConfig)} - {
    "output_dir",
    "snapshot_steps",
    "save_steps",
    "save_total_limit",
    "resume_from_checkpoint",
}


def _sft_start(out: Path, sft: dict[str, Any], cfg: BenchConfig, demos: list[dict[str, Any]]) -> Path:
    """The SFT policy that DPO, RPO and RLHF's SFT stage start from: one run per (config,
    demonstrations), trained once into OUT/sft_starts/ and shared by every job that needs it (a
    seeded SFT run is the same run in every job, so training it again only costs time). A lock makes
    a second process wait for the first; an interrupted run resumes from its checkpoints."""
    import fcntl

    from aihf.lm.train import run_training

    start, key = _sft_start_dir(out, sft, cfg, demos)
    start.parent.mkdir(parents=True, exist_ok=True)
    with open(start.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (start / "policy" / "config.json").is_file():
            write_json(start / "start.json", key | {"demos": len(demos)})
            _prune_cut_checkpoints(start)
            config = _resumable(sft, start, sft["max_steps"])
            run_training("sft", cfg.base_model, str(start), config=config, demos=demos)
            _drop_checkpoints(start)
    return start


def _sft_start_dir(
    out: Path, sft: dict[str, Any], cfg: BenchConfig, demos: list[dict[str, Any]]
) -> tuple[Path, dict[str, Any]]:
    """Where the SFT start of these settings lives (OUT/sft_starts/d{N}_s{SEED}_{digest}), and what
    the digest covers."""
    key = {"config": sft, "base_model": cfg.base_model, "demos": demos}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return out / "sft_starts" / f"d{len(demos)}_s{sft['seed']}_{digest}", key


def _link_stage(start: Path, stage: Path) -> None:
    """Put a finished SFT start where RLHF looks for its SFT stage (OUT/runs/NAME/sft), as hard links:
    the stage is then skipped as done, and the job's numbers are those of training it in place."""
    if (stage / "policy" / "config.json").is_file():
        return
    shutil.rmtree(stage, ignore_errors=True)  # an interrupted attempt of its own
    tmp = stage.with_name(f"{stage.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(start / "policy", tmp / "policy", copy_function=_link_or_copy)
    shutil.copy2(start / "metrics.jsonl", tmp / "metrics.jsonl")
    tmp.rename(stage)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _resumable(values: dict[str, Any], out: Path, units: int, staged: bool = False) -> dict[str, Any]:
    """`values` with a checkpoint every 1/RESUME_POINTS of the run, resumed from if one is there: a
    job killed at the end of a session loses at most that share of a stage. A `staged` method (RLHF)
    resumes stage by stage, so it is always asked to resume. Checkpointing does not change what a run computes
    (tests/lm/test_resume.py), so the saved config, and the reuse of finished runs, ignore it."""
    from aihf.lm.runtime import checkpoint_dirs

    resume = staged or bool(checkpoint_dirs(out))
    every = max(1, units // RESUME_POINTS)
    return values | {"save_steps": every, "save_total_limit": 1, "resume_from_checkpoint": resume or None}


def _claim(run_dir: Path, record: dict[str, Any], cfg: BenchConfig) -> bool:
    """Mark `run_dir` as this job's (OUT/runs/NAME/job.json); True when an interrupted attempt of the
    same job and settings left checkpoints to resume from. Anything else there is cleared first, so a
    run never resumes from another setting's checkpoints or reuses its stages; so is a checkpoint the
    kill cut short (TRL writes in place), so that each stage resumes from its newest complete one."""
    mine = {"config": record["config"], "evaluation": _eval_settings(cfg)}
    path = run_dir / "job.json"
    same = path.is_file() and json.loads(path.read_text()) == mine
    if not same and run_dir.exists():
        shutil.rmtree(run_dir)
    write_json(path, mine)
    return _prune_cut_checkpoints(run_dir) and same


def _prune_cut_checkpoints(root: Path) -> bool:
    """Delete every checkpoint under `root` that a kill cut short (TRL writes in place); True when a
    complete one is left to resume from."""
    from aihf import checkpoints

    found = sorted(p for p in root.rglob("checkpoints/checkpoint-*") if p.is_dir())
    checkpoints.prune(p for p in found if not checkpoints.is_complete(p))
    return any(p.is_dir() for p in found)


def _drop_checkpoints(root: Path) -> None:
    """Delete every stage's checkpoints under `root`: a finished run keeps none."""
    for stage_checkpoints in sorted(root.rglob("checkpoints")):
        shutil.rmtree(stage_checkpoints, ignore_errors=True)


def _eval_settings(cfg: BenchConfig) -> dict[str, Any]:
    return {
        "n_test": cfg.n_test,
        "gold": cfg.gold,
        "sampling": asdict(cfg.sampling),
        "base_model": cfg.base_model,
        "data_dir": cfg.data_dir,
    }


def _record(job: Job, cfg: BenchConfig) -> dict[str, Any]:
    """The start of a run's eval.json: the job and the trainer config it ran with (with the snapshot
    interval of a gold-vs-steps run)."""
    trainer, _, values = method_config(job.method, cfg, job.seed, job.kl_scale)
    main = (job.demos, job.prefs, job.kl_scale) == (cfg.n_demos, cfg.n_prefs, 1.0)
    main = main and job.method in cfg.methods  # diagnostics keep no snapshots
    if cfg.curve_points and main and job.seed in cfg.curve_seeds:
        units = values["max_iterations"] if TRAINERS[trainer].iterative else values["max_steps"]
        values["snapshot_steps"] = max(1, units // cfg.curve_points)
    return asdict(job) | {"config": values}


def _finished(out: Path, job: Job, cfg: BenchConfig) -> dict[str, Any] | None:
    """The saved record of `job` if it finished with the same training and evaluation settings: its
    OUT/runs/NAME/eval.json, else its copy in `cfg.records`."""
    record = _record(job, cfg)
    paths = [out / "runs" / job.name / "eval.json"]
    paths += [Path(cfg.records) / f"{job.name}.json"] if cfg.records else []
    for path in (p for p in paths if p.is_file()):
        saved = _read_record(path)
        same = saved.get("config") == record["config"] and saved.get("evaluation") == _eval_settings(cfg)
        if same and "metrics" in saved:
            return saved
    return None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: not a JSON job record ({err.msg})") from None


def expected_seconds(out: Path, job: Job, cfg: BenchConfig) -> float | None:
    """How long `job` should take: the longest finished run of its method (OUT/runs and `cfg.records`)
    that ran in one go, among those that kept snapshots as it will (evaluating them takes time) if any
    did; None before any run of its method has finished. The longest, because a run that trains its
    shared SFT start first takes longer than one that finds it."""
    snapshots = bool(_record(job, cfg)["config"].get("snapshot_steps"))
    paths = list((out / "runs").glob("*/eval.json"))
    paths += sorted(Path(cfg.records).glob("*.json")) if cfg.records else []
    alike, other = [], []
    for run in map(_read_record, paths):
        if run.get("method") == job.method and "metrics" in run and not run.get("resumed"):
            same = bool(run["config"].get("snapshot_steps")) == snapshots
            (alike if same else other).append(float(run["seconds"]))
    return max(alike or other) if alike or other else None


def _ends_late(out: Path, job: Job, cfg: BenchConfig, deadline: float) -> bool:
    """True (and says so) when `job` would end after `deadline`: it is left for a later call rather
    than cut short. A job whose length is not known yet starts while any time is left."""
    left, expected = deadline - time.time(), expected_seconds(out, job, cfg)
    if left > (expected or 0.0):
        return False
    guess = f"expected {expected / 60:.0f} min" if expected is not None else "length unknown"
    print(f"[bench] not starting {job.name}: {guess}, {max(left, 0) / 60:.0f} min left", flush=True)
    return True


def _is_main(run: dict[str, Any], cfg: dict[str, Any]) -> bool:
    """A run at the main data sizes and KL weight (not a sweep point); `cfg` as in results.json."""
    return (run["demos"], run["prefs"], run["kl_scale"]) == (cfg["n_demos"], cfg["n_prefs"], 1.0)


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": _sd(values), "n": len(values)}


def _sd(values: list[float]) -> float:
    """Sample standard deviation (ddof=1: seeds are a sample); 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(
    runs: list[dict[str, Any]], cfg: BenchConfig, ref: Any, gold: str, seconds: float
) -> dict[str, Any]:
    """Per method at the main data size: the metrics averaged over seeds (std across seeds beside)."""
    methods: dict[str, dict[str, Any]] = {}
    config = asdict(cfg)
    for method in ["base", *cfg.methods, *cfg.diagnostic_methods]:
        done = [r for r in runs if r["method"] == method and _is_main(r, config) and "metrics" in r]
        failed = [r["error"] for r in runs if r["method"] == method and "error" in r]
        if not done:
            methods[method] = {"error": failed[0] if failed else "not run"}
            continue
        keys = sorted(set.intersection(*(set(r["metrics"]) for r in done)))
        entry: dict[str, Any] = {k: float(np.mean([r["metrics"][k] for r in done])) for k in keys}
        entry["seeds"] = len(done)
        # a resumed run's clock covers its last process only: time the runs that ran in one go
        timed = [r for r in done if not r.get("resumed")] or done
        entry["train_seconds"] = float(np.mean([r["train_seconds"] for r in timed]))
        if len(done) > 1:
            entry["across_seeds_std"] = {k: _sd([r["metrics"][k] for r in done]) for k in keys}
        methods[method] = entry
    sweep = [
        {k: r[k] for k in ("method", "demos", "prefs", "kl_scale", "seed")}
        | r["metrics"]
        | {"beta": r["config"].get("beta")}
        for r in runs
        if "metrics" in r
    ]
    ref_gold = np.asarray(ref.gold)
    return {
        "gold_reward": gold,
        "reference": {"gold_reward_mean": float(ref_gold.mean()), "gold_reward_std": _sd(list(ref_gold))},
        "methods": methods,
        "runs": sweep,
        # gold reward against training steps (paper Fig. 6): method -> seed -> snapshot evaluations
        "curves": {
            m: {str(r["seed"]): r["curve"] for r in runs if r["method"] == m and r.get("curve")}
            for m in cfg.methods
            if any(r["method"] == m and r.get("curve") for r in runs)
        },
        "config": config,
        "seconds": seconds,
        "run_seconds": float(sum(r.get("seconds", 0.0) for r in runs)),
    }


def make_plots(out: Path, results: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, str]:
    """PNG plots (paths relative to `out`): gold reward per method, reward vs KL, learned vs gold,
    and the data-size sweep when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    ok = {m: v for m, v in results["methods"].items() if "gold_reward_mean" in v}
    if not ok:
        return plots
    names = list(ok)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(
        names,
        [ok[m]["gold_reward_mean"] for m in names],
        color=["C0" if "aihf" in m else "C7" for m in names],
    )
    ax.axhline(results["reference"]["gold_reward_mean"], color="k", ls="--", lw=1, label="base policy")
    ax.set_ylabel(f"gold reward ({results['gold_reward']})")
    ax.set_title("Gold reward of each method's policy on the test prompts")
    ax.legend()
    ax.tick_params(axis="x", rotation=30)
    _save_plot(fig, out, plots, "gold_reward")

    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, method in enumerate(cfg["methods"]):
        main = [r for r in results["runs"] if r["method"] == method and _is_main(r, cfg)]
        if main:
            ax.scatter(
                [r["kl_to_ref"] for r in main],
                [r["gold_reward_mean"] for r in main],
                label=method,
                color=f"C{i}",
                marker="o" if "aihf" in method else "x",
            )
        frontier = _frontier(results["runs"], method, cfg)
        if len(frontier) > 1:
            ax.errorbar(
                [f["kl"] for f in frontier],
                [f["gold"] for f in frontier],
                xerr=[f["kl_std"] for f in frontier],
                yerr=[f["gold_std"] for f in frontier],
                color=f"C{i}",
                lw=1,
                capsize=2,
            )
    ax.scatter([0], [results["reference"]["gold_reward_mean"]], color="k", marker="*", s=120, label="base")
    ax.set_xlabel("KL to the base policy (nats per completion)")
    ax.set_ylabel("gold reward")
    ax.set_title("Reward vs KL (lines: beta sweep, mean +- seed std)")
    ax.legend(fontsize=7)
    _save_plot(fig, out, plots, "reward_vs_kl")

    learned = [r for r in runs if r.get("samples") and "learned" in r["samples"][0] and _is_main(r, cfg)]
    if learned:
        fig, axes = plt.subplots(1, len({r["method"] for r in learned}), figsize=(9, 3.5), squeeze=False)
        for ax, method in zip(axes[0], sorted({r["method"] for r in learned})):
            rows = [s for r in learned if r["method"] == method for s in r["samples"]]
            ax.scatter([s["gold"] for s in rows], [s["learned"] for s in rows], s=6, alpha=0.5)
            ax.set_title(f"{method}: learned vs gold")
            ax.set_xlabel("gold reward")
            ax.set_ylabel("learned reward")
        _save_plot(fig, out, plots, "learned_vs_gold")

    if results.get("curves"):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, (method, by_seed) in enumerate(results["curves"].items()):
            for seed, curve in by_seed.items():
                steps = [p["step"] for p in curve]
                ax.plot(
                    steps,
                    [p["gold_reward_mean"] for p in curve],
                    marker="o",
                    color=f"C{i}",
                    label=f"{method} (seed {seed})",
                )
        ax.axhline(results["reference"]["gold_reward_mean"], color="k", ls="--", lw=1, label="base policy")
        ax.set_xlabel("training units (optimiser steps; iterations for AIHF / RLHF's RL stage)")
        ax.set_ylabel("gold reward")
        ax.set_title("Gold reward of the policy snapshots")
        ax.legend(fontsize=7)
        _save_plot(fig, out, plots, "gold_vs_steps")

    sweeps = [(axis, _size_sweep(results["runs"], cfg, axis)) for axis in ("prefs", "demos")]
    sweeps = [(axis, table) for axis, table in sweeps if table]
    if sweeps:
        fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4), squeeze=False)
        for ax, (axis, table) in zip(axes[0], sweeps):
            for i, (method, points) in enumerate(table.items()):
                sizes = sorted(points)
                ax.plot(sizes, [points[n] for n in sizes], marker="o", color=f"C{i}", label=method)
            fixed = "demonstrations" if axis == "prefs" else "preference pairs"
            ax.set_xlabel(f"{'preference pairs' if axis == 'prefs' else 'demonstrations'} ({fixed} fixed)")
            ax.set_ylabel("gold reward")
            ax.legend()
        axes[0][0].set_title("Data-size sweeps")
        _save_plot(fig, out, plots, "size_sweep")
    return plots


def _save_plot(fig: Any, out: Path, plots: dict[str, str], key: str) -> None:
    """Lay out, write OUT/<key>.png, record it in `plots` and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    plots[key] = f"{key}.png"
    fig.savefig(out / plots[key], dpi=120)
    plt.close(fig)


def _sweep_seeds(cfg: dict[str, Any]) -> list[int]:
    return cfg["sweep_seeds"] if cfg["sweep_seeds"] is not None else cfg["seeds"]


def _frontier(rows: list[dict[str, Any]], method: str, cfg: dict[str, Any]) -> list[dict[str, float]]:
    """The method's frontier at the main data sizes: per KL weight beta, gold reward and KL to the base
    averaged over the sweep seeds (with their std across seeds), in increasing beta."""
    by_beta: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        main_data = (r["demos"], r["prefs"]) == (cfg["n_demos"], cfg["n_prefs"])
        if r["method"] == method and main_data and r["seed"] in _sweep_seeds(cfg) and r["beta"] is not None:
            by_beta.setdefault(r["beta"], []).append(r)
    points = []
    for beta, runs in sorted(by_beta.items()):
        gold, kl = [r["gold_reward_mean"] for r in runs], [r["kl_to_ref"] for r in runs]
        points.append(
            {"beta": beta, "gold": float(np.mean(gold)), "gold_std": _sd(gold)}
            | {"kl": float(np.mean(kl)), "kl_std": _sd(kl), "n": len(runs)}
        )
    return points


def _size_sweep(rows: list[dict[str, Any]], cfg: dict[str, Any], axis: str) -> dict[str, dict[int, float]]:
    """method -> {size: gold reward averaged over the sweep seeds} along `axis` ("prefs" or "demos")."""
    other = "demos" if axis == "prefs" else "prefs"
    if not cfg["pref_sizes" if axis == "prefs" else "demo_sizes"]:
        return {}
    table: dict[str, dict[int, float]] = {}
    for method in cfg["sweep_methods"]:
        points: dict[int, list[float]] = {}
        for r in rows:
            if (
                r["method"] == method
                and r["kl_scale"] == 1.0
                and r[other] == cfg[f"n_{other}"]
                and r["seed"] in _sweep_seeds(cfg)
            ):
                points.setdefault(r[axis], []).append(r["gold_reward_mean"])
        if len(points) > 1:
            table[method] = {n: float(np.mean(v)) for n, v in points.items()}
    return table


def pair_verdict(a: str, ea: dict[str, Any], b: str, eb: dict[str, Any]) -> tuple[float, float, str]:
    """(difference, its standard error, verdict) of two methods' seed-mean gold rewards: the rule the
    protocols fix before their runs (a difference beyond 2 s.e. decides; one seed decides nothing)."""
    diff = ea["gold_reward_mean"] - eb["gold_reward_mean"]
    if min(ea["seeds"], eb["seeds"]) < 2:
        return diff, float("nan"), "no verdict (fewer than 2 seeds)"
    spread = [e.get("across_seeds_std", {}).get("gold_reward_mean", 0.0) ** 2 / e["seeds"] for e in (ea, eb)]
    se = float(np.sqrt(sum(spread)))
    if abs(diff) > 2 * se:
        return diff, se, f"{a if diff > 0 else b} beats {b if diff > 0 else a}"
    return diff, se, "tie at this budget"


def _fmt(entry: dict[str, Any], key: str, digits: int = 3) -> str:
    return _number(entry.get(key), digits)


def _number(value: float | None, digits: int = 3) -> str:
    """`value` to `digits` decimals, or "–" where it is missing or NaN (e.g. a spread of one seed)."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def render_report(results: dict[str, Any], plots: dict[str, str], data_dir: Path) -> str:
    cfg = results["config"]
    lines = [
        f"Gold reward: `{results['gold_reward']}`. Base policy on the test prompts: "
        f"{results['reference']['gold_reward_mean']:.3f} +- {results['reference']['gold_reward_std']:.3f}. "
        f"{cfg['n_test']} test prompts, {cfg['n_demos']} demonstrations, {cfg['n_prefs']} preference pairs, "
        f"seeds {cfg['seeds']}. {len(results['runs']) - 1} runs; training + evaluation summed over runs: "
        f"{results['run_seconds'] / 60:.1f} min; this invocation: {results['seconds'] / 60:.1f} min wall "
        "(finished runs are reused; parallel workers overlap runs). "
        "Gold reward: mean +- std over samples (standard error), averaged over seeds; "
        "seed std: std of the per-seed means. train s: seed mean of the training time (of the seeds that "
        "ran in one go, where any did). A diagnostic was added after seeing a result, to explain it, "
        "and enters no verdict.",
        "",
        "| method | seeds | gold reward (mean +- std, s.e.) | seed std | KL to base | win rate vs base "
        "| learned-reward acc. | learned-gold Spearman (own samples / base samples) | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    diagnostic = set(cfg.get("diagnostic_methods", []))
    for method, e in results["methods"].items():
        label = f"{method} (diagnostic)" if method in diagnostic else method
        if "error" in e:
            state = "not run yet" if e["error"] == "not run" else f"failed: {e['error'][:80]}"
            lines.append(f"| {label} | 0 | {state} | | | | | | |")
            continue
        cells = [
            label,
            str(e.get("seeds", 1)),
            f"{_fmt(e, 'gold_reward_mean')} +- {_fmt(e, 'gold_reward_std')} ({_fmt(e, 'gold_reward_sem')})",
            _fmt(e.get("across_seeds_std", {}), "gold_reward_mean"),
            _fmt(e, "kl_to_ref", 2),
            _fmt(e, "win_rate", 2),
            _fmt(e, "reward_accuracy", 2),
            f"{_fmt(e, 'learned_gold_spearman', 2)} / {_fmt(e, 'common_learned_gold_spearman', 2)}",
            f"{e['train_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Pairs (AIHF variant vs its baseline), gold reward difference of the seed means and its standard "
        "error (Welch, ddof = 1 seed spreads); a pair is decided only beyond twice the standard error:",
        "",
    ]
    for a, b in PAIRS:
        ea, eb = results["methods"].get(a, {}), results["methods"].get(b, {})
        if "gold_reward_mean" in ea and "gold_reward_mean" in eb:
            diff, se, verdict = pair_verdict(a, ea, b, eb)
            verdict = "a diagnostic: no verdict" if a in diagnostic else verdict
            kl = f"KL {ea['kl_to_ref']:.2f} vs {eb['kl_to_ref']:.2f}"
            seeds = f"{ea['seeds']} vs {eb['seeds']} seeds"
            if min(ea["seeds"], eb["seeds"]) < len(cfg["seeds"]):
                seeds += f", provisional until both have {len(cfg['seeds'])}"
            lines.append(f"- {a} vs {b}: {diff:+.3f} (s.e. {_number(se)}): {verdict}; {kl} ({seeds})")
    for axis, title in (("prefs", "Preference pairs varied"), ("demos", "Demonstrations varied")):
        table = _size_sweep(results["runs"], cfg, axis)
        if table:
            sizes = sorted({n for points in table.values() for n in points})
            fixed = f"{cfg['n_demos']} demonstrations" if axis == "prefs" else f"{cfg['n_prefs']} pairs"
            lines += ["", f"{title} ({fixed}; gold reward, seeds {_sweep_seeds(cfg)}):", ""]
            lines += [
                "| method | " + " | ".join(str(n) for n in sizes) + " |",
                "| --- |" + " --- |" * len(sizes),
            ]
            for method, points in table.items():
                lines.append(f"| {method} | " + " | ".join(_fmt(points, n) for n in sizes) + " |")
    if cfg["kl_scales"]:
        lines += ["", f"Reward-vs-KL frontier (KL weight beta varied; seeds {_sweep_seeds(cfg)}):", ""]
        lines += ["| method | beta | gold reward (seed std) | KL to base (seed std) | seeds |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for method in cfg["sweep_methods"]:
            for f in _frontier(results["runs"], method, cfg):
                lines.append(
                    f"| {method} | {f['beta']:g} | {f['gold']:.3f} ({f['gold_std']:.3f}) "
                    f"| {f['kl']:.1f} ({f['kl_std']:.1f}) | {f['n']} |"
                )
    if results.get("curves"):
        lines += [
            "",
            "Gold reward (KL to base) of the policy snapshots against training units (paper Fig. 6):",
            "",
        ]
        for method, by_seed in results["curves"].items():
            for seed, curve in by_seed.items():
                points = ", ".join(
                    f"{p['step']}: {p['gold_reward_mean']:.3f} ({p['kl_to_ref']:.1f})" for p in curve
                )
                lines.append(f"- {method}, seed {seed}: {points}")
    quality = data_dir / "quality.md"
    if quality.is_file():
        lines += [
            "",
            "Training data quality (gold reward, the paper's Table 3):",
            "",
            quality.read_text().strip(),
        ]
    for title, key in (
        ("Gold reward per method", "gold_reward"),
        ("Reward vs KL", "reward_vs_kl"),
        ("Learned reward vs gold reward on the policy's samples", "learned_vs_gold"),
        ("Data-size sweep", "size_sweep"),
        ("Gold reward against training steps", "gold_vs_steps"),
    ):
        if key in plots:
            lines += ["", f"![{title}]({plots[key]})"]
    return "\n".join(lines) + "\n"
