"""Data generation as in the paper (v3 appendix A.1.2): graded-quality data from gold-reward RL.

1. RL on the gold reward from the base model (TRL's `GRPOTrainer`, the gold reward as its reward
   function) on prompts from the *pretraining* cookies, saving checkpoints at intervals.
2. Every checkpoint (the base model included) samples completions for the data-generation prompts.
3. The completions are bucketed by gold score into low / medium / high thirds. Demonstrations are
   high-bucket completions; preferences pair two completions of the same prompt from the low and
   medium buckets, the one with the higher gold score chosen. So demonstrations are better than
   either side of a preference pair, the regime where the paper finds demonstrations add information.
   A prompt first gives one pair; further, disjoint pairs of the same prompt come after every prompt
   has given one, so the first N pairs of prefs.jsonl are a data set of N pairs in its own right
   (the preference-size sweep takes prefixes).
4. The quality table (mean +- std gold score of rejected, chosen and demonstration data; the paper's
   Table 3) is printed and saved next to the JSONL files (TRL columns).

With a chat model (`instruction` set, preset `smollm2`), every prompt is the user turn
`instruction.format(text=...)` rendered with the model's chat template (generation prompt added), and
the files hold the rendered prompt text: the same string the policies sample from, the gold reward
conditions on, and the trainers append their completion (and EOS) to. The gold-RL run then trains a
LoRA adapter in bf16 and is resumable (its checkpoints keep the optimiser state); the sample pool is
written per checkpoint, so an interrupted run redoes at most one checkpoint's samples.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aihf.errors import InputError
from aihf.io import read_jsonl, write_json, write_text
from aihf.lm.bench.corpus import load_pretrain_text, load_prompts, make_prompt, split_sentences
from aihf.lm.gold import RewardFn, gold_name

GENERATED_DIR = Path(__file__).resolve().parents[2] / "data" / "lm" / "generated"
SMOLLM2_DATA_DIR = GENERATED_DIR.parent / "smollm2"  # `--preset smollm2`'s data (v1), shipped
SMOLLM2_V2_DATA_DIR = GENERATED_DIR.parent / "smollm2_v2"  # `--preset smollm2-v2`'s (gold v2), shipped


@dataclass
class DataGenConfig:
    rl_steps: int = 150
    save_every: int = 30
    rl_prompts: int = 2000
    rl_batch_size: int = 32
    num_generations: int = 8
    learning_rate: float = 5e-4
    kl_beta: float = 0.02
    max_new_tokens: int = 24
    samples_per_prompt: int = 2
    n_demos: int = 1000
    n_prefs: int = 3000
    pairs_per_prompt: int = 4
    n_heldout_prefs: int = 100
    seed: int = 0
    # chat models: the user turn around each prompt text ({text}); None keeps the raw text (tiny replica)
    instruction: str | None = None
    # chat models: the start of the assistant's turn ({text}: the prompt text), which the model then
    # continues; None starts it empty. "{text}" makes the answer a continuation of the text itself.
    response_prefix: str | None = None
    use_peft: bool = False  # gold RL trains a LoRA adapter (r, alpha) instead of every weight
    lora_r: int = 16
    lora_alpha: int = 32
    bf16: bool = False  # gold RL and pool sampling in bfloat16 (AMX / tensor cores); gold stays float32
    n_pool_prompts: int | None = None  # data-generation prompts used (default: all)
    # the pool samples the base and the first N gold-RL checkpoints (default: all); fewer keeps the
    # demonstrations below what RL on the gold reaches, so a policy has room to beat them
    pool_checkpoints: int | None = None
    # gold RL also checkpoints every this many steps (a finer interval to resume from; default
    # save_every); the pool samples only the checkpoints at multiples of save_every
    resume_every: int | None = None


# `aihf lm generate-data --preset NAME`: the tiny replica's settings, and SmolLM2-135M-Instruct's
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "smollm2": {
        "instruction": "Continue this text with one short sentence: {text}",
        "use_peft": True,
        "bf16": True,
        "rl_steps": 120,
        "save_every": 30,
        "rl_batch_size": 16,
        "num_generations": 4,
        "learning_rate": 2e-4,
        "kl_beta": 0.02,
        "max_new_tokens": 32,
        "samples_per_prompt": 2,
        "pool_checkpoints": 1,
        "n_demos": 500,
        "n_prefs": 1000,
        "pairs_per_prompt": 2,
        "n_heldout_prefs": 100,
    },
}
# v2 (gold `on-task-sentiment`): the same task and settings, the assistant's turn started with the text.
# Asked to continue a text, SmolLM2 mostly answers with talk about it, which gold v2 pays nothing for
# (76 % of its samples score 0), so GRPO with 4 completions a prompt had no gradient on most prompts;
# started with the text, it continues it (data/lm/smollm2_v2/README.md has the measurement). float32:
# on a CPU without bfloat16 instructions (AVX2 only) bfloat16 matrix products are about 20x slower.
PRESETS["smollm2-v2"] = PRESETS["smollm2"] | {"response_prefix": "{text}", "bf16": False, "resume_every": 10}


def render_prompts(
    texts: Sequence[str], tokenizer: Any, instruction: str | None, response_prefix: str | None = None
) -> list[str]:
    """Each text as the user turn `instruction` rendered by the chat template, the assistant's turn
    started with `response_prefix` (both formatted with the text); unchanged without an instruction."""
    if instruction is None:
        return list(texts)
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError("data generation: `instruction` needs a tokenizer with a chat template")
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction.format(text=t)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        + (response_prefix or "").format(text=t)
        for t in texts
    ]


def train_prompts(limit: int | None = None, seed: int = 0) -> list[str]:
    """Prompts cut from the pretraining cookies: the gold-RL run never sees the held-out prompts."""
    rng = random.Random(seed)
    prompts = []
    for cookie in load_pretrain_text():
        for sentence in split_sentences(cookie):
            prompt = make_prompt(sentence, rng)
            if prompt:
                prompts.append(prompt)
    rng.shuffle(prompts)
    return prompts[:limit]


def gold_rl(
    base_model: str | Path, out_dir: str | Path, gold: RewardFn, prompts: Sequence[str], cfg: DataGenConfig
) -> list[Path]:
    """GRPO on the gold reward; returns the base model and every saved checkpoint, in training order."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return list(gold(prompts, completions))

    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    model = AutoModelForCausalLM.from_pretrained(str(base_model))
    peft_config = None
    if cfg.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(
            task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear"
        )
    args = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.rl_batch_size,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        learning_rate=cfg.learning_rate,
        beta=cfg.kl_beta,
        max_steps=cfg.rl_steps,
        save_steps=cfg.resume_every or cfg.save_every,
        gradient_checkpointing=False,  # a 135M model fits; recomputing activations only costs time
        logging_steps=min(10, cfg.save_every),
        report_to=[],
        use_cpu=True,
        bf16=cfg.bf16,
        seed=cfg.seed,
        temperature=1.0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": list(prompts)}),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # an interrupted run continues from its newest checkpoint (optimiser, schedule and RNG included)
    trainer.train(resume_from_checkpoint=bool(saved_checkpoints(Path(out_dir))))
    log = [row for row in trainer.state.log_history if "reward" in row]
    write_json(Path(out_dir) / "gold_rl_log.json", log)
    checkpoints = pool_checkpoints(Path(out_dir), cfg)
    for ckpt in checkpoints:  # so every checkpoint loads on its own
        tokenizer.save_pretrained(ckpt)
    return [Path(base_model), *checkpoints]


def pool_checkpoints(work_dir: Path, cfg: DataGenConfig) -> list[Path]:
    """The checkpoints the pool may sample: those at multiples of `save_every`, in training order."""
    return [p for p in saved_checkpoints(work_dir) if int(p.name.split("-")[1]) % cfg.save_every == 0]


def saved_checkpoints(work_dir: Path) -> list[Path]:
    """The `checkpoint-N` directories of a gold-RL run, in training order."""
    return sorted(work_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(path: Path, base_model: str | Path) -> tuple[Any, Any]:
    """A gold-RL checkpoint as a plain policy: a LoRA adapter is merged into the base model."""
    from aihf.lm.evaluation import load_model

    if not (path / "adapter_config.json").is_file():
        return load_model(path)
    from peft import PeftModel

    model, tokenizer = load_model(base_model)
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval(), tokenizer


def generate_pool(
    checkpoints: Sequence[Path],
    prompts: Sequence[str],
    gold: RewardFn,
    cfg: DataGenConfig,
    work_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """`samples_per_prompt` completions per prompt from every checkpoint, each with its gold score.

    With `work_dir`, each checkpoint's rows are kept in pool-<index>.jsonl and reused on a rerun."""
    import torch

    from aihf.lm.evaluation import SamplingConfig, sample

    pool = []
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens)
    for index, path in enumerate(checkpoints):
        name = f"pool-{index}-x{cfg.samples_per_prompt}-n{len(prompts)}.jsonl"  # reused only as sampled
        saved = work_dir / name if work_dir is not None else None
        if saved is not None and saved.is_file():
            pool += read_jsonl(saved)
            continue
        model, tokenizer = load_checkpoint(path, checkpoints[0])
        if cfg.bf16:
            model = model.to(torch.bfloat16)
        rows = []
        for k in range(cfg.samples_per_prompt):
            drawn = sample(model, tokenizer, prompts, sampling, seed=cfg.seed + 1000 * index + k)
            scores = gold(drawn.prompts, drawn.completions)
            for p, c, s in zip(drawn.prompts, drawn.completions, scores):
                if c.strip():
                    rows.append({"prompt": p, "completion": c, "gold": float(s), "checkpoint": index})
        if saved is not None:
            write_jsonl(saved, rows)
        pool += rows
    return pool


def bucket(pool: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Label each row low / medium / high by the rank of its gold score (ties broken at random)."""
    if len(pool) < 3:
        raise InputError(f"data generation: need at least 3 completions to bucket, got {len(pool)}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(pool)), [r["gold"] for r in pool]))
    names = ("low", "medium", "high")
    out = [dict(r) for r in pool]
    for rank, i in enumerate(order):
        out[i]["bucket"] = names[min(2, 3 * rank // len(pool))]
    return out


def _pair(prompt: str, rows: list[dict[str, Any]], rng: random.Random) -> dict[str, Any] | None:
    """Two of `rows` at random, the higher gold score chosen; None on a tie (no preference)."""
    a, b = rng.sample(rows, 2)
    if a["gold"] == b["gold"]:
        return None
    chosen, rejected = (a, b) if a["gold"] > b["gold"] else (b, a)
    return {
        "prompt": prompt,
        "chosen": chosen["completion"],
        "rejected": rejected["completion"],
        "chosen_gold": chosen["gold"],
        "rejected_gold": rejected["gold"],
    }


def _outside(pair: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose completion is in neither side of `pair`: what later pairs may still use."""
    return [r for r in rows if r["completion"] not in (pair["chosen"], pair["rejected"])]


def build_datasets(
    pool: list[dict[str, Any]],
    n_demos: int,
    n_prefs: int,
    n_heldout_prefs: int = 0,
    seed: int = 0,
    pairs_per_prompt: int = 1,
) -> dict[str, list[dict[str, Any]]]:
    """Demonstrations from the high bucket, preference pairs from low + medium.

    A prompt gives at most one demonstration and, in the first pass, one pair, so the data sets cover
    many prompts; later passes add disjoint pairs of prompts already used (up to `pairs_per_prompt`)
    until `n_prefs`. Held-out pairs (for the learned reward's accuracy) come from prompts used by neither.
    """
    rng = random.Random(seed)
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in bucket(pool, seed):
        by_prompt[row["prompt"]].append(row)
    prompts = sorted(by_prompt)
    rng.shuffle(prompts)
    demos, prefs, heldout = [], [], []
    unpaired: dict[str, list[dict[str, Any]]] = {}  # lower-bucket rows not yet in a pair, per used prompt
    for prompt in prompts:
        rows = by_prompt[prompt]
        high = [r for r in rows if r["bucket"] == "high"]
        lower = [r for r in rows if r["bucket"] != "high"]
        pair = _pair(prompt, lower, rng) if len(lower) >= 2 else None
        if pair and len(heldout) < n_heldout_prefs and (not high or len(demos) >= n_demos):
            heldout.append(pair)
            continue
        if high and len(demos) < n_demos:
            best = rng.choice(high)
            demos.append({"prompt": prompt, "completion": best["completion"], "gold": best["gold"]})
        if pair and len(prefs) < n_prefs:
            prefs.append(pair)
            unpaired[prompt] = _outside(pair, lower)
    for _ in range(pairs_per_prompt - 1):
        for prompt, rest in unpaired.items():
            if len(prefs) >= n_prefs or len(rest) < 2:
                continue
            pair = _pair(prompt, rest, rng)
            if pair:
                prefs.append(pair)
                unpaired[prompt] = _outside(pair, rest)
    return {"demos": demos, "prefs": prefs, "prefs_heldout": heldout}


def quality_table(
    demos: Sequence[dict[str, Any]], prefs: Sequence[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Mean / std gold score of rejected, chosen and demonstration data (the paper's Table 3)."""

    def stats(values: Sequence[float]) -> dict[str, float]:
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0  # a sample of the data
        return {"mean": float(np.mean(values)), "std": std, "n": len(values)}

    return {
        "non_preferred": stats([p["rejected_gold"] for p in prefs]),
        "preferred": stats([p["chosen_gold"] for p in prefs]),
        "demonstrations": stats([d["gold"] for d in demos]),
    }


def table3_ordering(table: dict[str, dict[str, float]]) -> bool:
    """The paper's Table 3 ordering of mean gold: demonstrations > preferred > non-preferred."""
    means = [table[k]["mean"] for k in ("demonstrations", "preferred", "non_preferred")]
    return means[0] > means[1] > means[2]


def quality_markdown(table: dict[str, dict[str, float]]) -> str:
    lines = ["| data | gold reward (mean +- std) | n |", "| --- | --- | --- |"]
    for name, s in table.items():
        lines.append(f"| {name.replace('_', '-')} | {s['mean']:.3f} +- {s['std']:.3f} | {s['n']} |")
    holds = "holds" if table3_ordering(table) else "DOES NOT HOLD"
    lines += ["", f"Table-3 ordering demonstrations > preferred > non-preferred: {holds}"]
    return "\n".join(lines) + "\n"


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    text = "".join(json.dumps({k: r[k] for k in columns} if columns else r) + "\n" for r in rows)
    write_text(path, text)


def generate_data(
    out_dir: str | Path,
    base_model: str | Path,
    gold: RewardFn,
    cfg: DataGenConfig | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The whole pipeline; writes demos.jsonl, prefs.jsonl, prefs_heldout.jsonl, prompts.jsonl and the
    quality table (quality.md / quality.json, with the gold-RL log) to `out_dir`.

    A `work_dir` that already holds a finished gold-RL run (its log and checkpoints) is reused, so the
    data sets can be rebuilt with other sizes without repeating the RL."""
    from transformers import AutoTokenizer

    cfg = cfg or DataGenConfig()
    out, work = Path(out_dir), Path(work_dir or Path(out_dir) / "gold_rl")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))

    def prompts(texts: Sequence[str]) -> list[str]:
        return render_prompts(texts, tokenizer, cfg.instruction, cfg.response_prefix)

    start = time.perf_counter()
    done = pool_checkpoints(work, cfg)
    if (work / "gold_rl_log.json").is_file() and done:  # a finished gold-RL run is reused
        print(f"reusing the gold-RL checkpoints in {work}", flush=True)
        checkpoints, rl_seconds = [Path(base_model), *done], None
    else:
        checkpoints = gold_rl(base_model, work, gold, prompts(train_prompts(cfg.rl_prompts, cfg.seed)), cfg)
        rl_seconds = time.perf_counter() - start
    shutil.copy(work / "gold_rl_log.json", out / "gold_rl_log.json")
    pool_prompts = prompts(load_prompts("datagen")[: cfg.n_pool_prompts])
    sampled = checkpoints if cfg.pool_checkpoints is None else checkpoints[: 1 + cfg.pool_checkpoints]
    pool = generate_pool(sampled, pool_prompts, gold, cfg, work)
    data = build_datasets(pool, cfg.n_demos, cfg.n_prefs, cfg.n_heldout_prefs, cfg.seed, cfg.pairs_per_prompt)
    write_jsonl(out / "demos.jsonl", data["demos"], ("prompt", "completion"))
    write_jsonl(out / "prefs.jsonl", data["prefs"], ("prompt", "chosen", "rejected"))
    write_jsonl(out / "prefs_heldout.jsonl", data["prefs_heldout"], ("prompt", "chosen", "rejected"))
    write_jsonl(out / "prompts.jsonl", [{"prompt": p} for p in prompts(load_prompts("rl"))])
    write_jsonl(out / "test_prompts.jsonl", [{"prompt": p} for p in prompts(load_prompts("test"))])
    by_checkpoint = defaultdict(list)
    for row in pool:
        by_checkpoint[row["checkpoint"]].append(row["gold"])
    rl_log = json.loads((work / "gold_rl_log.json").read_text())
    table = quality_table(data["demos"], data["prefs"])
    summary = {
        "quality": table,
        "table3_ordering": table3_ordering(table),
        "checkpoint_gold_mean": {
            str(checkpoints[i].name): float(np.mean(v)) for i, v in sorted(by_checkpoint.items())
        },
        "pool_size": len(pool),
        # headroom: what RL on the gold reached (its logged batch means) against the data's quality
        "gold_rl_reward_by_step": {str(r["step"]): float(r["reward"]) for r in rl_log if "step" in r},
        "gold": gold_name(gold),
        "base_model": str(base_model),
        "gold_rl_seconds": rl_seconds,
        "seconds": time.perf_counter() - start,
        "config": asdict(cfg),
    }
    write_json(out / "quality.json", summary)
    write_text(out / "quality.md", quality_markdown(table))
    print(quality_markdown(table))
    return summary
