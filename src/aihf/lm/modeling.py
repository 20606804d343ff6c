"""The LM model stack: loading, tokenisation to (prompt, completion) batches, sampling and scoring.

Training, evaluation and the gold reward all use these functions, so a fix here reaches all of them.

One batch layout is used everywhere, TRL's: prompt and completion tokens concatenated, right padded,
with a `completion_mask` marking the answer tokens. Text is tokenised as TRL's DPOTrainer does
(prompt alone, then prompt + answer + EOS; the answer starts where the two diverge), so the
Direct AIHF loss matches TRL's DPO loss exactly when alpha = 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aihf.errors import InputError
from aihf.safety import NonFiniteError, check_hub_name

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# A saved tokenizer has at least one of these; without them transformers builds a useless one-token one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # a PEFT adapter directory's weights


def adapter_base(path: str | Path) -> str | None:
    """The base model a PEFT adapter directory names (its adapter_config.json), or None for a full model."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"{config}: not a readable PEFT adapter config ({type(err).__name__})") from None
    if not isinstance(base, str) or not base:
        raise InputError(f"{config}: names no base model (base_model_name_or_path)")
    return base


def is_saved_model(path: str | Path) -> bool:
    """A complete save_pretrained directory: full weights (config.json) or a PEFT adapter."""
    return (Path(path) / "config.json").is_file() or (Path(path) / "adapter_config.json").is_file()


def check_model_source(path: str, option: str) -> None:
    """Refuse a local model path that cannot load, before anything is loaded: a file, or a directory
    without config.json, weights or tokenizer files. A PEFT adapter directory needs its adapter weights
    and a base model (adapter_config.json's base_model_name_or_path) that passes this check in turn. A
    Hub name passes while the Hub answers or the name is in the local cache; otherwise it fails at once
    with one line."""
    local = Path(path)
    if not local.exists():
        if path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise InputError(f"{option} {path}: no such model directory")
        check_hub_name(path, option)  # offline: one line now, not a dozen retries later
        return
    if not local.is_dir():
        raise InputError(f"{option} {path}: is a file, expected a model directory (save_pretrained)")
    base = adapter_base(local)
    if base is not None:
        if not any((local / name).is_file() for name in ADAPTER_FILES):
            raise InputError(f"{option} {path}: a PEFT adapter without {ADAPTER_FILES[0]}")
        check_model_source(base, f"{option} {path}: its base model")
        return
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
    for weights in sorted(local.glob("*.safetensors")):
        _check_safetensors(weights, f"{option} {path}")


def _check_safetensors(path: Path, where: str) -> None:
    """A safetensors file whose header is damaged, oversized or promises more bytes than the file holds
    is refused now, reading the header only, not when the weights load (after --out was created)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{where}: {path.name}: not a readable safetensors file ({reason})") from None


def load_tokenizer(path: str) -> Any:
    """The tokenizer of a model directory; an adapter directory without one uses its base model's."""
    from transformers import AutoTokenizer

    check_model_source(path, "model")
    base = adapter_base(path) if Path(path).is_dir() else None
    if base is not None and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        return load_tokenizer(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise InputError(f"{path}: could not load a tokenizer ({type(err).__name__}: {err})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_init_kwargs(config: Any = None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments of a config's `dtype` and `attn_implementation` (TRL's
    `model_init_kwargs`); without a config, float32 and transformers' default attention."""
    dtype = getattr(config, "dtype", "float32")
    kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if getattr(config, "attn_implementation", None) is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    return kwargs


def _record_source(model: Any, path: str) -> Any:
    """Name the model by where it was loaded from (a local directory as an absolute path): what a
    LoRA adapter trained on it records as its base, and where its reference copy is loaded from."""
    source = str(Path(path).resolve()) if Path(path).is_dir() else path
    model.name_or_path = source
    model.config._name_or_path = source
    return model


def load_causal_lm(path: str, init: dict[str, Any] | None = None) -> Any:
    """A causal LM, built with `init` (`model_init_kwargs`; default float32: `bf16` training autocasts
    and casts only frozen copies). A PEFT adapter directory loads over its base and is merged, so every
    caller gets a plain model."""
    from transformers import AutoModelForCausalLM

    init = model_init_kwargs() | (init or {})
    base = adapter_base(path) if Path(path).is_dir() else None
    try:
        if base is not None:
            from peft import PeftModel

            merged = PeftModel.from_pretrained(load_causal_lm(base, init), path).merge_and_unload()
            model = merged.requires_grad_(True)  # peft froze the base for inference; it trains on from here
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **init)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path}: could not load a causal LM ({type(err).__name__}: {err})") from err
    return _record_source(model, path)


def load_reward_model(path: str, init: dict[str, Any] | None = None) -> Any:
    """A one-label sequence classifier: the reward R(x, y) is its single logit (float32 by default)."""
    from transformers import AutoModelForSequenceClassification

    init = model_init_kwargs() | (init or {})
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **init)
    except Exception as err:
        raise InputError(f"{path}: could not load a reward model ({type(err).__name__}: {err})") from err
    if model.config.pad_token_id is None:
        tokenizer = load_tokenizer(path)
        model.config.pad_token_id = tokenizer.pad_token_id
    return _record_source(model, path)


def load_model(path: str | Path, kind: str = "policy") -> tuple[Any, Any]:
    """A causal LM (`kind="policy"`; full weights or a PEFT adapter) or reward model (`kind="reward"`) in
    evaluation mode, and its tokenizer: what evaluation and data generation read a saved model with."""
    path = str(path)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path) if kind == "policy" else load_reward_model(path)
    # Generation pads on the left; scoring pads on the right so positions stay the natural ones.
    tokenizer.padding_side = "left" if kind == "policy" else "right"
    return model.eval(), tokenizer


def lora_config(config: Any, task_type: str) -> Any:
    """The LoRA adapter of a config with `use_peft` (`lora_*` fields), for our trainers and TRL's alike."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
    )


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
    """Per-sequence summed completion log-probabilities, and per-token values for KL / entropy.

    Token tensors cover the positions from the batch's first completion token to its end (prompt-only
    columns are never computed), zero outside the completion."""

    sums: torch.Tensor  # [B]
    tokens: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, L]
    entropy: torch.Tensor | None = None  # [B, L] token entropies (no gradient), when asked for


ROW_CHUNK = 4  # rows per float32 log-softmax reduction: bounds the temporaries to [4, L, V]


def selective_log_softmax(
    logits: torch.Tensor, index: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits)[index] per position, in float32, without a [B, L, V] log-softmax kept.

    logsumexp and a gather, a few rows at a time; the entropy (no gradient) reuses the logsumexp."""
    logps, entropies = [], []
    for rows, ids in zip(logits.split(ROW_CHUNK), index.split(ROW_CHUNK)):
        rows = rows.float()
        lse = rows.logsumexp(-1)
        logps.append(rows.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse)
        if with_entropy:  # -sum p log p: no cancellation of two large terms, unlike lse - sum p x
            with torch.no_grad():
                log_p = rows - lse.unsqueeze(-1)
                terms = log_p.exp() * log_p
                entropies.append(-terms.masked_fill(rows.isinf(), 0.0).sum(-1))  # top-k / top-p: -inf
    return torch.cat(logps), torch.cat(entropies) if with_entropy else None


def completion_logprobs(
    model: Any,
    batch: dict[str, torch.Tensor],
    with_entropy: bool = False,
    warpers: Any = None,
    average: bool = False,
) -> LogProbs:
    """log pi(completion | prompt) by one forward pass, the one log-prob path of training, evaluation and
    the gold.

    Only the completion positions reach the LM head (`logits_to_keep`, as TRL): with SmolLM2's 49,152-word
    vocabulary the prompt's logits would be most of the work. `warpers` (transformers logits processors)
    give the distribution `generate` samples from under temperature / top-k / top-p; `average` divides
    the sums by the completion length (IPO)."""
    input_ids, completion = batch["input_ids"], batch["completion_mask"]
    first = int(completion.any(0).long().argmax()) if completion.any() else input_ids.size(1) - 1
    first = max(first, 1)  # position 0 has no prediction
    keep = input_ids.size(1) - first + 1
    logits = model(
        input_ids=input_ids, attention_mask=batch["attention_mask"], use_cache=False, logits_to_keep=keep
    ).logits[:, :-1]
    labels = input_ids[:, first:]
    if warpers:  # the warpers act on one position at a time: flatten (batch, time) into rows
        flat = logits.float().reshape(-1, logits.size(-1))
        logits = warpers(labels.reshape(-1, 1), flat).reshape(logits.shape)
    mask = completion[:, first:].float()
    tokens, entropy = selective_log_softmax(logits, labels, with_entropy)
    tokens = tokens.masked_fill(mask == 0, 0.0)  # 0, not 0 * -inf, where a warper filtered the label
    sums = tokens.sum(-1)
    if average:
        sums = sums / mask.sum(-1).clamp(min=1)
    return LogProbs(sums, tokens, mask, entropy.masked_fill(mask == 0, 0.0) if entropy is not None else None)


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
class SamplingConfig:
    """How evaluation samples: `generate`'s settings and the prompts per `generate` call."""

    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 64


@dataclass
class Samples:
    """Sampled completions with the exact token ids they were sampled as (for exact log-probabilities).

    `num_samples` completions per prompt, grouped: `prompts[i]` and `prompt_ids[i]` belong to completion i.
    """

    prompts: list[str]
    completions: list[str]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    gold: list[float] = field(default_factory=list)
    num_samples: int = 1

    def batch(self, pad_token_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The token batch of every (prompt, completion), right padded: the policy loss's input."""
        return collate(self.prompt_ids, self.completion_ids, pad_token_id, device=device)


def prompt_token_ids(
    tokenizer: Any, prompts: Sequence[str], max_prompt_length: int | None, add_special_tokens: bool = False
) -> list[list[int]]:
    ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    if max_prompt_length is not None:
        ids = [i[-max_prompt_length:] for i in ids]  # keep the end, next to the answer
    return ids


def samples_from_ids(
    tokenizer: Any,
    prompts: Sequence[str],
    prompt_ids: Sequence[list[int]],
    generated: Sequence[list[int]],
    num_samples: int,
) -> Samples:
    """Samples from generated ids (k consecutive per prompt): cut after EOS (kept), decode."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    completion_ids = []
    for ids in generated:
        ids = list(ids)
        if eos in ids:
            ids = ids[: ids.index(eos) + 1]
        elif pad in ids and pad != eos:
            ids = ids[: ids.index(pad)]
        completion_ids.append(ids or [eos])
    repeated_ids = [list(ids) for ids in prompt_ids for _ in range(num_samples)]
    repeated = [p for p in prompts for _ in range(num_samples)]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Samples(repeated, texts, repeated_ids, completion_ids, num_samples=num_samples)


def _left_padded(prompt_ids: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in prompt_ids)
    inputs = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    attention = torch.zeros_like(inputs)
    for i, ids in enumerate(prompt_ids):
        inputs[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids) :] = 1
    return inputs, attention


@torch.no_grad()
def generate_ids(
    model: Any,
    prompt_ids: Sequence[list[int]],
    num_samples: int,
    config: SamplingConfig,
    pad_token_id: int,
    eos_token_id: int,
    sort_by_length: bool = False,
) -> list[list[int]]:
    """`num_samples` completions per prompt (grouped, in prompt order) by `model.generate` with its KV
    cache, `config.batch_size` prompts per call, left padded.

    `sort_by_length` puts prompts of similar length in one call, so little of a call is padding; the
    results come back in prompt order. It changes which random draws each prompt gets, so it is off
    where a seeded run must reproduce earlier samples."""
    order = list(range(len(prompt_ids)))
    if sort_by_length:
        order.sort(key=lambda i: len(prompt_ids[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generated: dict[int, list[list[int]]] = {}
    for start in range(0, len(order), config.batch_size):
        chunk = order[start : start + config.batch_size]
        inputs, attention = _left_padded([prompt_ids[i] for i in chunk], pad_token_id)
        try:
            out = model.generate(
                input_ids=inputs.to(device),
                attention_mask=attention.to(device),
                do_sample=True,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                max_new_tokens=config.max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
            )
        except RuntimeError as err:  # torch.multinomial on NaN / inf probabilities: diverged weights
            if "probability tensor contains" not in str(err):
                raise
            raise NonFiniteError(
                "the policy's next-token probabilities are not finite (training diverged; lower the "
                "learning rate)"
            ) from None
        rows = out[:, inputs.size(1) :].tolist()
        for j, i in enumerate(chunk):
            generated[i] = rows[j * num_samples : (j + 1) * num_samples]
    model.train(was_training)
    return [ids for i in range(len(prompt_ids)) for ids in generated[i]]


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
    batch_size: int | None = None,
) -> Samples:
    """k sampled completions per prompt (training's sampler); `model` must be the unwrapped module.

    One `generate` call for all prompts unless `batch_size` caps the prompts per call; then the calls
    take prompts sorted by length, so a call pads little."""
    prompt_ids = prompt_token_ids(tokenizer, prompts, max_prompt_length)
    config = SamplingConfig(max_new_tokens, temperature, top_k, top_p, batch_size or len(prompt_ids))
    chunked = len(prompt_ids) > config.batch_size
    generated = generate_ids(
        model, prompt_ids, num_samples, config, tokenizer.pad_token_id, tokenizer.eos_token_id, chunked
    )
    return samples_from_ids(tokenizer, prompts, prompt_ids, generated, num_samples)


def as_reward_fn(reward: RewardScorer | RewardFn) -> Callable[[list[str], list[str]], torch.Tensor]:
    """A frozen reward as a no-grad function returning a float tensor (models or plain Python callables)."""

    def score(prompts: list[str], completions: list[str]) -> torch.Tensor:
        with torch.no_grad():
            values = reward(prompts, completions)
        if isinstance(values, torch.Tensor):
            return values.detach().float().cpu()
        return torch.tensor([float(v) for v in values], dtype=torch.float32)

    return score
