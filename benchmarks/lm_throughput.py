"""Throughput of the LM trainers against TRL and against the code before the speed-up, on one model.

Every arm runs in its own process (so its peak memory is its own) on the same model, prompts,
samples per prompt and token lengths, with one thread, timed in process CPU seconds (on a GPU: wall
clock), as the median over its timed units after `--warmup` untimed ones:

- `trl_rloo` / `rloo`: one RLOO policy step (sample k answers per prompt, score them with a frozen
  reward model, reference log-probs, one optimiser step): TRL's `RLOOTrainer` against our `PolicyStep`
  (the RL stage of RLHF with one policy step per iteration). Tokens: prompt + completion of every sample.
- `rlhf` / `aihf`: one iteration of `--policy-steps` policy steps, AIHF adding its reward step(s).
- `trl_dpo` / `direct`: one optimiser step of TRL's `DPOTrainer` against Direct AIHF (DPO on P + alpha *
  SFT on D, one fused forward; alpha = 1). Every sequence has the same length, so tokens are exact.
- `aihf_before` / `direct_before`: the AIHF iteration and the Direct AIHF step of the code at
  `--before` (default 4c5508c, the commit before the speed-up), extracted with `git archive` and run
  from this script in a process whose PYTHONPATH points at it.
- `peak`: this machine's float32 matmul rate (one thread), for the fraction of it training reaches.

Our trainers are timed by a `Callback` on the loop (`aihf.lm.loop`); the code at `--before` has no
callbacks, so there `training_step` is called and timed directly: the same work, as the loop does
nothing else between units when no checkpoint or log is due.

Training FLOPs: 6 x parameters x tokens for full fine-tuning; with LoRA the frozen weights get no
gradient, so a trained token costs 4 x parameters (forward, and the backward to the activations),
and a reference (no-grad) token 2 x parameters.

`--profile` instead splits one AIHF iteration into phases (sampling, scoring, policy forward and
backward, reward forward and backward, checkpoint), for the code now and at `--before`.

    python benchmarks/lm_throughput.py --model "$(aihf lm get-model smollm2-135m-instruct)" --lora
    python benchmarks/lm_throughput.py --model "$(aihf lm get-model smollm2-135m-instruct)" --lora --quick
    python benchmarks/lm_throughput.py --model "$(aihf lm get-model smollm2-135m-instruct)" --lora --profile

The last lines are `name=value` ratios: rloo_vs_trl_rloo (goal >= 1), aihf_vs_rlhf_iteration (<= 1.3),
direct_vs_trl_dpo (>= 1), flops_fraction, speedup_aihf_iteration and speedup_direct_step (>= 1.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
ARMS = ("peak", "trl_rloo", "rloo", "rlhf", "aihf", "aihf_before", "trl_dpo", "direct", "direct_before")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def clock() -> float:
    """Wall-clock seconds on a GPU; on CPU, this process's CPU seconds (one thread), so the other jobs of a
    shared machine do not distort the comparison."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def fixed_length_text(tokenizer: Any, n_tokens: int, rng: random.Random) -> str:
    """A string of exactly `n_tokens` tokens (single-token words drawn from the vocabulary)."""
    words = [w for w in tokenizer.get_vocab() if w.startswith("Ġ") and w[1:].isalpha()]
    while True:
        text = "".join(tokenizer.convert_tokens_to_string([rng.choice(words)]) for _ in range(n_tokens))
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens:
            return text


def make_data(tokenizer: Any, n: int, prompt_len: int, answer_len: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(0)
    prefs, demos = [], []
    for _ in range(n):
        prompt = fixed_length_text(tokenizer, prompt_len, rng)
        answers = [fixed_length_text(tokenizer, answer_len - 1, rng) for _ in range(3)]  # + EOS
        prefs.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1]})
        demos.append({"prompt": prompt, "completion": answers[2]})
    return prefs, demos


# fields renamed to TRL's names after the `--before` commit: its configs take the old ones
OLD_NAMES = {
    "per_device_train_batch_size": "batch_size",
    "num_generations": "num_samples",
    "max_completion_length": "max_new_tokens",
    "use_cpu": "cpu",
}


def make_config(cls: Any, **values: Any) -> Any:
    """`cls(**values)` under the field names of the code that runs (now, or at `--before`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k if k in names else OLD_NAMES.get(k, k): v for k, v in values.items()})


def lora_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0} if args.lora else {}


def trl_peft(args: argparse.Namespace) -> Any:
    if not args.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"
    )


def trl_step_clock() -> Any:
    """A TrainerCallback keeping each optimiser step's (seconds, tokens seen so far)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.units: list[tuple[float, int]] = []
            self.start = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = clock()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.units.append((clock() - self.start, state.num_input_tokens_seen))

    return StepClock()


def trl_units(step_clock: Any) -> list[tuple[float, float]]:
    """(seconds, tokens) per step from the clock's (seconds, tokens seen so far)."""
    seen = [0] + [tokens for _, tokens in step_clock.units]
    return [(s, b - a) for (s, _), a, b in zip(step_clock.units, seen, seen[1:])]


def trl_common(args: argparse.Namespace, out: Path, steps: int) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "max_steps": steps,
        "learning_rate": 1e-5,
        "logging_steps": 10**6,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
        "seed": 0,
        # TRL's defaults are bf16 and activation checkpointing; ours train in float32 without it
        "bf16": False,
        "activation_checkpointing": False,
    }


def run_trl_rloo(model_dir: str, prefs: list[dict], args: argparse.Namespace, out: Path) -> list:
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    from aihf.lm.modeling import load_causal_lm, load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    config = RLOOConfig(
        per_device_train_batch_size=args.prompts * args.num_samples,  # completions per step
        num_generations=args.num_samples,
        max_completion_length=args.answer_len,
        beta=args.beta,
        temperature=1.0,
        top_p=1.0,
        disable_dropout=True,
        **trl_common(args, out / "trl_rloo", args.warmup + args.steps),
    )
    step_clock = trl_step_clock()
    trainer = RLOOTrainer(
        model=load_causal_lm(model_dir),
        reward_funcs=load_reward_model(model_dir),
        args=config,
        train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in prefs]),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
        callbacks=[step_clock],
        peft_config=trl_peft(args),
    )
    trainer.train()
    return trl_units(step_clock)


def run_trl_dpo(model_dir: str, prefs: list[dict], args: argparse.Namespace, out: Path) -> list:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from aihf.lm.modeling import load_causal_lm, load_tokenizer

    config = DPOConfig(
        per_device_train_batch_size=args.batch_size,
        beta=0.1,
        max_length=args.seq_len,
        **trl_common(args, out / "trl_dpo", args.warmup + args.steps),
    )
    step_clock = trl_step_clock()
    trainer = DPOTrainer(
        model=load_causal_lm(model_dir),
        args=config,
        train_dataset=Dataset.from_list(prefs),
        processing_class=load_tokenizer(model_dir),
        callbacks=[step_clock],
        peft_config=trl_peft(args),
    )
    trainer.train()
    tokens = 2 * args.batch_size * args.seq_len  # fixed-length pairs: no padding
    return [(seconds, tokens) for seconds, _ in trl_units(step_clock)]


def time_units(trainer: Any, units: int, tokens: Any) -> list[tuple[float, float]]:
    """(seconds, tokens) of each of `units` units of one of our trainers; `tokens(metrics)` counts a unit's.

    Timed by a loop callback; the code before the speed-up has none, so there its `training_step`."""
    try:
        from aihf.lm.loop import Callback
    except ImportError:  # the code at --before
        found = []
        for _ in range(units):
            start = clock()
            metrics = trainer.training_step()
            found.append((clock() - start, tokens(metrics)))
            trainer.state.step += 1
        return found

    class UnitClock(Callback):
        def __init__(self) -> None:
            self.units: list[tuple[float, float]] = []
            self.start = 0.0

        def on_step_begin(self, trainer: Any) -> None:
            self.start = clock()

        def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
            self.units.append((clock() - self.start, tokens(metrics)))

    unit_clock = UnitClock()
    trainer.add_callback(unit_clock)
    trainer.train()
    return unit_clock.units


def run_rl(model_dir: str, prefs: list, demos: list, args: argparse.Namespace, out: Path, arm: str) -> list:
    """Our RLOO policy step (`rloo`), or an RLHF (`rlhf`) or AIHF (`aihf`, `aihf_before`) iteration."""
    from aihf.lm.aihf_trainer import AIHFTrainer
    from aihf.lm.config import AIHFConfig
    from aihf.lm.data import prepare_text_data
    from aihf.lm.modeling import load_causal_lm, load_reward_model, load_tokenizer

    learn = arm.startswith("aihf")
    # one untimed unit after the timed ones: an AIHF iteration draws the next one's first policy samples
    # with its agent answers, except the run's last, so the timed units are the steady state
    units = args.warmup + (args.steps if arm == "rloo" else args.iterations) + 1
    tokenizer = load_tokenizer(model_dir)
    config = make_config(
        AIHFConfig,
        output_dir=str(out / arm),
        per_device_train_batch_size=args.prompts,
        prompt_batch_size=args.prompts,
        num_generations=args.num_samples,
        max_completion_length=args.answer_len,
        beta=args.beta,
        policy_steps_per_iteration=1 if arm == "rloo" else args.policy_steps,
        reward_steps_per_iteration=args.reward_steps,
        max_iterations=units,
        max_length=args.seq_len,
        report_to="none",
        **lora_options(args),
    )
    trainer = AIHFTrainer(
        load_causal_lm(model_dir),
        tokenizer,
        config,
        reward_model=load_reward_model(model_dir),
        demos=prepare_text_data(demos, "demos", tokenizer),
        prefs=prepare_text_data(prefs, "prefs", tokenizer),
        train_reward=learn,
        method="aihf" if learn else "rlhf",
    )
    rows = args.prompts * args.num_samples
    timed = time_units(
        trainer, units, lambda m: rows * (args.prompt_len + m.get("policy/completion_length", 0.0))
    )
    return timed[:-1]


def run_direct(model_dir: str, prefs: list, demos: list, args: argparse.Namespace, out: Path) -> list:
    from aihf.lm.config import DirectAIHFConfig
    from aihf.lm.data import prepare_text_data
    from aihf.lm.direct import DirectAIHFTrainer
    from aihf.lm.modeling import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    config = make_config(
        DirectAIHFConfig,
        output_dir=str(out / "direct"),
        alpha=1.0,
        beta=0.1,
        per_device_train_batch_size=args.batch_size,
        max_length=args.seq_len,
        max_steps=args.warmup + args.steps,
        report_to="none",
        **lora_options(args),
    )
    trainer = DirectAIHFTrainer(
        load_causal_lm(model_dir),
        tokenizer,
        config,
        prefs=prepare_text_data(prefs, "prefs", tokenizer),
        demos=prepare_text_data(demos, "demos", tokenizer),
    )
    tokens = 3 * args.batch_size * args.seq_len  # chosen, rejected and a demonstration per row
    return time_units(trainer, config.max_steps, lambda m: tokens)


def matmul_peak(size: int = 2048, repeats: int = 5) -> list[tuple[float, float]]:
    """float32 matmul FLOP rate of one thread: (seconds, FLOPs) per product (FLOPs in the token slot)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    found = []
    for _ in range(repeats):
        start = clock()
        a @ b
        found.append((clock() - start, 2.0 * size**3))
    return found


def run_arm(arm: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One arm in this process: (seconds, tokens) per timed unit, and this process's peak memory."""
    if arm == "peak":
        return {"units": matmul_peak(), "peak_mb": peak_memory_mb(), "params": 0}
    from aihf.lm.modeling import load_tokenizer

    prefs, demos = make_data(load_tokenizer(args.model), 64, args.prompt_len, args.answer_len)
    if arm == "trl_rloo":
        units = run_trl_rloo(args.model, prefs, args, out)
    elif arm == "trl_dpo":
        units = run_trl_dpo(args.model, prefs, args, out)
    elif arm.startswith("direct"):
        units = run_direct(args.model, prefs, demos, args, out)
    else:
        units = run_rl(args.model, prefs, demos, args, out, arm.removesuffix("_before"))
    timed = units[args.warmup :]
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model))
    params = sum(p.numel() for p in base.parameters())
    return {"units": timed, "peak_mb": peak_memory_mb(), "params": params}


def extract_before(commit: str, root: Path) -> Path:
    """The package at `commit` (git archive of src/), for the before arms' PYTHONPATH."""
    root.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root / "src"


def spawn(arm: str, argv: list[str], out: Path, before_src: Path | None, profile: bool = False) -> dict:
    """`run_arm` (or the profile) in a fresh process: its peak memory is its own."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if before_src is not None:
        env["PYTHONPATH"] = str(before_src)
    command = [sys.executable, __file__, *argv, "--arm", arm, "--work", str(out)]
    if profile:
        command.append("--profile")
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"arm {arm} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


# --- the phase profile of one AIHF iteration ----------------------------------------------------------


class PhaseTimer:
    """Exclusive CPU seconds per phase: a wrapped function's time goes to its label, minus the time of
    wrapped functions it calls. Wrapping module functions reads the code before and after alike."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []
        self.totals: dict[str, float] = {}

    def wrap(self, label: Any, fn: Any) -> Any:
        """`label` is a string, or a function of the call's arguments returning one."""

        def timed(*a: Any, **k: Any) -> Any:
            name = label(*a, **k) if callable(label) else label
            now = clock()
            if self.stack:
                outer = self.stack[-1]
                self.totals[outer[0]] = self.totals.get(outer[0], 0.0) + now - outer[1]
            self.stack.append([name, now])
            try:
                return fn(*a, **k)
            finally:
                end = clock()
                name, start = self.stack.pop()
                self.totals[name] = self.totals.get(name, 0.0) + end - start
                if self.stack:
                    self.stack[-1][1] = end

        return timed


def profile_aihf_iteration(args: argparse.Namespace, out: Path) -> dict[str, float]:
    """CPU seconds of each phase of one AIHF iteration (after a warm-up one), checkpoint included; the
    final save of the run lies outside every phase and is not counted."""
    from aihf.lm import aihf_trainer, policy_step, runtime
    from aihf.lm.aihf_trainer import AIHFTrainer
    from aihf.lm.config import AIHFConfig
    from aihf.lm.data import prepare_text_data
    from aihf.lm.modeling import load_causal_lm, load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    prefs, demos = make_data(tokenizer, 64, args.prompt_len, args.answer_len)
    config = make_config(
        AIHFConfig,
        output_dir=str(out / "profile"),
        per_device_train_batch_size=args.prompts,
        prompt_batch_size=args.prompts,
        num_generations=args.num_samples,
        max_completion_length=args.answer_len,
        beta=args.beta,
        policy_steps_per_iteration=args.policy_steps,
        reward_steps_per_iteration=args.reward_steps,
        max_iterations=2,
        max_length=args.seq_len,
        save_steps=1,
        report_to="none",
        **lora_options(args),
    )
    trainer = AIHFTrainer(
        load_causal_lm(args.model),
        tokenizer,
        config,
        reward_model=load_reward_model(args.model),
        demos=prepare_text_data(demos, "demos", tokenizer),
        prefs=prepare_text_data(prefs, "prefs", tokenizer),
    )
    timer, policy = PhaseTimer(), trainer.policy
    trainer.training_step = timer.wrap("other", trainer.training_step)
    trainer.training_step()  # warm-up, untimed
    timer.totals.clear()

    def which(kind: str) -> Any:
        return lambda accelerator, model, *_, **__: f"{'policy' if model is policy else 'reward'} {kind}"

    step = policy_step.PolicyStep
    step.sample = timer.wrap("sampling", step.sample)
    policy_step.completion_logprobs = timer.wrap("policy forward", policy_step.completion_logprobs)
    runtime.backward = timer.wrap(which("backward"), runtime.backward)
    runtime.optimizer_step = timer.wrap(which("backward"), runtime.optimizer_step)
    scorer = aihf_trainer.RewardScorer
    scorer.__call__ = timer.wrap(
        lambda *a, **k: "reward forward" if torch.is_grad_enabled() else "scoring", scorer.__call__
    )
    runtime.save_checkpoint = timer.wrap("checkpoint", runtime.save_checkpoint)
    trainer.state.step = 0
    trainer.config.max_iterations = 1
    trainer.train()
    return timer.totals


PHASES = (
    "sampling",
    "scoring",
    "policy forward",
    "policy backward",
    "reward forward",
    "reward backward",
    "checkpoint",
    "other",
)


def print_profile(argv: list[str], out: Path, before_src: Path, commit: str) -> None:
    now = spawn("profile", argv, out, None, profile=True)
    before = spawn("profile", argv, out, before_src, profile=True)
    total_now, total_before = sum(now.values()), sum(before.values())
    print(f"| phase | before ({commit}), CPU s | after, CPU s | after / before |")
    print("|---|---:|---:|---:|")
    for phase in PHASES:
        a, b = before.get(phase, 0.0), now.get(phase, 0.0)
        print(f"| {phase} | {a:.1f} | {b:.1f} | {b / a if a else float('nan'):.2f} |")
    print(f"| **iteration** | {total_before:.1f} | {total_now:.1f} | {total_now / total_before:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a causal LM directory (reward models start from it)")
    parser.add_argument("--lora", action="store_true", help="LoRA r=16 on all linear layers, every arm")
    parser.add_argument("--quick", action="store_true", help="shorter sequences, one timed unit per arm")
    parser.add_argument("--profile", action="store_true", help="the phase profile of an AIHF iteration")
    parser.add_argument("--before", default="4c5508c", help="the commit the speed-up is measured against")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per policy step")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per Direct AIHF / DPO step")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--answer-len", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (RLOO, DPO, Direct AIHF)")
    parser.add_argument("--iterations", type=int, default=2, help="timed AIHF / RLHF iterations")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--policy-steps", type=int, default=2)
    parser.add_argument("--reward-steps", type=int, default=1)
    parser.add_argument("--arm", choices=(*ARMS, "profile"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.quick:
        args.prompt_len, args.answer_len, args.steps, args.iterations = 16, 16, 1, 1
    args.seq_len = args.prompt_len + args.answer_len
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.arm:  # a child process: one measurement, one JSON line
        out = Path(args.work)
        result = profile_aihf_iteration(args, out) if args.profile else run_arm(args.arm, args, out)
        print(json.dumps(result))
        return
    started = time.perf_counter()
    device = "cuda (wall clock)" if torch.cuda.is_available() else "cpu (1 thread, process CPU time)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        before_src = extract_before(args.before, out / "before")
        print(
            f"device={device} model={args.model}{' + LoRA r=16' if args.lora else ''}; "
            f"{args.prompts} prompts x {args.num_samples} samples per policy step, {args.batch_size} pairs "
            f"per DPO step; prompt {args.prompt_len} + answer {args.answer_len} tokens; before={args.before}"
        )
        if args.profile:
            print_profile(argv, out, before_src, args.before)
            return
        results = {
            arm: spawn(arm, argv, out, before_src if arm.endswith("_before") else None) for arm in ARMS
        }
    report(results, args, time.perf_counter() - started)


def report(results: dict[str, dict], args: argparse.Namespace, wall: float) -> None:
    seconds = {arm: statistics.median(s for s, _ in r["units"]) for arm, r in results.items()}
    speed = {arm: statistics.median(t / s for s, t in r["units"]) for arm, r in results.items()}
    for arm in ARMS[1:]:
        unit = "s/iteration" if arm in ("rlhf", "aihf", "aihf_before") else "s/step"
        print(
            f"{arm:>14}: {seconds[arm]:8.2f} {unit}, {speed[arm]:7.1f} tokens/s, "
            f"peak memory {results[arm]['peak_mb']:.0f} MB"
        )
    peak = speed["peak"]
    params = results["direct"]["params"]
    # Direct AIHF: 3 rows per pair trained (chosen, rejected, demonstration), 2 through the reference
    trained, reference = 3 * args.batch_size * args.seq_len, 2 * args.batch_size * args.seq_len
    per_trained = 4 if args.lora else 6
    flops = (per_trained * params * trained + 2 * params * reference) / seconds["direct"]
    print(f"float32 matmul peak (1 thread): {peak / 1e9:.1f} GFLOP/s")
    why = "LoRA: the frozen weights get no gradient; 6 for full fine-tuning" if args.lora else "full FT"
    print(
        f"Direct AIHF training: {flops / 1e9:.1f} GFLOP/s counting {per_trained} x {params / 1e6:.1f}M "
        f"parameters per trained token ({why}) and 2 x parameters per reference token"
    )
    print(f"wall time {wall / 60:.1f} min")
    print(f"rloo_vs_trl_rloo={speed['rloo'] / speed['trl_rloo']:.3f}")
    print(f"aihf_vs_rlhf_iteration={seconds['aihf'] / seconds['rlhf']:.3f}")
    print(f"direct_vs_trl_dpo={speed['direct'] / speed['trl_dpo']:.3f}")
    print(f"flops_fraction={flops / peak:.3f}")
    print(f"speedup_aihf_iteration={seconds['aihf_before'] / seconds['aihf']:.3f}")
    print(f"speedup_direct_step={seconds['direct_before'] / seconds['direct']:.3f}")


if __name__ == "__main__":
    main()
