"""Evaluate any LM policy the way the paper does: under a gold reward, against a reference policy.

`evaluate` samples one completion per test prompt from the policy and reports
- gold reward mean and std of prompt + completion,
- KL to the reference, estimated from the policy's own samples: mean over samples of
  sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)] (unbiased for KL(pi || pi_ref)),
- win rate against the reference: the share of prompts whose policy sample beats the reference's
  sample under the gold reward (ties count one half),
- with a learned reward model: its accuracy on held-out preferences, and its Pearson / Spearman
  correlation with the gold reward on the policy's samples (the paper's Fig. 8).

`aihf lm eval --policy DIR --reference DIR` runs it from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aihf.errors import InputError
from aihf.lm.gold import RewardFn
from aihf.losses import sequence_logprobs


@dataclass
class SamplingConfig:
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 64


@dataclass
class Samples:
    """Completions with the exact token ids they were sampled as (for exact log-probabilities)."""

    prompts: list[str]
    completions: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    gold: list[float] = field(default_factory=list)


def load_model(path: str | Path, kind: str = "policy") -> tuple[Any, Any]:
    """A causal LM (`kind="policy"`) or sequence classifier (`kind="reward"`) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    cls = AutoModelForCausalLM if kind == "policy" else AutoModelForSequenceClassification
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = cls.from_pretrained(str(path)).eval()
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: could not load a {kind} model with its tokenizer ({err})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Generation pads on the left; scoring pads on the right so positions stay the natural ones.
    tokenizer.padding_side = "left" if kind == "policy" else "right"
    return model, tokenizer


@torch.no_grad()
def sample(
    model: Any, tokenizer: Any, prompts: Sequence[str], config: SamplingConfig, seed: int = 0
) -> Samples:
    """One sampled completion per prompt (generation stops at eos; eos is kept in the ids)."""
    torch.manual_seed(seed)
    out = Samples(list(prompts), [], [], [])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for i in range(0, len(prompts), config.batch_size):
        batch = tokenizer(list(prompts[i : i + config.batch_size]), return_tensors="pt", padding=True)
        generated = model.generate(
            **batch,
            do_sample=True,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        width = batch["input_ids"].shape[1]
        for row, mask, new in zip(batch["input_ids"], batch["attention_mask"], generated[:, width:]):
            ids = new.tolist()
            if eos in ids:
                ids = ids[: ids.index(eos) + 1]
            out.prompt_ids.append(row[mask.bool()].tolist())
            out.completion_ids.append(ids)
            out.completions.append(tokenizer.decode(ids, skip_special_tokens=True))
    return out


@torch.no_grad()
def completion_logprobs(model: Any, samples: Samples, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """Sum of log pi(completion token) for each sample, on the sampled ids (right-padded, so positions
    are the natural ones)."""
    totals = []
    for i in range(0, len(samples.prompts), batch_size):
        rows = list(zip(samples.prompt_ids[i : i + batch_size], samples.completion_ids[i : i + batch_size]))
        width = max(len(p) + len(c) for p, c in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for j, (p, c) in enumerate(rows):
            ids = torch.tensor(p + c, dtype=torch.long)
            input_ids[j, : len(ids)] = ids
            attention[j, : len(ids)] = 1
            labels[j, len(p) : len(ids)] = ids[len(p) :]
        logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        totals.append(sequence_logprobs(logits, labels))
    return torch.cat(totals) if totals else torch.zeros(0)


def check_same_vocab(tokenizer: Any, ref_tokenizer: Any) -> None:
    if tokenizer.get_vocab() != ref_tokenizer.get_vocab():
        raise InputError("policy and reference tokenizers differ: sample-based KL needs a shared vocabulary")


@torch.no_grad()
def reward_scores(
    reward_model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64
) -> list[float]:
    """The reward model's scalar score (first logit) of each text (right padding, natural positions)."""
    tokenizer.padding_side = "right"
    scores: list[float] = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[i : i + batch_size]), return_tensors="pt", padding=True, truncation=True)
        scores.extend(reward_model(**batch).logits[:, 0].float().tolist())
    return scores


def preference_accuracy(reward_model: Any, tokenizer: Any, prefs: Sequence[dict[str, str]]) -> float:
    """Share of held-out pairs where the reward model scores `chosen` above `rejected`."""
    if not prefs:
        raise InputError("preference accuracy: no preference pairs given")
    chosen = reward_scores(reward_model, tokenizer, [r["prompt"] + r["chosen"] for r in prefs])
    rejected = reward_scores(reward_model, tokenizer, [r["prompt"] + r["rejected"] for r in prefs])
    return float(np.mean([c > r for c, r in zip(chosen, rejected)]))


def win_rate(scores: Sequence[float], ref_scores: Sequence[float]) -> float:
    """Share of paired samples where `scores` beats `ref_scores`, ties counted one half."""
    a, b = np.asarray(scores), np.asarray(ref_scores)
    if a.shape != b.shape or a.size == 0:
        raise InputError(f"win rate: need equally many non-zero scores, got {a.size} and {b.size}")
    return float(np.mean((a > b) + 0.5 * (a == b)))


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0])}


@dataclass
class Evaluation:
    metrics: dict[str, float]
    samples: Samples
    learned: list[float] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per sample: prompt, completion, gold and (if any) learned reward."""
        out = []
        for i, (p, c) in enumerate(zip(self.samples.prompts, self.samples.completions)):
            row = {"prompt": p, "completion": c, "gold": self.samples.gold[i]}
            if self.learned:
                row["learned"] = self.learned[i]
            out.append(row)
        return out


def reference_samples(
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    gold: RewardFn,
    config: SamplingConfig,
    seed: int = 0,
) -> Samples:
    """The reference's samples and gold scores, computed once and shared by every policy's evaluation."""
    ref = sample(reference, tokenizer, prompts, config, seed=seed + 1)
    ref.gold = list(gold(ref.prompts, ref.completions))
    return ref


def evaluate(
    policy: Any,
    tokenizer: Any,
    reference: Any,
    prompts: Sequence[str],
    gold: RewardFn,
    *,
    config: SamplingConfig | None = None,
    ref: Samples | None = None,
    reward_model: Any = None,
    reward_tokenizer: Any = None,
    prefs: Sequence[dict[str, str]] | None = None,
    seed: int = 0,
) -> Evaluation:
    """All of the module's metrics for one policy (see the module docstring)."""
    if not prompts:
        raise InputError("evaluation: no test prompts given")
    config = config or SamplingConfig()
    if ref is None:
        ref = reference_samples(reference, tokenizer, prompts, gold, config, seed)
    if ref.prompts != list(prompts):
        raise InputError("evaluation: the reference samples were drawn for other prompts")
    samples = sample(policy, tokenizer, prompts, config, seed=seed)
    samples.gold = list(gold(samples.prompts, samples.completions))
    log_ratio = completion_logprobs(policy, samples, tokenizer.pad_token_id, config.batch_size)
    log_ratio -= completion_logprobs(reference, samples, tokenizer.pad_token_id, config.batch_size)
    gold_scores = np.asarray(samples.gold)
    metrics: dict[str, float] = {
        "gold_reward_mean": float(gold_scores.mean()),
        "gold_reward_std": float(gold_scores.std()),
        "gold_reward_sem": float(gold_scores.std() / len(gold_scores) ** 0.5),
        "kl_to_ref": float(log_ratio.mean()),
        "kl_to_ref_sem": float(log_ratio.std() / max(1, len(log_ratio)) ** 0.5),
        "win_rate": win_rate(samples.gold, ref.gold),
        "ref_gold_reward_mean": float(np.mean(ref.gold)),
        "mean_completion_tokens": float(np.mean([len(c) for c in samples.completion_ids])),
        "n_prompts": len(prompts),
    }
    learned: list[float] = []
    if reward_model is not None:
        reward_tokenizer = reward_tokenizer or tokenizer
        learned = reward_scores(
            reward_model, reward_tokenizer, [p + c for p, c in zip(prompts, samples.completions)]
        )
        corr = correlations(learned, samples.gold)
        metrics["learned_gold_pearson"] = corr["pearson"]
        metrics["learned_gold_spearman"] = corr["spearman"]
        if prefs:
            metrics["reward_accuracy"] = preference_accuracy(reward_model, reward_tokenizer, prefs)
    return Evaluation(metrics, samples, learned)


def config_dict(config: SamplingConfig) -> dict[str, Any]:
    return asdict(config)
