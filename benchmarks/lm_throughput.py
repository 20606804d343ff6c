"""Throughput of the LM trainers against TRL, measured in the same run on the same model and data.

1. Training tokens per second of Direct AIHF (DPO on P + alpha * SFT on D, one fused forward per
   step; alpha = 1, and alpha = 0 printed too) against TRL's DPOTrainer, with the same model,
   per-device batch size and sequence lengths. Only steps after `--warmup` count. TRL's time is
   taken between its own step callbacks, ours around the loop body of `DirectAIHFTrainer.train`.
   Every sequence has the same length, so tokens per step are exact (no padding).
2. Time of one AIHF iteration (policy steps + reward step) over one RLHF iteration (the same policy
   steps with the reward frozen), at equal `policy_steps_per_iteration`.
3. Peak memory of each (CUDA allocator peak, or on CPU the peak RSS of a fresh process per phase), and
   of a Direct AIHF step with and without gradient checkpointing.

Each phase runs in its own process, so peak memory is that phase's alone. `--model DIR` runs on a real
model (e.g. `aihf lm get-model smollm2-135m-instruct`); policy and reward model both start from it;
`--lora` trains LoRA adapters (r=16, all linear layers) in every trainer, TRL's included.

Times are medians over steps / iterations (AIHF and RLHF iterations interleaved), so a busy shared
machine disturbs them less.

Last line: `ratio=<Direct AIHF tokens/s over TRL DPO tokens/s>`. Targets: ratio >= 1.0 and
AIHF/RLHF iteration time <= 1.3.

    python benchmarks/lm_throughput.py                 # CPU-sized defaults (a few minutes on 2 shared cores)
    python benchmarks/lm_throughput.py --model "$(aihf lm get-model smollm2-135m-instruct)" --lora \
        --batch-size 4 --prompt-len 32 --answer-len 32 --steps 4 --warmup 1 --iterations 3 --policy-steps 2
    python benchmarks/lm_throughput.py --n-embd 768 --n-layer 12 --batch-size 16 --seq-len 256   # GPU
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def clock() -> float:
    """Wall-clock seconds on a GPU; on CPU, this process's CPU seconds (one thread), so the other jobs of a
    shared machine do not distort the comparison."""
    return time.perf_counter() if torch.cuda.is_available() else time.process_time()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_models(root: Path, args: argparse.Namespace) -> Path:
    from aihf.lm.tiny import DEFAULT_TEXT, save_tiny_models

    sizes = {
        "n_embd": args.n_embd,
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "n_positions": 2 * args.seq_len,
    }
    return save_tiny_models(root / "models", DEFAULT_TEXT.splitlines(), seed=0, **sizes)


def fixed_length_text(tokenizer, n_tokens: int, rng: random.Random) -> str:
    """A string of exactly `n_tokens` tokens (single-token words drawn from the vocabulary)."""
    words = [w for w in tokenizer.get_vocab() if w.startswith("Ġ") and w[1:].isalpha()]
    while True:
        text = "".join(tokenizer.convert_tokens_to_string([rng.choice(words)]) for _ in range(n_tokens))
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens:
            return text


def make_data(tokenizer, n: int, prompt_len: int, answer_len: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(0)
    prefs, demos = [], []
    for _ in range(n):
        prompt = fixed_length_text(tokenizer, prompt_len, rng)
        answers = [fixed_length_text(tokenizer, answer_len - 1, rng) for _ in range(3)]  # + EOS
        prefs.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1]})
        demos.append({"prompt": prompt, "completion": answers[2]})
    return prefs, demos


def trl_dpo_tokens_per_second(
    model_dir: Path, prefs: list[dict], args: argparse.Namespace, out: Path
) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from aihf.lm.modeling import load_causal_lm, load_tokenizer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, *_, **__) -> None:
            sync()
            self.times.append(clock())

    step_clock = StepClock()
    config = DPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-5,
        beta=0.1,
        max_length=args.seq_len,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=False,
    )
    peft = None
    if args.lora:
        from peft import LoraConfig

        peft = LoraConfig(
            task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"
        )
    trainer = DPOTrainer(
        model=load_causal_lm(str(model_dir / "policy")),
        args=config,
        train_dataset=Dataset.from_list(prefs),
        processing_class=load_tokenizer(str(model_dir / "policy")),
        callbacks=[step_clock],
        peft_config=peft,
    )
    trainer.train()
    step_seconds = [
        b - a for a, b in zip(step_clock.times[args.warmup - 1 :], step_clock.times[args.warmup :])
    ]
    tokens_per_step = 2 * args.batch_size * (args.prompt_len + args.answer_len)
    return [tokens_per_step / seconds for seconds in step_seconds]


LORA = {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0}


def direct_aihf_tokens_per_second(
    model_dir: Path,
    prefs: list[dict],
    demos: list[dict],
    args: argparse.Namespace,
    out: Path,
    alpha: float,
    checkpointing: bool = False,
) -> list[float]:
    from aihf.lm.config import DirectAIHFConfig
    from aihf.lm.data import prepare_text_data
    from aihf.lm.direct import DirectAIHFTrainer
    from aihf.lm.modeling import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(model_dir / "policy"))
    config = DirectAIHFConfig(
        output_dir=str(out / "direct"),
        alpha=alpha,
        beta=0.1,
        batch_size=args.batch_size,
        max_length=args.seq_len,
        report_to="none",
        bf16=args.bf16,
        gradient_checkpointing=checkpointing,
        **(LORA if args.lora else {}),
    )
    trainer = DirectAIHFTrainer(
        load_causal_lm(str(model_dir / "policy")),
        tokenizer,
        config,
        prefs=prepare_text_data(prefs, "prefs", tokenizer),
        demos=prepare_text_data(demos, "demos", tokenizer) if alpha > 0 else None,
    )
    speeds = []
    for step in range(args.warmup + args.steps):  # one optimiser step of DirectAIHFTrainer.train
        sync()
        seen, start = trainer.tokens_seen, clock()
        trainer.training_step()
        sync()
        if step >= args.warmup:
            speeds.append((trainer.tokens_seen - seen) / (clock() - start))
    return speeds


def rl_trainer(
    model_dir: Path, prefs: list[dict], demos: list[dict], args: argparse.Namespace, out: Path, learn: bool
):
    """AIHF (learn=True) or RLHF's RL stage (reward frozen), after one warm-up iteration."""
    from aihf.lm.aihf_trainer import AIHFTrainer
    from aihf.lm.config import AIHFConfig
    from aihf.lm.data import prepare_text_data
    from aihf.lm.modeling import load_causal_lm, load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(str(model_dir / "policy"))
    config = AIHFConfig(
        output_dir=str(out / ("aihf" if learn else "rlhf")),
        batch_size=args.batch_size,
        prompt_batch_size=args.batch_size,
        num_samples=args.num_samples,
        max_new_tokens=args.answer_len,
        policy_steps_per_iteration=args.policy_steps,
        reward_steps_per_iteration=args.reward_steps,
        max_iterations=1,
        max_length=args.seq_len,
        report_to="none",
        bf16=args.bf16,
        **(LORA if args.lora else {}),
    )
    reward_dir = model_dir / ("policy" if args.model else "reward_model")
    trainer = AIHFTrainer(
        load_causal_lm(str(model_dir / "policy")),
        tokenizer,
        config,
        reward_model=load_reward_model(str(reward_dir)),
        demos=prepare_text_data(demos, "demos", tokenizer),
        prefs=prepare_text_data(prefs, "prefs", tokenizer),
        train_reward=learn,
        method="aihf" if learn else "rlhf",
    )
    trainer.save = lambda: None  # time the iterations, not the final save_pretrained
    trainer.logger.enabled = False
    trainer.train()  # warm-up iteration
    return trainer


def one_iteration_seconds(trainer) -> float:
    trainer.config.max_iterations = trainer.state.step + 1
    sync()
    start = clock()
    trainer.train()
    sync()
    return clock() - start


PHASES = ("trl", "ours", "ours0", "rlhf", "aihf", "ckpt_off", "ckpt_on")


def run_phase(phase: str, model_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    """One measurement in this process: speeds (tokens/s or s/iteration) and this process's peak memory."""
    from aihf.lm.modeling import load_tokenizer

    prefs, demos = make_data(load_tokenizer(str(model_dir / "policy")), 64, args.prompt_len, args.answer_len)
    reset_peak()
    if phase == "trl":
        values = trl_dpo_tokens_per_second(model_dir, prefs, args, out)
    elif phase in ("ours", "ours0", "ckpt_off", "ckpt_on"):
        alpha = 0.0 if phase == "ours0" else 1.0
        values = direct_aihf_tokens_per_second(
            model_dir, prefs, demos, args, out, alpha, checkpointing=phase == "ckpt_on"
        )
    else:
        trainer = rl_trainer(model_dir, prefs, demos, args, out, learn=phase == "aihf")
        values = [one_iteration_seconds(trainer) for _ in range(args.iterations)]
    return {"values": values, "peak_mb": peak_memory_mb()}


def spawn(phase: str, model_dir: Path, argv: list[str], out: Path) -> dict:
    """`run_phase` in a fresh process, so its peak memory is its own."""
    command = [
        sys.executable,
        __file__,
        *argv,
        "--phase",
        phase,
        "--model-dir",
        str(model_dir),
        "--work",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"phase {phase} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model directory (policy and reward model start from it)")
    parser.add_argument(
        "--lora", action="store_true", help="LoRA r=16 on all linear layers, in every trainer"
    )
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--answer-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--policy-steps", type=int, default=4)
    parser.add_argument("--reward-steps", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.seq_len = args.prompt_len + args.answer_len
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # CPU time of one thread: see `clock`
    torch.manual_seed(0)
    if args.phase:  # a child process: one measurement, one JSON line
        print(json.dumps(run_phase(args.phase, Path(args.model_dir), args, Path(args.work))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.model:  # the layout the phases expect: OUT/policy (the reward model starts from --model)
            model_dir = out / "models"
            model_dir.mkdir()
            (model_dir / "policy").symlink_to(Path(args.model).resolve())
        else:
            model_dir = build_models(out, args)
        device = "cuda (wall clock)" if torch.cuda.is_available() else "cpu (1 thread, process CPU time)"
        model = args.model or f"tiny GPT-2 n_embd={args.n_embd} n_layer={args.n_layer}"
        print(
            f"device={device} model: {model}{' + LoRA r=16' if args.lora else ''}; batch={args.batch_size} "
            f"prompt={args.prompt_len} answer={args.answer_len} tokens; {args.steps} timed steps"
        )
        results = {phase: spawn(phase, model_dir, argv, out) for phase in PHASES}
        tps = {k: statistics.median(results[k]["values"]) for k in ("trl", "ours", "ours0")}
        peak = {k: results[k]["peak_mb"] for k in PHASES}
        print(f"TRL DPOTrainer: {tps['trl']:.0f} tokens/s (median step), peak memory {peak['trl']:.0f} MB")
        print(f"Direct AIHF (alpha=1): {tps['ours']:.0f} tokens/s, peak memory {peak['ours']:.0f} MB")
        print(
            f"Direct AIHF (alpha=0, i.e. DPO in our loop): {tps['ours0']:.0f} tokens/s, "
            f"peak memory {peak['ours0']:.0f} MB; over TRL: {tps['ours0'] / tps['trl']:.3f}"
        )
        print(
            f"Direct AIHF step peak memory: {peak['ckpt_off']:.0f} MB without, {peak['ckpt_on']:.0f} MB with "
            f"gradient checkpointing ({statistics.median(results['ckpt_on']['values']):.0f} vs "
            f"{statistics.median(results['ckpt_off']['values']):.0f} tokens/s)"
        )
        rlhf, aihf = (statistics.median(results[k]["values"]) for k in ("rlhf", "aihf"))
        print(
            f"RLHF iteration ({args.policy_steps} policy steps): {rlhf:.3f} s (median of {args.iterations}), "
            f"peak memory {peak['rlhf']:.0f} MB"
        )
        print(
            f"AIHF iteration ({args.policy_steps} policy steps + {args.reward_steps} reward steps): "
            f"{aihf:.3f} s (median), peak memory {peak['aihf']:.0f} MB"
        )
        print(f"aihf_over_rlhf_iteration={aihf / rlhf:.3f}")
        print(f"ratio={tps['ours'] / tps['trl']:.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
