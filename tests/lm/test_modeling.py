"""The one log-prob path (`modeling.completion_logprobs`) against the full-vocabulary computation it
replaced: a [B, T, V] log-softmax over every position, gathered at the next tokens."""

import pytest
import torch

from aihf.lm.evaluation import _sampling_warpers
from aihf.lm.modeling import (
    SamplingConfig,
    completion_logprobs,
    encode,
    generate_ids,
    load_model,
    sample_completions,
    selective_log_softmax,
)

# prompts of different lengths, so the batch's first completion column is inside other rows' prompts
PROMPTS = ["The film was", "I think the plot of this one", "She walked", "A quiet movie about"]
ANSWERS = [" warm and clever.", " dull", " to the window and smiled.", " rain."]
WARPED = [
    None,
    SamplingConfig(temperature=0.7),
    SamplingConfig(temperature=1.5, top_k=5),
    SamplingConfig(top_p=0.8),
]


def full_vocabulary_logprobs(model, batch, warpers=None):
    """The former computation, in float64: logits at every position, a full log-softmax, then gather."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    if warpers:
        flat = logits.reshape(-1, logits.size(-1))
        logits = warpers(batch["input_ids"].reshape(-1, 1), flat).reshape(logits.shape)
    log_probs = logits[:, :-1].log_softmax(-1)
    mask = batch["completion_mask"][:, 1:].bool()
    tokens = log_probs.gather(2, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    tokens = tokens.masked_fill(~mask, 0.0)
    finite = log_probs.masked_fill(log_probs.isinf(), 0.0)
    entropy = -(log_probs.exp() * finite).sum(-1).masked_fill(~mask, 0.0)
    return tokens.sum(-1).float(), tokens.float(), entropy.float()


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir / "policy")


def _check_equal(model, tokenizer, warped, atol):
    """Equal up to float32 rounding: `atol` per token is a few float32 steps of the model's largest logits
    (a logsumexp over the vocabulary in float32 is exact to about eps * |logit|)."""
    batch = encode(tokenizer, PROMPTS, ANSWERS)
    warpers = _sampling_warpers(warped) if warped else None
    with torch.no_grad():
        got = completion_logprobs(model, batch, with_entropy=True, warpers=warpers)
        sums, tokens, entropy = full_vocabulary_logprobs(model, batch, warpers)
    width = got.tokens.size(1)  # only the columns from the first completion token on are computed
    assert width < tokens.size(1)
    assert torch.equal(tokens[:, :-width], torch.zeros_like(tokens[:, :-width]))
    longest = int(batch["completion_mask"].sum(-1).max())
    torch.testing.assert_close(got.sums, sums, rtol=0, atol=atol * longest)
    torch.testing.assert_close(got.tokens, tokens[:, -width:], rtol=0, atol=atol)
    torch.testing.assert_close(got.entropy, entropy[:, -width:], rtol=0, atol=atol)
    assert torch.equal(got.mask.bool(), batch["completion_mask"][:, 1:][:, -width:].bool())


@pytest.mark.parametrize("warped", WARPED, ids=["plain", "tempered", "top-k", "top-p"])
def test_completion_logprobs_equal_the_full_vocabulary_computation(tiny, warped):
    _check_equal(*tiny, warped, atol=1e-5)  # logits within +-10


def test_average_divides_by_the_completion_length_and_gradients_flow(tiny):
    model, tokenizer = tiny
    batch = encode(tokenizer, PROMPTS, ANSWERS)
    out = completion_logprobs(model, batch)
    mean = completion_logprobs(model, batch, average=True)
    torch.testing.assert_close(mean.sums, out.sums / batch["completion_mask"].sum(-1))
    out.sums.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.transformer.h[0].parameters())
    model.zero_grad()


def test_selective_log_softmax_is_log_softmax_then_gather_in_float32():
    torch.manual_seed(0)
    logits = (10 * torch.randn(9, 5, 300)).to(torch.bfloat16)  # more rows than one chunk
    index = torch.randint(0, 300, (9, 5))
    got, entropy = selective_log_softmax(logits, index, with_entropy=True)
    full = logits.float().log_softmax(-1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, full.gather(-1, index.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1))


def test_length_sorted_sampling_returns_completions_in_prompt_order(tiny):
    """Sorted into calls by prompt length, every prompt still gets its own k completions, in order:
    with the prompt as its own continuation's only evidence, greedy-like sampling repeats per prompt."""
    model, tokenizer = tiny
    prompts = [PROMPTS[i % 4] for i in range(7)]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    config = SamplingConfig(max_new_tokens=4, temperature=1e-4, batch_size=3)  # nearly greedy
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    plain = generate_ids(model, ids, 2, config, pad, eos)
    sorted_ = generate_ids(model, ids, 2, config, pad, eos, sort_by_length=True)
    assert len(sorted_) == 14
    assert sorted_ == plain
    alone = [generate_ids(model, [i], 1, config, pad, eos)[0] for i in ids]
    assert sorted_[::2] == alone


def test_one_generate_call_matches_the_former_batched_sampler(tiny):
    """Training's sampler draws every prompt's k samples in one call: seeded, it reproduces itself and
    groups a prompt's samples together."""
    model, tokenizer = tiny
    torch.manual_seed(5)
    a = sample_completions(model, tokenizer, PROMPTS, 3, 6)
    torch.manual_seed(5)
    b = sample_completions(model, tokenizer, PROMPTS, 3, 6)
    assert a.completion_ids == b.completion_ids and a.num_samples == 3
    assert a.prompts == [p for p in PROMPTS for _ in range(3)]
    batch = a.batch(tokenizer.pad_token_id)
    assert batch["completion_mask"].sum().item() == sum(len(c) for c in a.completion_ids)


@pytest.mark.realmodel
@pytest.mark.parametrize("warped", WARPED, ids=["plain", "tempered", "top-k", "top-p"])
def test_completion_logprobs_equal_the_full_vocabulary_computation_on_smollm2(warped):
    pytest.importorskip("gguf")
    from aihf.lm.pretrained import get_model

    model, tokenizer = load_model(get_model("smollm2-135m-instruct"))
    _check_equal(model, tokenizer, warped, atol=1e-4)  # logits up to about 31: float32 steps of 4e-6
