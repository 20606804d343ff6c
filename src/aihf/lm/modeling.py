"""Model loading, tokenisation to (prompt, completion) batches, sampling and scoring.

One batch layout is used everywhere, TRL's: prompt and completion tokens concatenated, right padded,
with a `completion_mask` marking the answer tokens. Text is tokenised as TRL's DPOTrainer does
(prompt alone, then prompt + answer + EOS; the answer starts where the two diverge), so the
Direct AIHF loss matches TRL's DPO loss exactly when alpha = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aihf.errors import InputError
from aihf.losses import sequence_logprobs

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# A saved tokenizer has at least one of these; without them transformers builds a useless one-token one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


def check_model_source(path: str, option: str) -> None:
    """Refuse a local model path that cannot load, before anything is loaded: a file, or a directory
    without config.json, weights or tokenizer files. Hub names pass (they are checked when loaded)."""
    local = Path(path)
    if not local.exists():
        if path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise InputError(f"{option} {path}: no such model directory")
        return
    if not local.is_dir():
        raise InputError(f"{option} {path}: is a file, expected a model directory (save_pretrained)")
    missing = []
    if not (local / "config.json").is_file():
        missing.append("config.json")
    if not any((local / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (model.safetensors, pytorch_model.bin)")
    if not any((local / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)")
    if missing:
        found = " and no ".join(missing)
        raise InputError(f"{option} {path}: no {found}; expected a save_pretrained directory")


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    check_model_source(path, "model")

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise InputError(f"{path}: could not load a tokenizer ({type(err).__name__}: {err})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str) -> Any:
    """Loaded in float32: `bf16` training autocasts (accelerate / TRL) and casts only frozen copies."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as err:
        raise InputError(f"{path}: could not load a causal LM ({type(err).__name__}: {err})") from err
    return model


def load_reward_model(path: str) -> Any:
    """A one-label sequence classifier: the reward R(x, y) is its single logit (float32, as the policy)."""
    from transformers import AutoModelForSequenceClassification

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    except Exception as err:
        raise InputError(f"{path}: could not load a reward model ({type(err).__name__}: {err})") from err
    if model.config.pad_token_id is None:
        tokenizer = load_tokenizer(path)
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pairs(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], add_eos: bool = True
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per pair, tokenised as TRL does: the prompt alone and prompt + answer
    (+ EOS), the answer starting where the two diverge. Two batched tokenizer calls for the whole list."""
    eos = tokenizer.eos_token or ""
    if add_eos and eos:
        completions = [c if c.endswith(eos) else c + eos for c in completions]
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    full_ids = tokenizer([p + c for p, c in zip(prompts, completions)], add_special_tokens=False)["input_ids"]
    pairs = []
    for p_ids, f_ids in zip(prompt_ids, full_ids):
        cut = _common_prefix(p_ids, f_ids)
        pairs.append((p_ids[:cut], f_ids[cut:]))
    return pairs


def collate(
    prompt_ids: Sequence[list[int]],
    completion_ids: Sequence[list[int]],
    pad_token_id: int,
    max_length: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / completion_mask; cut to `max_length` (keep the start)."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    masks = [[0] * len(p) + [1] * len(c) for p, c in zip(prompt_ids, completion_ids)]
    if max_length is not None:
        seqs = [s[:max_length] for s in seqs]
        masks = [m[:max_length] for m in masks]
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([s + [pad_token_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    completion = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.long)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "completion_mask": completion.to(device),
    }


def encode(
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_length: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    pairs = tokenize_pairs(tokenizer, prompts, completions)
    return collate([p for p, _ in pairs], [c for _, c in pairs], tokenizer.pad_token_id, max_length, device)


@dataclass
class LogProbs:
    """Per-sequence summed completion log-probabilities, and per-token values for KL / entropy."""

    sums: torch.Tensor  # [B]
    tokens: torch.Tensor  # [B, T-1], zero outside the completion
    mask: torch.Tensor  # [B, T-1]
    entropy: torch.Tensor | None = None  # [B, T-1] token entropies, when asked for


def completion_logprobs(model: Any, batch: dict[str, torch.Tensor], with_entropy: bool = False) -> LogProbs:
    """log pi(completion | prompt) by one forward pass (aihf.losses.sequence_logprobs)."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    logits = logits.float()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    sums = sequence_logprobs(logits, labels)
    mask = batch["completion_mask"][:, 1:].to(logits.dtype)
    log_probs = logits[:, :-1].log_softmax(-1)
    tokens = torch.gather(log_probs, 2, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1) * mask
    entropy = None
    if with_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1).detach() * mask
    return LogProbs(sums, tokens, mask, entropy)


class RewardScorer:
    """R(x, y) from a one-label classifier, re-tokenising the text with the reward model's own tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        eos = self.tokenizer.eos_token or ""
        texts = [
            p + c + (eos if eos and eos != self.tokenizer.pad_token else "")
            for p, c in zip(prompts, completions)
        ]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        if self.max_length is not None:
            ids = [i[: self.max_length] for i in ids]
        device = next(self.model.parameters()).device
        batch = collate([[]] * len(ids), ids, self.tokenizer.pad_token_id, device=device)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits[:, 0].float()


@dataclass
class Samples:
    """k sampled completions per prompt: text for the reward, exact token batch for the policy loss."""

    prompts: list[str]  # each prompt repeated k times, grouped
    completions: list[str]
    batch: dict[str, torch.Tensor]
    num_samples: int


def prompt_token_ids(
    tokenizer: Any, prompts: Sequence[str], max_prompt_length: int | None
) -> list[list[int]]:
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_length is not None:
        ids = [i[-max_prompt_length:] for i in ids]  # keep the end, next to the answer
    return ids


def samples_from_ids(
    tokenizer: Any,
    prompts: Sequence[str],
    prompt_ids: Sequence[list[int]],
    generated: Sequence[list[int]],
    num_samples: int,
    device: torch.device | str,
) -> Samples:
    """Samples from generated ids (k consecutive per prompt): cut after EOS, decode, build the token batch."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    completion_ids = []
    for ids in generated:
        ids = list(ids)
        if eos in ids:
            ids = ids[: ids.index(eos) + 1]
        elif pad in ids and pad != eos:
            ids = ids[: ids.index(pad)]
        completion_ids.append(ids or [eos])
    repeated_ids = [ids for ids in prompt_ids for _ in range(num_samples)]
    repeated = [p for p in prompts for _ in range(num_samples)]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Samples(repeated, texts, collate(repeated_ids, completion_ids, pad, device=device), num_samples)


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_prompt_length: int | None = None,
) -> Samples:
    """Batched sampling with the KV cache (`model.generate`); `model` must be the unwrapped module."""
    device = next(model.parameters()).device
    prompt_ids = prompt_token_ids(tokenizer, prompts, max_prompt_length)
    width = max(len(ids) for ids in prompt_ids)
    pad = tokenizer.pad_token_id
    inputs = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    attention = torch.zeros_like(inputs)
    for i, ids in enumerate(prompt_ids):  # left padding for generation
        inputs[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=inputs.to(device),
        attention_mask=attention.to(device),
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.train(was_training)
    return samples_from_ids(tokenizer, prompts, prompt_ids, out[:, width:].tolist(), num_samples, device)


def as_reward_fn(reward: RewardScorer | RewardFn) -> Callable[[list[str], list[str]], torch.Tensor]:
    """A frozen reward as a no-grad function returning a float tensor (models or plain Python callables)."""

    def score(prompts: list[str], completions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            values = reward(prompts, completions)
        if isinstance(values, torch.Tensor):
            return values.detach().float().cpu()
        return torch.tensor([float(v) for v in values], dtype=torch.float32)

    return score
