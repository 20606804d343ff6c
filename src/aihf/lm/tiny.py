"""Tiny causal LMs and reward models built locally, for smoke tests and demos without downloads.

`train_tokenizer` fits a byte-level BPE tokenizer on local text (byte-level, so any input still
tokenises); `build_tiny_models` makes a GPT-2-style policy and a one-label sequence classifier that
share it. Both save with `save_pretrained` and load back with the `Auto*` classes, so the real
loading code paths are exercised on local directories.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from aihf.io import atomic_path

# A little varied English, so the tokenizer learns real merges; any text file can replace it.
DEFAULT_TEXT = """\
The film was a delight from start to finish, with warm performances and a clever script.
I found the story slow and the acting wooden; it was a waste of a good evening.
A quiet, thoughtful movie that rewards patience. The ending moved me more than I expected.
The plot made no sense and the jokes fell flat, but the music was lovely.
This is one of the best films of the year: funny, sad and beautifully shot.
Terrible pacing, dull characters, and a twist you can see coming from a mile away.
She walked to the window and watched the rain fall on the empty street below.
He said the train would be late again, so we sat in the cafe and talked about books.
Our team reviewed the results carefully and agreed that the new method works better.
Please write a short answer that is helpful, honest and kind to the person asking.
"""

SPECIAL_TOKENS = {
    "bos_token": "<|bos|>",
    "eos_token": "<|eos|>",
    "pad_token": "<|pad|>",
    "unk_token": "<|unk|>",
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer trained on `texts`; bos/eos/pad tokens, left padding for generation."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, padding_side="left", **SPECIAL_TOKENS)


def tiny_config(tokenizer: PreTrainedTokenizerFast, **overrides: int) -> GPT2Config:
    """A GPT-2 config a few hundred kB in size; `overrides` set n_embd, n_layer, n_head, n_positions."""
    sizes = {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128} | overrides
    return GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
        **sizes,
    )


def build_tiny_models(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, **sizes: int
) -> tuple[GPT2LMHeadModel, GPT2ForSequenceClassification]:
    """A randomly initialised causal LM and a one-label reward model with the same tokenizer."""
    import torch

    config = tiny_config(tokenizer, **sizes)
    torch.manual_seed(seed)
    policy = GPT2LMHeadModel(config)
    reward = GPT2ForSequenceClassification(config)
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    return policy, reward


def save_tiny_models(
    out_dir: str | Path, texts: Iterable[str] | None = None, seed: int = 0, **sizes: int
) -> Path:
    """Write `out_dir/policy` and `out_dir/reward_model` (each with its tokenizer), atomically."""
    tokenizer = train_tokenizer(texts if texts is not None else DEFAULT_TEXT.splitlines())
    policy, reward = build_tiny_models(tokenizer, seed=seed, **sizes)
    out = Path(out_dir)
    for name, model in (("policy", policy), ("reward_model", reward)):
        with atomic_path(out / name) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return out
