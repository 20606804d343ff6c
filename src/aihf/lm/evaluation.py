"""Evaluate any LM policy the way the paper does: under a gold reward, against a reference policy.

`evaluate` samples one completion per test prompt from the policy and reports
- gold reward mean and std of prompt + completion,
- KL to the reference, estimated from the policy's own samples: mean over samples of
  sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)] (unbiased for KL(pi || pi_ref)); both
  log-probabilities are those of the distributions actually sampled from (the same temperature, top-k
  and top-p applied to the policy and the reference),
- win rate against the reference: the share of prompts whose policy sample beats the reference's
  sample under the gold reward (ties count one half),
- with a learned reward model: its accuracy on held-out preferences, and its Pearson / Spearman
  correlation with the gold reward on the policy's samples (the paper's Fig. 8), scored through
  `RewardScorer`, the scorer training uses (so the score is read where the head was trained).

Spreads are sample standard deviations (ddof = 1). The reference's samples come from a seed outside
the range a run's seed can take (`REFERENCE_SEED`), so no run shares their random stream.

`aihf lm eval --policy DIR --reference DIR` runs it from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from aihf.errors import InputError
from aihf.experiments.report import sd
from aihf.lm.gold import RewardFn
from aihf.lm.modeling import (
    RewardScorer,
    Samples,
    SamplingConfig,
    collate,
    completion_logprobs,
    generate_ids,
    prompt_token_ids,
    samples_from_ids,
)
from aihf.lm.modeling import load_model as load_model  # evaluation's callers load models from here

REFERENCE_SEED = 2**32 + 17  # above every seed a run accepts (aihf.validation.SEED), so never a run's


@torch.no_grad()
def sample(
    model: Any, tokenizer: Any, prompts: Sequence[str], config: SamplingConfig, seed: int = 0
) -> Samples:
    """One sampled completion per prompt (generation stops at eos; eos is kept in the ids).

    Prompts keep the tokenizer's special tokens and their order (`config.batch_size` per call), so a
    seed gives the samples it always gave."""
    torch.manual_seed(seed)
    prompt_ids = prompt_token_ids(tokenizer, prompts, None, add_special_tokens=True)
    generated = generate_ids(model, prompt_ids, 1, config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    return samples_from_ids(tokenizer, prompts, prompt_ids, generated, 1)


def _sampling_warpers(config: SamplingConfig | None) -> Any:
    """transformers' logits warpers for the sampling settings (none at temperature 1, no top-k/top-p)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if config is None:
        return warpers
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    return warpers


@torch.no_grad()
def samples_logprobs(
    model: Any, samples: Samples, pad_id: int, batch_size: int = 64, config: SamplingConfig | None = None
) -> torch.Tensor:
    """Sum of log p(completion token) for each sample, on the sampled ids, under the distribution
    `generate` samples from with `config`'s temperature, top-k and top-p (the model's own distribution
    when `config` is None); `batch_size` samples per forward pass."""
    warpers = _sampling_warpers(config)
    device = next(model.parameters()).device
    totals = []
    for i in range(0, len(samples.prompts), batch_size):
        batch = collate(
            samples.prompt_ids[i : i + batch_size],
            samples.completion_ids[i : i + batch_size],
            pad_id,
            device=device,
        )
        totals.append(completion_logprobs(model, batch, warpers=warpers).sums)
    return torch.cat(totals) if totals else torch.zeros(0)


def check_same_vocab(tokenizer: Any, ref_tokenizer: Any) -> None:
    if tokenizer.get_vocab() != ref_tokenizer.get_vocab():
        raise InputError("policy and reference tokenizers differ: sample-based KL needs a shared vocabulary")


@torch.no_grad()
def reward_scores(
    reward_model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 64,
) -> list[float]:
    """The learned reward R(prompt, completion) exactly as training reads it (`RewardScorer`: EOS
    appended, no special tokens added), so accuracy and correlations use the position the head learned."""
    scorer = RewardScorer(reward_model, tokenizer)
    scores: list[float] = []
    for i in range(0, len(prompts), batch_size):
        scores.extend(scorer(prompts[i : i + batch_size], completions[i : i + batch_size]).tolist())
    return scores


def preference_accuracy(reward_model: Any, tokenizer: Any, prefs: Sequence[dict[str, str]]) -> float:
    """Share of held-out pairs where the reward model scores `chosen` above `rejected`."""
    if not prefs:
        raise InputError("preference accuracy: no preference pairs given")
    prompts = [r["prompt"] for r in prefs]
    chosen = reward_scores(reward_model, tokenizer, prompts, [r["chosen"] for r in prefs])
    rejected = reward_scores(reward_model, tokenizer, prompts, [r["rejected"] for r in prefs])
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
    """The reference's samples and gold scores, computed once and shared by every policy's evaluation.

    Drawn from `REFERENCE_SEED + seed`, a stream no run's seed can select."""
    ref = sample(reference, tokenizer, prompts, config, seed=REFERENCE_SEED + seed)
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
    pad = tokenizer.pad_token_id
    log_ratio = samples_logprobs(policy, samples, pad, config.batch_size, config)
    log_ratio -= samples_logprobs(reference, samples, pad, config.batch_size, config)
    gold_scores = np.asarray(samples.gold)
    metrics: dict[str, float] = {
        "gold_reward_mean": float(gold_scores.mean()),
        "gold_reward_std": sd(gold_scores),
        "gold_reward_sem": sd(gold_scores) / len(gold_scores) ** 0.5,
        "kl_to_ref": float(log_ratio.mean()),
        "kl_to_ref_sem": sd(log_ratio) / len(log_ratio) ** 0.5,
        "win_rate": win_rate(samples.gold, ref.gold),
        "ref_gold_reward_mean": float(np.mean(ref.gold)),
        "mean_completion_tokens": float(np.mean([len(c) for c in samples.completion_ids])),
        "n_prompts": len(prompts),
    }
    learned: list[float] = []
    if reward_model is not None:
        reward_tokenizer = reward_tokenizer or tokenizer
        learned = reward_scores(reward_model, reward_tokenizer, list(prompts), samples.completions)
        corr = correlations(learned, samples.gold)
        metrics["learned_gold_pearson"] = corr["pearson"]
        metrics["learned_gold_spearman"] = corr["spearman"]
        # the same on a pool common to every run, the reference's samples (paper Fig. 8): a policy's own
        # samples can be too alike for a correlation to mean much
        common = reward_scores(reward_model, reward_tokenizer, ref.prompts, ref.completions)
        corr = correlations(common, ref.gold)
        metrics["common_learned_gold_pearson"] = corr["pearson"]
        metrics["common_learned_gold_spearman"] = corr["spearman"]
        # the learned reward's scale on that pool: a fixed KL weight beta means less against a wider one
        metrics["common_learned_std"] = sd(common)
        if prefs:
            metrics["reward_accuracy"] = preference_accuracy(reward_model, reward_tokenizer, prefs)
    return Evaluation(metrics, samples, learned)
