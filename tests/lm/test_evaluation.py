import copy
import math

import numpy as np
import pytest
import torch

from aihf.errors import InputError
from aihf.lm.evaluation import (
    SamplingConfig,
    correlations,
    evaluate,
    load_model,
    preference_accuracy,
    reference_samples,
    reward_scores,
    sample,
    samples_logprobs,
    win_rate,
)
from aihf.lm.tiny import save_tiny_models

PROMPTS = ["The film was", "I think the plot", "She walked to the", "A quiet movie"]
CONFIG = SamplingConfig(max_new_tokens=6, batch_size=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = save_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)
    policy, tokenizer = load_model(root / "policy")
    reward, reward_tokenizer = load_model(root / "reward_model", kind="reward")
    return policy, tokenizer, reward, reward_tokenizer


def length_gold(prompts, completions):
    return [float(len(c.split())) for c in completions]


def test_win_rate_counts_ties_as_half():
    assert win_rate([1.0, 0.0, 0.5, 2.0], [0.0, 1.0, 0.5, 1.0]) == pytest.approx(2.5 / 4)
    with pytest.raises(InputError):
        win_rate([1.0], [1.0, 2.0])


def test_correlations_of_monotone_scores():
    corr = correlations([1.0, 2.0, 3.0, 10.0], [0.1, 0.2, 0.3, 0.4])
    assert corr["spearman"] == pytest.approx(1.0)
    assert 0 < corr["pearson"] < 1


def test_sampling_is_seeded_and_keeps_exact_ids(models):
    policy, tokenizer, *_ = models
    a = sample(policy, tokenizer, PROMPTS, CONFIG, seed=3)
    b = sample(policy, tokenizer, PROMPTS, CONFIG, seed=3)
    assert a.completion_ids == b.completion_ids
    for prompt, ids in zip(PROMPTS, a.prompt_ids):
        assert ids == tokenizer(prompt)["input_ids"]
    assert all(1 <= len(c) <= CONFIG.max_new_tokens for c in a.completion_ids)


def test_completion_logprobs_match_a_token_by_token_computation(models):
    policy, tokenizer, *_ = models
    samples = sample(policy, tokenizer, PROMPTS, CONFIG, seed=1)
    batched = samples_logprobs(policy, samples, tokenizer.pad_token_id, batch_size=3)
    for i in range(len(PROMPTS)):
        ids = samples.prompt_ids[i] + samples.completion_ids[i]
        with torch.no_grad():
            logps = policy(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        start = len(samples.prompt_ids[i])
        expected = sum(logps[t - 1, ids[t]].item() for t in range(start, len(ids)))
        assert batched[i].item() == pytest.approx(expected, abs=1e-4)


def test_evaluate_identical_policy_has_zero_kl_and_a_perturbed_one_positive(models):
    policy, tokenizer, reward, reward_tokenizer = models
    same = evaluate(policy, tokenizer, policy, PROMPTS, length_gold, config=CONFIG)
    assert same.metrics["kl_to_ref"] == pytest.approx(0.0, abs=1e-5)
    assert same.metrics["gold_reward_mean"] == pytest.approx(sum(same.samples.gold) / len(PROMPTS))
    other = copy.deepcopy(policy)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    prefs = [
        {"prompt": "A", "chosen": " good", "rejected": " bad"},
        {"prompt": "B", "chosen": " x", "rejected": " yy"},
    ]
    result = evaluate(
        other,
        tokenizer,
        policy,
        PROMPTS * 4,
        length_gold,
        config=CONFIG,
        reward_model=reward,
        reward_tokenizer=reward_tokenizer,
        prefs=prefs,
    )
    assert result.metrics["kl_to_ref"] > 0.1
    assert {"learned_gold_pearson", "learned_gold_spearman", "reward_accuracy"} <= set(result.metrics)
    # on the common pool (the reference's samples): the learned reward against their gold scores
    ref = reference_samples(policy, tokenizer, PROMPTS * 4, length_gold, CONFIG)
    common = reward_scores(reward, reward_tokenizer, ref.prompts, ref.completions)
    expected = correlations(common, ref.gold)
    assert result.metrics["common_learned_gold_spearman"] == pytest.approx(expected["spearman"], nan_ok=True)
    assert result.metrics["common_learned_std"] == pytest.approx(float(np.std(common, ddof=1)), rel=1e-6)
    assert result.metrics["common_learned_std"] > 0
    assert len(result.learned) == len(PROMPTS) * 4 and "learned" in result.rows()[0]


def test_preference_accuracy_flips_when_pairs_are_swapped(models):
    *_, reward, reward_tokenizer = models
    prefs = [{"prompt": p, "chosen": " good and kind", "rejected": " no"} for p in PROMPTS]
    swapped = [{"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]} for r in prefs]
    acc = preference_accuracy(reward, reward_tokenizer, prefs)
    assert acc + preference_accuracy(reward, reward_tokenizer, swapped) == pytest.approx(1.0)
    with pytest.raises(InputError):
        preference_accuracy(reward, reward_tokenizer, [])


def test_reference_samples_must_match_prompts(models):
    policy, tokenizer, *_ = models
    from aihf.lm.evaluation import reference_samples

    ref = reference_samples(policy, tokenizer, PROMPTS[:2], length_gold, CONFIG)
    with pytest.raises(InputError, match="other prompts"):
        evaluate(policy, tokenizer, policy, PROMPTS, length_gold, config=CONFIG, ref=ref)


def test_learned_reward_is_read_where_training_reads_it(models):
    """Evaluation scores through RewardScorer (EOS appended), not prompt + completion without EOS."""
    from aihf.lm.evaluation import reward_scores
    from aihf.lm.modeling import RewardScorer

    *_, reward, reward_tokenizer = models
    assert reward_tokenizer.eos_token != reward_tokenizer.pad_token
    completions = [" good and kind", " no", " a quiet film", " the end"]
    scores = reward_scores(reward, reward_tokenizer, PROMPTS, completions, batch_size=3)
    with torch.no_grad():
        trained = RewardScorer(reward, reward_tokenizer)(PROMPTS, completions).tolist()
        no_eos = [
            reward(**reward_tokenizer(p + c, return_tensors="pt")).logits[0, 0].item()
            for p, c in zip(PROMPTS, completions)
        ]
    assert scores == pytest.approx(trained, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(scores, no_eos)) > 1e-4


def test_reference_samples_never_share_a_runs_random_stream(models):
    from aihf.lm.evaluation import REFERENCE_SEED, reference_samples
    from aihf.validation import SEED

    policy, tokenizer, *_ = models
    assert SEED.high < REFERENCE_SEED  # no accepted run seed can select the reference's stream
    prompts = PROMPTS * 3
    ref = reference_samples(policy, tokenizer, prompts, length_gold, CONFIG)
    for seed in (0, 1, 2):
        assert sample(policy, tokenizer, prompts, CONFIG, seed=seed).completion_ids != ref.completion_ids


@pytest.mark.parametrize(
    "config", [SamplingConfig(temperature=0.5), SamplingConfig(top_k=5, temperature=1.5)]
)
def test_log_probs_are_those_of_the_sampling_distribution(models, config):
    """KL must compare the distributions sampled from: tempered and truncated like `generate`."""
    policy, tokenizer, *_ = models
    samples = sample(policy, tokenizer, PROMPTS, CONFIG, seed=1)
    got = samples_logprobs(policy, samples, tokenizer.pad_token_id, batch_size=3, config=config)
    for i in range(len(PROMPTS)):
        ids = samples.prompt_ids[i] + samples.completion_ids[i]
        with torch.no_grad():
            logits = policy(input_ids=torch.tensor([ids])).logits[0] / config.temperature
        if config.top_k:
            kth = logits.topk(config.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        logps = logits.log_softmax(-1)
        start = len(samples.prompt_ids[i])
        expected = sum(logps[t - 1, ids[t]].item() for t in range(start, len(ids)))
        if math.isfinite(expected):
            assert got[i].item() == pytest.approx(expected, abs=1e-4)
    plain = samples_logprobs(policy, samples, tokenizer.pad_token_id, batch_size=3)
    assert not torch.allclose(got, plain)


def test_spreads_are_sample_standard_deviations(models):
    policy, tokenizer, *_ = models
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a different model: the KL terms are not all zero
    result = evaluate(policy, tokenizer, reference, PROMPTS, length_gold, config=CONFIG)
    gold = np.asarray(result.samples.gold)
    assert result.metrics["gold_reward_std"] == pytest.approx(gold.std(ddof=1))
    assert result.metrics["gold_reward_sem"] == pytest.approx(gold.std(ddof=1) / len(gold) ** 0.5)
    log_ratio = samples_logprobs(policy, result.samples, tokenizer.pad_token_id, config=CONFIG)
    log_ratio -= samples_logprobs(reference, result.samples, tokenizer.pad_token_id, config=CONFIG)
    sem = log_ratio.numpy().std(ddof=1) / len(log_ratio) ** 0.5
    assert sem > 0 and result.metrics["kl_to_ref_sem"] == pytest.approx(sem, rel=1e-5)
