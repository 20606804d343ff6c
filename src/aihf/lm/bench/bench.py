"""The LM benchmark: every method trained on the same generated data, evaluated under the gold reward.

Each job (a method, its data sizes and KL scale, a seed) goes through `aihf.lm.train.run_training`,
then `aihf.lm.evaluation` scores its policy on the test prompts (gold reward, KL to the base model,
win rate against it) and, for methods that learn a reward, that reward's accuracy on held-out
preferences and its correlation with the gold on the policy's own samples (the paper's Fig. 8).

The job queue, the store of records and the pair tests are `aihf.experiments`'; this module supplies
the jobs (`BenchConfig.jobs`) and `run_job`. Which policy a method starts from, its budget and its data
are its registry entry's (`aihf.lm.methods`): the baselines that need a starting policy (DPO, IPO, RPO)
start from the SFT model trained on the demonstrations, as in the paper's IMDb runs; RLHF's SFT stage is
that same run; the AIHF variants start from the base policy. Presets are protocol files
(configs/lm/bench_*.yaml); the report is `aihf.lm.bench.report`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from aihf.errors import InputError
from aihf.experiments import queue
from aihf.experiments.jobs import Job
from aihf.experiments.protocol import read_protocol
from aihf.experiments.store import Store
from aihf.flags import canonical
from aihf.io import write_json, write_text
from aihf.lm.bench.corpus import load_prompts
from aihf.lm.bench.datagen import GENERATED_DIR, SMOLLM2_DATA_DIR, SMOLLM2_V2_DATA_DIR
from aihf.lm.bench.pretrain import BASE_MODEL_DIR
from aihf.lm.bench.report import PAIRS, make_plots, render_report, summarise
from aihf.lm.bench.variants import COLUMNS, read_rows
from aihf.lm.config import RENAMES, AIHFConfig, LMConfig
from aihf.lm.evaluation import Samples, SamplingConfig, evaluate, load_model, reference_samples
from aihf.lm.gold import gold_name, gold_spec, load_gold_reward
from aihf.lm.methods import METHODS, VARIANTS, Budget, Variant
from aihf.lm.modeling import is_saved_model
from aihf.lm.pretrained import MODELS

# The protocol files of `--preset` (configs/protocols/): each with the overrides of its --quick run.
PROTOCOL_DIR = Path(__file__).resolve().parents[4] / "configs" / "protocols"
PRESETS = {"tiny": "lm_tiny.yaml", "smollm2": "lm_smollm2.yaml"}
# Shipped directories a protocol names by key (`data_dir: smollm2`, `base_model: tiny`).
SHIPPED_DATA = {"tiny": GENERATED_DIR, "smollm2": SMOLLM2_DATA_DIR, "smollm2-v2": SMOLLM2_V2_DATA_DIR}
SHIPPED_DATA |= {
    f"smollm2-v2/{v}": SMOLLM2_V2_DATA_DIR / "variants" / v for v in ("scarce", "noisy", "partial")
}

# Settings of the tiny replica (a 1M-parameter model trains at larger learning rates than the 1e-5
# default), in three families: `common` to every trainer, `rl` for the methods that sample while they
# train (the registry's `family`), `offline` for those trained on the fixed data sets.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "common": {"max_length": 64, "max_prompt_length": 16, "report_to": "none", "use_cpu": True}
    | {"logging_steps": 10},
    "rl": {"max_completion_length": 24, "num_generations": 4, "prompt_batch_size": 8, "beta": 0.05}
    | {
        "learning_rate": 1e-4,
        "policy_learning_rate": 5e-4,
        "reward_learning_rate": 3e-4,
        "per_device_train_batch_size": 16,
    },
    "offline": {"learning_rate": 1e-4, "per_device_train_batch_size": 16},
}
# Each method's own settings on top of its family's: the pairwise losses' KL weight, stated (not left
# to the config classes' defaults, which differ: AIHFConfig 0.05, DirectAIHFConfig 0.1).
TINY_METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    m: {"beta": 0.1} for m in ("direct-aihf", "dpo", "ipo", "rpo", "orpo")
}
TINY_METHODS = ["aihf", "rlhf", "aihf-warm", "aihf-sft", "direct-aihf", "dpo", "ipo", "self-play-aihf"]
TINY_METHODS += ["spin", "sft"]
# Checkpoints per stage of a benchmark job (`_resumable`): what a job killed mid-way loses at most.
RESUME_POINTS = 8


@dataclass
class ProtocolVariant:
    """A protocol's own variant of a registered method: its start, its reward start and its settings
    (e.g. Direct AIHF at alpha 0.3), named in `methods` like a registry variant."""

    method: str
    start: Literal["base", "sft"] = "base"
    warm_reward: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    """A benchmark protocol: what runs (methods, seeds, sweeps), on what, with which budget.

    The defaults are the tiny replica's quick run; the presets are protocol files with these fields.
    """

    quick: bool = True
    methods: list[str] = field(default_factory=lambda: list(TINY_METHODS))
    settings: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(TINY_SETTINGS))
    method_settings: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(TINY_METHOD_SETTINGS))
    variants: dict[str, ProtocolVariant] = field(default_factory=dict)  # besides the registry's VARIANTS
    seeds: list[int] = field(default_factory=lambda: [0])
    n_demos: int = 1000
    n_prefs: int = 1000
    pref_sizes: list[int] = field(default_factory=list)  # sweep: preference pairs, demonstrations fixed
    demo_sizes: list[int] = field(default_factory=list)  # sweep: demonstrations, preference pairs fixed
    kl_scales: list[float] = field(default_factory=list)  # frontier: each method's beta times these
    sweep_methods: list[str] = field(default_factory=lambda: ["aihf", "rlhf", "direct-aihf", "dpo"])
    # the claims: (AIHF variant, its baseline), tested on the main runs' per-seed gold (Holm over them)
    pairs: list[list[str]] = field(default_factory=lambda: [list(p) for p in PAIRS])
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
    # what a stated AIHF `alpha` means: "paper" (the demonstration term weighs alpha / beta; a beta
    # sweep keeps alpha's meaning) or "folded" (it weighs alpha, as the v1 protocols ran: their alpha a
    # at beta b is the paper's a * b, which is what the trainer gets). A job spec records "paper"; a
    # record without the key ran folded, so the v1 records keep matching the v1 protocol files.
    alpha_convention: Literal["paper", "folded"] = "paper"
    # matched-KL reading (nats): pairs are compared where both methods' snapshot paths reach these; a
    # run's KL is known only once it ran, so a grid point outside every run's range stops the report
    kl_grid: list[float] = field(default_factory=list)
    # fields whose values await the pilot on the tuning seeds: until the list is empty only those
    # seeds may run (the final runs are made with the values the pilot chose, committed first)
    pending: list[str] = field(default_factory=list)
    tuning_seeds: list[int] = field(default_factory=list)

    @classmethod
    def preset(cls, name: str, quick: bool = False, model_dir: str | Path | None = None) -> BenchConfig:
        """The protocol of `--preset NAME` (`quick`: its quick run; `model_dir`: another base model)."""
        return read_bench_protocol(PROTOCOL_DIR / PRESETS[name], quick, model_dir)

    def variant(self, name: str, where: str = "method") -> Variant:
        """A method of this protocol: one of its `variants`, else the registry's."""
        if name in self.variants:
            own = self.variants[name]
            if own.method not in METHODS:
                raise InputError(f"{where}: variant {name!r}: unknown method {own.method!r}")
            return Variant(own.method, own.start, own.warm_reward)
        if name not in VARIANTS:
            known = ", ".join([*VARIANTS, *self.variants])
            raise InputError(f"{where}: unknown method {name!r}: expected one of {known}")
        return VARIANTS[name]

    def budget(self) -> Budget:
        return Budget(
            self.steps,
            self.iterations,
            self.rlhf_reward_steps,
            self.spin_iterations,
            self.sampling.max_new_tokens,
        )

    def job(self, method: str, demos: int, prefs: int, kl_scale: float, seed: int) -> Job:
        """The job of `method` at these data sizes, KL scale and seed, with its resolved spec."""
        name = f"{method}_d{demos}_p{prefs}_k{kl_scale:g}_s{seed}"
        settings = (("demos", demos), ("prefs", prefs), ("kl_scale", kl_scale))
        spec = {
            "config": _job_config(self, method, demos, prefs, kl_scale, seed),
            "evaluation": eval_settings(self),
        }
        if self.alpha_convention != "folded":
            spec["alpha_convention"] = self.alpha_convention
        if method in self.variants:  # its start is part of what it computes, beside the trainer config
            own = self.variants[method]
            spec["variant"] = {"method": own.method, "start": own.start, "warm_reward": own.warm_reward}
        return Job(method, seed, settings, name, spec)

    def jobs(self) -> list[Job]:
        """Every (method, demonstrations, preference pairs, KL scale, seed) to train, main runs first."""
        seeds = self.sweep_seeds if self.sweep_seeds is not None else self.seeds
        main = [self.job(m, self.n_demos, self.n_prefs, 1.0, s) for m in self.methods for s in self.seeds]
        main += [
            self.job(m, self.n_demos, self.n_prefs, 1.0, s) for m in self.diagnostic_methods for s in seeds
        ]
        methods = [m for m in self.sweep_methods if m in self.methods]
        sweep = [
            self.job(m, self.n_demos, n, 1.0, s) for n in self.pref_sizes for m in methods for s in seeds
        ]
        sweep += [
            self.job(m, n, self.n_prefs, 1.0, s) for n in self.demo_sizes for m in methods for s in seeds
        ]
        sweep += [
            self.job(m, self.n_demos, self.n_prefs, k, s)
            for k in self.kl_scales
            for m in methods
            for s in seeds
        ]
        return main + [job for job in sweep if job not in main]


@dataclass
class _ProtocolFile(BenchConfig):
    """A protocol file's fields: BenchConfig's, the model by name, and the overrides of its quick run."""

    model: str | None = None  # a model of `aihf lm get-model`: base_model and `{model}` in gold
    quick_run: dict[str, Any] = field(default_factory=dict)


def read_bench_protocol(
    path: str | Path, quick: bool = False, model_dir: str | Path | None = None
) -> BenchConfig:
    """A BenchConfig from a protocol file; every field and method checked, named by file and field.
    `model_dir` replaces the file's `model` (a directory instead of a model of `aihf lm get-model`)."""
    proto = read_protocol(path, _ProtocolFile)
    if quick:
        proto = read_protocol(path, _ProtocolFile, {"quick": True, **proto.quick_run})
    values = {f.name: getattr(proto, f.name) for f in fields(BenchConfig)}
    if model_dir is not None:
        values["base_model"] = str(model_dir)
    elif proto.model is not None:
        from aihf.lm.pretrained import get_model

        values["base_model"] = str(get_model(proto.model))
    values["gold"] = proto.gold.format(model=values["base_model"])
    values["data_dir"] = str(SHIPPED_DATA.get(proto.data_dir, proto.data_dir))
    cfg = BenchConfig(**values)
    for name in ("methods", "diagnostic_methods", "sweep_methods"):
        for method in values[name]:
            cfg.variant(method, f"{path}: field {name!r}")
    for pair in values["pairs"]:
        if len(pair) != 2:
            raise InputError(f"{path}: field 'pairs': {pair!r}: expected [method, baseline]")
        for method in pair:
            cfg.variant(method, f"{path}: field 'pairs'")
    for name in ("method_settings", "overrides", "variants"):
        for method in values[name]:
            cfg.variant(method, f"{path}: field {name!r}")
    grid = values["kl_grid"]
    if any(k <= 0 for k in grid) or grid != sorted(set(grid)):
        raise InputError(f"{path}: field 'kl_grid' = {grid}: expected increasing KL values above 0 (nats)")
    known = {f.name for f in fields(_ProtocolFile)}
    for name in values["pending"]:
        if name not in known:
            raise InputError(f"{path}: field 'pending': {name!r} is not a protocol field")
    return cfg


def check_pending(cfg: BenchConfig) -> None:
    """While fields await the pilot, only the tuning seeds run: one line naming them, else nothing."""
    if not cfg.pending:
        return
    seeds = sorted({job.seed for job in cfg.jobs()} - set(cfg.tuning_seeds))
    if seeds:
        tuning = " ".join(map(str, cfg.tuning_seeds))
        raise InputError(
            f"protocol field 'pending': {', '.join(cfg.pending)} await the pilot on the tuning seeds "
            f"{cfg.tuning_seeds}, so seeds {seeds} may not run yet (--seeds {tuning})"
        )


def check_kl_grid(cfg: BenchConfig, runs: list[dict[str, Any]]) -> None:
    """Every point of `kl_grid` inside at least one finished run's KL range (its snapshots and its
    final policy): checked when the report is written, the first time the runs' KL is known."""
    spans = []
    for run in runs:
        if "metrics" in run and run.get("method") != "base":
            kls = [run["metrics"]["kl_to_ref"], *(p["kl_to_ref"] for p in run.get("curve") or [])]
            spans.append((min(kls), max(kls)))
    if not cfg.kl_grid or not spans:
        return
    for point in cfg.kl_grid:
        if not any(lo <= point <= hi for lo, hi in spans):
            lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
            raise InputError(
                f"protocol field 'kl_grid': {point:g} nats is outside every finished run's KL range "
                f"(runs span {lo:.3g}-{hi:.3g} nats); set the grid from the pilot's curves"
            )


def method_config(
    method: str, cfg: BenchConfig, seed: int, kl_scale: float = 1.0
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """(registry trainer, the data it takes, its config) of a benchmark method: the common settings,
    its family's, its budget, its own (so a protocol sets e.g. the policy:reward update ratio per
    method), the seed, the overrides, beta times `kl_scale`. A method with a KL weight always states
    it: the protocol's, else its config class's default (the one source of defaults)."""
    variant = cfg.variant(method)
    trainer = METHODS[variant.method]
    values = cfg.settings["common"] | cfg.settings[trainer.family]
    values |= trainer.budget(cfg.budget())
    if method in cfg.variants:  # a protocol's variant: its method's settings, then its own
        values |= cfg.method_settings.get(variant.method, {}) | cfg.variants[method].settings
    values |= cfg.method_settings.get(method, {})
    values |= {"seed": seed} | cfg.overrides.get(method, {})
    default = trainer.config()
    if hasattr(default, "beta"):
        values["beta"] = values.get("beta", default.beta) * kl_scale
    return trainer.name, tuple(sorted(trainer.required + trainer.optional)), values


# AIHFConfig's alpha default while the trainer ran the folded form (weight alpha on E_D[R] - E_pi[R])
FOLDED_ALPHA = 1.0


def trainer_values(cfg: BenchConfig, method: str, values: dict[str, Any]) -> dict[str, Any]:
    """The config the trainer gets for a job's config `values`: under a folded-convention protocol
    (v1), an AIHF method's alpha a at beta b becomes the paper's alpha a * b, whose demonstration
    weight alpha / beta is v1's a; otherwise `values` as they are."""
    config = METHODS[cfg.variant(method).method].config()
    if cfg.alpha_convention == "paper" or not isinstance(config, AIHFConfig):
        return values
    beta = values.get("beta", config.beta)
    return values | {"alpha": values.get("alpha", FOLDED_ALPHA) * beta}


def _job_config(cfg: BenchConfig, method: str, demos: int, prefs: int, kl_scale: float, seed: int) -> dict:
    """A job's trainer config, with the snapshot interval of a gold-vs-steps run (main runs of the
    curve seeds; diagnostics keep none)."""
    trainer, _, values = method_config(method, cfg, seed, kl_scale)
    main = (demos, prefs, kl_scale) == (cfg.n_demos, cfg.n_prefs, 1.0) and method in cfg.methods
    if cfg.curve_points and main and seed in cfg.curve_seeds:
        units = values["max_iterations"] if METHODS[trainer].iterative else values["max_steps"]
        values["snapshot_steps"] = max(1, units // cfg.curve_points)
    return values


def policy_updates(cfg: BenchConfig, method: str, values: dict[str, Any]) -> int:
    """A job's optimiser steps on the policy (SFT stages and starts included): the count that a pair of
    methods must match (docs/lm_protocol_v2.md)."""
    from aihf.lm.methods import build_config

    variant = cfg.variant(method)
    config = build_config(variant.method, values, f"method {method}")
    start = _sft_method(cfg, values["seed"])["max_steps"] if variant.start == "sft" else 0
    return start + METHODS[variant.method].policy_updates(config)


def eval_settings(cfg: BenchConfig) -> dict[str, Any]:
    """What a job's evaluation depends on (part of its spec, and of the reference cache's)."""
    return {
        "n_test": cfg.n_test,
        "gold": cfg.gold,
        "sampling": asdict(cfg.sampling),
        "base_model": cfg.base_model,
        "data_dir": cfg.data_dir,
    }


def load_bench_gold(spec: str) -> Any:
    """The protocol's gold reward; one that does not load is one line naming the field, before any job."""
    try:
        return load_gold_reward(spec)
    except InputError as err:
        first = " ".join(str(err).split())
        raise InputError(f"protocol field 'gold' = {spec!r}: {first}") from None


def _store(out: Path, cfg: BenchConfig) -> Store:
    records = Path(cfg.records) if cfg.records else None
    return Store(out, "eval.json", records, portable=portable, canonical=canonical_record)


def canonical_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record (or a job.json) with its trainer config under the current key names: the committed
    records were written before `per_device_train_batch_size`, `num_generations`, ... (config.RENAMES)."""
    if not isinstance(record.get("config"), dict):
        return record
    return record | {"config": canonical(record["config"], RENAMES, warn=False)}


# Machine paths in a spec: the package's shipped data and the model cache (`aihf lm get-model`), as
# any checkout or machine writes them, so that committed records are reused from any of them.
_MACHINE_PATHS = [
    (re.compile(r"[^\s:]*/aihf/data/"), "<aihf>/data/"),
    (re.compile(r"[^\s:]*/models/(?=(" + "|".join(map(re.escape, MODELS)) + r")\b)"), "<aihf-cache>/models/"),
]


def portable(value: Any) -> Any:
    """`value` (a record's spec part) with machine paths replaced by their place in the package or
    the model cache; everything else as it is."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str):
        for pattern, replacement in _MACHINE_PATHS:
            value = pattern.sub(replacement, value)
    return value


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
    so far. `deadline` (a `time.time()` value) starts no job expected to end after it
    (`expected_seconds`); the jobs left are returned as `postponed`.
    """
    cfg = cfg or BenchConfig()
    cfg.data_dir, cfg.base_model = str(cfg.data_dir), str(cfg.base_model)
    unknown = sorted(set(cfg.methods + cfg.diagnostic_methods) - set(VARIANTS) - set(cfg.variants))
    if unknown:
        raise InputError(
            f"unknown methods {unknown}: expected some of {', '.join([*VARIANTS, *cfg.variants])}"
        )
    out = Path(out_dir)
    start = time.perf_counter()
    inputs = _Inputs.load(out, cfg)
    jobs, store = cfg.jobs(), _store(out, cfg)
    pending = [job.name for job in jobs if store.finished(job) is None]
    if cfg.shard is None and only is None and not report_only and min(workers, len(pending)) > 1:
        _run_workers(out_dir, cfg, pending, workers, deadline)  # inputs checked above; reference cached
    if only is not None:  # taken one name at a time: a worker's queue is shared with the others
        by_name = {job.name: job for job in jobs}
        selected = (by_name[name] for name in only)
    else:
        selected = queue.select(jobs, cfg.shard)
    outcome = queue.run_queue(
        jobs,
        lambda job: _run_job(job, _record(job), inputs),
        store,
        selected,
        train=not report_only,
        deadline=deadline,
        expected=lambda job: expected_seconds(out, job, cfg),
    )
    if cfg.shard or only is not None:
        shard = list(cfg.shard) if cfg.shard else None
        return {
            "shard": shard,
            "runs": len(outcome.records),
            "failed": outcome.failed,
            "postponed": outcome.postponed,
        }

    runs = outcome.records
    for run in runs:  # counted from each record's own config, so records of earlier code get it too
        values = trainer_values(cfg, run["method"], run["config"])
        run["policy_updates"] = policy_updates(cfg, run["method"], values)
    by_name = {job.name: job for job in jobs}
    for run in runs:  # every finished job's record in one place, to commit and reuse (`records`)
        if "metrics" in run:
            store.export(by_name[_name(run)], run, out / "records")
    check_kl_grid(cfg, runs)
    runs.insert(0, _base_run(inputs) | {"policy_updates": 0})  # also a base.json cached before counting
    config = asdict(cfg)
    results = summarise(runs, config, inputs.ref.gold, gold_name(inputs.gold), time.perf_counter() - start)
    try:  # the gold as a spec `load_gold_reward` rebuilds exactly (the built-in golds have one)
        results["gold_spec"] = gold_spec(inputs.gold)
    except InputError:
        results["gold_spec"] = None
    plots = make_plots(out, results, runs)
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_report(results, plots, Path(cfg.data_dir)))
    return results | {"failed": outcome.failed, "postponed": outcome.postponed}


def _name(run: dict[str, Any]) -> str:
    return f"{run['method']}_d{run['demos']}_p{run['prefs']}_k{run['kl_scale']:g}_s{run['seed']}"


def _record(job: Job) -> dict[str, Any]:
    """The start of a run's eval.json: the job and the trainer config it runs with."""
    record = {
        "method": job.method,
        **dict(job.settings),
        "seed": job.seed,
        "config": dict(job.spec["config"]),
    }
    return record | {k: job.spec[k] for k in ("variant", "alpha_convention") if k in job.spec}


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

    @classmethod
    def load(cls, out: Path, cfg: BenchConfig) -> _Inputs:
        data_dir = Path(cfg.data_dir)
        hint = "generate it with `aihf lm generate-data`"
        files = ("demos.jsonl", "prefs.jsonl", "prefs_heldout.jsonl", "prompts.jsonl")
        for name in files:  # every file there first, then every row's shape: one line naming it
            if not (data_dir / name).exists():
                raise InputError(f"{data_dir / name}: missing ({hint})")
        demos, prefs, heldout, rl_prompts = (read_rows(data_dir / name, COLUMNS[name]) for name in files)
        # chat-model data ship their test prompts rendered with the chat template (datagen.render_prompts)
        rendered = data_dir / "test_prompts.jsonl"
        if rendered.is_file():
            rows = read_rows(rendered, COLUMNS[rendered.name])
            test_prompts = [row["prompt"] for row in rows][: cfg.n_test]
        else:
            test_prompts = load_prompts("test", limit=cfg.n_test)
        gold = load_bench_gold(cfg.gold)
        reference, tokenizer = load_model(cfg.base_model)
        cache, settings = out / "reference.json", eval_settings(cfg)
        saved = json.loads(cache.read_text()) if cache.is_file() else {}
        if saved.get("evaluation") == settings:
            ref = Samples(**saved["samples"])
        else:
            ref = reference_samples(reference, tokenizer, test_prompts, gold, cfg.sampling)
            write_json(cache, {"evaluation": settings, "samples": asdict(ref)})
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
        )

    @property
    def reward_init(self) -> Path:
        """The reward model every learned reward starts from, made on first use (SFT and DPO need none)."""
        return init_reward_model(self.cfg.base_model, self.out / "reward_init")

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
    """The domain's `run_job`: train one job (resuming an interrupted attempt), evaluate it, save
    OUT/runs/NAME/eval.json."""
    import torch

    trainer, needs, _ = method_config(job.method, inputs.cfg, job.seed)
    store = _store(inputs.out, inputs.cfg)
    run_dir = store.run_dir(job)
    data = {
        "demos": inputs.demos[: job.get("demos")],
        "prefs": inputs.prefs[: job.get("prefs")],
        "prompts": inputs.rl_prompts,
    }
    record["resumed"] = _claim(store, job)
    t0 = time.perf_counter()
    try:
        torch.manual_seed(job.seed)
        values = trainer_values(inputs.cfg, job.method, record["config"])
        record["train_metrics"] = _train(job.method, values, inputs, run_dir, needs, data)
        record["train_seconds"] = time.perf_counter() - t0
        policy, _ = load_model(run_dir / "policy")
        rm = rm_tok = None
        learned = [o for o in METHODS[trainer].outputs if Path(o).name == "reward_model"]
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
    record["evaluation"] = eval_settings(inputs.cfg)
    store.save(job, record)
    if "metrics" in record:  # finished: its checkpoints were only there to survive a kill
        _drop_checkpoints(run_dir)
    return record


def _base_run(inputs: _Inputs) -> dict[str, Any]:
    """The untrained base policy, evaluated like a method (KL 0 and a win rate near 1/2 calibrate the
    table); cached in OUT/base.json like a job's eval.json."""
    cfg, path = inputs.cfg, inputs.out / "base.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("evaluation") == eval_settings(cfg):
        return saved
    base = inputs.evaluate(inputs.reference)
    main = {"demos": cfg.n_demos, "prefs": cfg.n_prefs, "kl_scale": 1.0}
    run = {"method": "base", **main, "seed": 0, "config": {}, "train_seconds": 0.0}
    run |= {"metrics": base.metrics, "samples": base.rows(), "evaluation": eval_settings(cfg)}
    write_json(path, run)
    return run


def _gold_curve(run_dir: Path, inputs: _Inputs, seed: int) -> list[dict[str, float]]:
    """Gold reward and KL of every policy snapshot of a run (none unless it kept snapshots)."""
    from aihf.lm.runtime import snapshot_dirs

    curve = []
    for step, path in snapshot_dirs(run_dir):
        policy, _ = load_model(path)
        metrics = inputs.evaluate(policy, seed=seed)
        keys = ("gold_reward_mean", "gold_reward_sem", "kl_to_ref")  # the s.e. for the plateau rule
        curve.append({"step": step} | {k: metrics.metrics[k] for k in keys})
    return curve


def default_workers() -> int:
    """On CPU, one single-threaded process per idle core (at most 4; `aihf.threads.idle_cores`): the
    small models here train about as fast on one thread as on several, single-threaded runs give the
    same numbers on any machine, and a worker on a core another job holds only takes turns with the
    first. On a GPU, one process."""
    import torch

    from aihf.threads import idle_cores

    return 1 if torch.cuda.is_available() else min(4, idle_cores())


def _run_workers(
    out_dir: str | Path, cfg: BenchConfig, pending: list[str], workers: int, deadline: float | None
) -> None:
    """The pending jobs on one queue that `workers` single-threaded processes take from."""
    queue.run_workers(pending, workers, _worker, (str(out_dir), cfg, deadline))


def _worker(out_dir: str, cfg: BenchConfig, deadline: float | None, names: Iterable[str]) -> None:
    from aihf.threads import limit_threads

    limit_threads(1)  # or the share of the cores that `queue.run_workers` put in the environment
    run_bench(out_dir, cfg, only=names, deadline=deadline)


def _train(
    method: str,
    values: dict[str, Any],
    inputs: _Inputs,
    run_dir: Path,
    needs: tuple[str, ...],
    data: dict[str, list[dict[str, Any]]],
) -> dict[str, float]:
    """One method's training, with its registry starts (an SFT policy, a Bradley-Terry reward) first."""
    from aihf.lm.train import run_training

    cfg = inputs.cfg
    variant = cfg.variant(method)
    trainer = METHODS[variant.method]
    stage = {
        k: v
        for k, v in values.items()
        if k in cfg.settings["common"] or k in ("seed", "per_device_train_batch_size")
    }
    policy_start, reward_start = cfg.base_model, None
    warm_out = run_dir / "warmup"
    if variant.start == "sft":  # the same SFT run as the `sft` method's
        start = _sft_start(inputs.out, _sft_method(cfg, values["seed"]), cfg, data["demos"])
        policy_start = str(start / "policy")
    if trainer.name == "sft" and values == _sft_method(cfg, values["seed"]):  # that run itself: train it once
        start = _sft_start(inputs.out, values, cfg, data["demos"])
        _link_outputs(start, run_dir)
        return _final_metrics(run_dir / "metrics.jsonl")
    if trainer.sft_stage and values.get("sft_steps", 0) > 0:  # its SFT stage, the same run again
        sft = {k: v for k, v in values.items() if k in SFT_STAGE_FIELDS} | {"max_steps": values["sft_steps"]}
        _link_stage(_sft_start(inputs.out, sft, cfg, data["demos"]), run_dir / "sft")
    if variant.warm_reward and not (warm_out / "reward_model" / "config.json").is_file():
        warm = stage | {"max_steps": cfg.rlhf_reward_steps, "learning_rate": values["reward_learning_rate"]}
        warm = _resumable(warm, warm_out, cfg.rlhf_reward_steps)
        run_training(
            "reward", cfg.base_model, str(warm_out), str(inputs.reward_init), config=warm, prefs=data["prefs"]
        )
    if variant.warm_reward:
        reward_start = warm_out / "reward_model"
    units = values["max_iterations"] if trainer.iterative else values["max_steps"]
    metrics = run_training(
        trainer.name,
        policy_start,
        str(run_dir),
        reward_model=str(reward_start or inputs.reward_init) if trainer.needs_reward_model else None,
        config=_resumable(values, run_dir, units, staged=trainer.staged),
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


def _sft_method(cfg: BenchConfig, seed: int) -> dict[str, Any]:
    """The config of the `sft` method's main run (no snapshots): the SFT start of DPO, RPO and the
    variants that start from SFT."""
    return method_config("sft", cfg, seed)[2] | {"max_steps": cfg.steps}


def _final_metrics(log: Path) -> dict[str, float]:
    """The numbers of a run's last metrics line (the trainer's summary: train_loss, train_runtime, ...)."""
    last = json.loads(log.read_text().splitlines()[-1])
    return {k: v for k, v in last.items() if isinstance(v, (int, float))}


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
        if not is_saved_model(start / "policy"):
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
    if is_saved_model(stage / "policy"):
        return
    shutil.rmtree(stage, ignore_errors=True)  # an interrupted attempt of its own
    _link_outputs(start, stage)


def _link_outputs(start: Path, run_dir: Path) -> None:
    """A finished SFT start's policy (hard links) and metrics log as `run_dir`'s own; the policy
    directory appears whole or not at all."""
    if is_saved_model(run_dir / "policy"):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f"policy.tmp-{os.getpid()}"
    for path in (tmp, run_dir / "policy"):  # the rest of an interrupted attempt
        shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(start / "policy", tmp, copy_function=_link_or_copy)
    shutil.copy2(start / "metrics.jsonl", run_dir / "metrics.jsonl")
    tmp.rename(run_dir / "policy")


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


def _claim(store: Store, job: Job) -> bool:
    """Mark the job's run directory as its own (`Store.open_run`); True when an interrupted attempt
    of the same job and settings left checkpoints to resume from. A checkpoint the kill cut short
    (TRL writes in place) is deleted, so that each stage resumes from its newest complete one."""
    same = store.open_run(job)
    return _prune_cut_checkpoints(store.run_dir(job)) and same


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


def expected_seconds(out: Path, job: Job, cfg: BenchConfig) -> float | None:
    """How long `job` should take: the longest finished run of its method (OUT/runs and `cfg.records`)
    that ran in one go, among those that kept snapshots as it will (evaluating them takes time) if any
    did; None before any run of its method has finished. The longest, because a run that trains its
    shared SFT start first takes longer than one that finds it."""
    snapshots = bool(job.spec["config"].get("snapshot_steps"))
    alike, other = [], []
    for run in _store(out, cfg).all_records():
        if run.get("method") == job.method and "metrics" in run and not run.get("resumed"):
            same = bool(run["config"].get("snapshot_steps")) == snapshots
            (alike if same else other).append(float(run["seconds"]))
    return max(alike or other) if alike or other else None
