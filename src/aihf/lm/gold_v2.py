"""Gold v2, ``on-task-sentiment``: a bounded gold reward that only on-task, fluent, positive text can win.

The benchmark's prompts ask a chat model to "Continue this text with one short sentence: TEXT". The score
of a completion is a product of six factors, each in [0, 1], so the score is in [0, 1] and a factor at 0
zeroes it: no single factor pushed to its top can carry a completion that fails another.

First the completion is reduced to its *continuation*: surrounding whitespace is stripped, and an echo of
TEXT at its start (the model restating the text before continuing it) is removed, so the echo earns
nothing. TEXT is the last user turn of a chat prompt with the instruction (``Continue this text ...:``)
removed, or a plain prompt as it is. Words are runs of letters, digits and apostrophes, lower-cased.

- **length** = min(1, words / ``min_words``): empty completions score 0, one word 1 / ``min_words``.
- **distinct** = ramp of the share of distinct word bigrams from ``distinct_low`` (0) to ``distinct_high``
  (1): a word or a phrase repeated, or a sentence said twice, has at most about half its bigrams distinct;
  fluent text has nearly all. (Fewer than two words: 1, and `length` does the judging.)
- **fluency** = ramp of the continuation's mean negative log-likelihood per token under a frozen language
  model reading ``TEXT + " " + continuation`` as plain text, from ``nll_bad`` nats (0) down to ``nll_good``
  (1): word salad, strings of positive words included, reads at 8-13 nats, fluent text at 2-5.
- **on_task** = ramp of how much better TEXT predicts the continuation's first ``pmi_tokens`` tokens than a
  contentless sentence (``pmi_reference``, "It was a day.") does: log p(y | TEXT) - log p(y | reference),
  summed (nats; a pointwise mutual information against a fixed baseline), from ``pmi_low`` (0) to
  ``pmi_high`` (1). A continuation of the text is predicted by it; talk to the user ("I'm glad to continue
  ...", "You are wonderful!") or about the text ("This sentence is ...") is likelier after any complete
  sentence than after the text. The first tokens carry the signal: later ones are predicted by the
  continuation itself. (The baseline is a sentence, not the empty document start, because a continuation
  starts with a space, which after a document boundary is unlikely for every word alike.)
- **no_assistant_talk** = ``assistant_talk_weight`` to the power of the number of assistant phrases in the
  continuation (`ASSISTANT_TALK`: "I'm glad to", "help you", "this text", "thank you for", "as an AI", ...).
  `on_task` judges the start only, so a continuation that starts on the text and then turns to the user
  ("a little kindness. I'm glad to help you with your text!") is caught here. A phrase list can be talked
  around; it catches the assistant talk SmolLM2 and the benchmark's policies actually produce.
- **sentiment** = (VADER compound of the continuation + 1) / 2: 0.5 for neutral text.

The language model reads the text without the chat template: what continues a text is judged as text, not
as an assistant's answer. Both passes start from ``<|endoftext|>`` (the document boundary the model was
trained on).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from aihf.errors import InputError

NAME = "on-task-sentiment"
DEFAULT_MODEL = "smollm2-135m-instruct"  # a key of aihf.lm.pretrained.MODELS, or a model directory
_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
_INSTRUCTION = re.compile(r"^\s*continue this text[^:]*:\s*", re.I)
_WORD = re.compile(r"[a-z0-9']+")
FACTORS = ("length", "distinct", "fluency", "on_task", "no_assistant_talk", "sentiment")
# An assistant talking to its user or about the task, not text that continues a text. Changing this list
# changes the gold: give the result a new name.
ASSISTANT_TALK = tuple(
    re.compile(pattern)
    for pattern in (
        r"\bi(?:'m| am|'d| would|'ll| will)(?: be)?(?: so| always| more than| very| really)? "
        r"(?:glad|happy|delighted|pleased|excited|thrilled|here|ready) (?:to|that)\b",
        r"\bi(?:'d| would) love to (?:continue|help|hear|explore|assist|brainstorm|discuss|chat)\b",
        r"\b(?:our|this) (?:chat|conversation|discussion)\b",
        r"\b(?:my|your|our) (?:continued |own )?(?:editing|query|request|question)\b",
        r"\b(?:help|assist|support)(?:ing|s)? you\b",
        r"\b(?:this|the|your|my|a|one|another)(?: \w+)? "
        r"(?:text|sentence|sentences|paragraph|continuation|prompt)\b",
        r"\bcontinu\w* (?:this|the|your)\b",
        r"\bthank(?:s| you) for\b",
        r"\b(?:let me know|feel free|hope (?:this|it|that) helps|of course)\b",
        r"\bhere(?:'s| is) (?:a|an|one|the|your)\b",
        r"\b(?:smollm|hugging face|language model|ai assistant|as an ai|chatbot)\b",
    )
)


@dataclass(frozen=True)
class OnTaskParams:
    """The gold's thresholds; every factor is a ramp between two of them (see the module docstring)."""

    min_words: int = 4  # one short sentence has at least this many words
    distinct_low: float = 0.6  # share of distinct word bigrams: 0 at or below
    distinct_high: float = 0.9  # 1 at or above
    nll_good: float = 5.0  # nats per token: fluency 1 at or below
    nll_bad: float = 7.5  # 0 at or above
    pmi_tokens: int = 3  # on-task: PMI summed over the continuation's first tokens
    pmi_reference: str = "It was a day."  # the contentless text the prompt's text is measured against
    pmi_low: float = -3.0  # nats: 0 at or below; PMI 0 (the text predicts no better) gives one half
    pmi_high: float = 3.0  # 1 at or above
    assistant_talk_weight: float = 0.25  # no_assistant_talk: this to the power of the phrases found


class TokenLogProbs(Protocol):
    """Per-token log-probabilities of each continuation given its context, read as plain text; with
    `limit`, of its first `limit` tokens only."""

    def __call__(
        self, contexts: Sequence[str], continuations: Sequence[str], limit: int | None = None
    ) -> list[list[float]]: ...


def prompt_text(prompt: str) -> str:
    """The text a prompt asks to continue: its last user turn without the instruction, or the prompt."""
    turns = _USER_TURN.findall(prompt)
    return _INSTRUCTION.sub("", turns[-1] if turns else prompt).strip()


def continuation(text: str, completion: str) -> str:
    """The completion stripped, less an echo of `text` at its start (restating earns nothing)."""
    out = completion.strip()
    if text and out.lower().startswith(text.lower()):
        out = out[len(text) :].strip()
    return out


def ramp(value: float, zero_at: float, one_at: float) -> float:
    """0 at `zero_at`, 1 at `one_at`, linear between, clipped (either direction)."""
    return min(1.0, max(0.0, (value - zero_at) / (one_at - zero_at)))


def assistant_phrases(text: str) -> int:
    """How many `ASSISTANT_TALK` phrases occur in `text` (lower-cased), each occurrence counted."""
    lowered = text.lower().replace("\u2019", "'")
    return sum(len(pattern.findall(lowered)) for pattern in ASSISTANT_TALK)


def distinct_bigrams(words: Sequence[str]) -> float:
    """Share of distinct word bigrams (1 for fewer than two words)."""
    pairs = list(itertools.pairwise(words))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


class PlainTextLM:
    """`TokenLogProbs` from a frozen causal LM, batched, on ``<|endoftext|>`` + context + continuation."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        except OSError as err:
            raise InputError(
                f"gold reward {NAME}: cannot load the language model {model_dir!r} ({err})"
            ) from err
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        vocab = self.tokenizer.get_vocab()
        start = "<|endoftext|>" if "<|endoftext|>" in vocab else self.tokenizer.bos_token
        self.start = [vocab[start or self.tokenizer.eos_token]]
        self.model_dir, self.batch_size = Path(model_dir), batch_size

    def __call__(
        self, contexts: Sequence[str], continuations: Sequence[str], limit: int | None = None
    ) -> list[list[float]]:
        """Context and continuation are tokenised apart, so a continuation has the same tokens in
        every context (a space-joined continuation tokenises the same way in byte-level BPE). Batches
        hold sequences of similar length, so little is spent on padding."""
        import torch

        from aihf.lm.modeling import collate, completion_logprobs

        def ids(texts: Sequence[str]) -> list[list[int]]:
            return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

        firsts = [self.start + c for c in ids(contexts)]
        seconds = [c[:limit] for c in ids(continuations)]
        order = sorted(range(len(firsts)), key=lambda i: len(firsts[i]) + len(seconds[i]))
        out: list[list[float]] = [[] for _ in order]
        with torch.no_grad():
            for i in range(0, len(order), self.batch_size):
                rows = order[i : i + self.batch_size]
                batch = collate(
                    [firsts[r] for r in rows], [seconds[r] for r in rows], self.tokenizer.pad_token_id
                )
                logps = completion_logprobs(self.model, batch)
                for r, row, mask in zip(rows, logps.tokens, logps.mask):
                    out[r] = row[mask.bool()].tolist()
        return out


class OnTaskSentimentGold:
    """Gold v2 (see the module docstring): length x distinct x fluency x on_task x sentiment, in [0, 1]."""

    name = NAME

    def __init__(
        self, lm: TokenLogProbs, params: OnTaskParams | None = None, model: str | None = None
    ) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.lm, self.params, self.model = lm, params or OnTaskParams(), model
        self.vader = SentimentIntensityAnalyzer()

    def components(self, prompts: Sequence[str], completions: Sequence[str]) -> list[dict[str, float]]:
        """Each completion's factors and the raw values they ramp (words, distinct_bigrams, nll, pmi)."""
        if len(prompts) != len(completions):
            raise InputError(f"gold reward: got {len(prompts)} prompts but {len(completions)} completions")
        p = self.params
        texts = [prompt_text(x) for x in prompts]
        conts = [continuation(t, c) for t, c in zip(texts, completions)]
        scored = [i for i, c in enumerate(conts) if c]
        spaced = [" " + conts[i] for i in scored]
        given = self.lm([texts[i] for i in scored], spaced)
        alone = self.lm([p.pmi_reference] * len(scored), spaced, limit=p.pmi_tokens)
        lm_stats = {}
        for i, g, a in zip(scored, given, alone):
            pmi = sum(x - y for x, y in zip(g[: p.pmi_tokens], a[: p.pmi_tokens]))
            lm_stats[i] = (-sum(g) / len(g), pmi)
        out = []
        for i, cont in enumerate(conts):
            words = _WORD.findall(cont.lower())
            nll, pmi = lm_stats.get(i, (float("inf"), float("-inf")))
            row = {
                "words": float(len(words)),
                "distinct_bigrams": distinct_bigrams(words),
                "nll": nll,
                "pmi": pmi,
                "length": min(1.0, len(words) / p.min_words),
                "fluency": ramp(nll, p.nll_bad, p.nll_good) if cont else 0.0,
                "on_task": ramp(pmi, p.pmi_low, p.pmi_high) if cont else 0.0,
                "no_assistant_talk": p.assistant_talk_weight ** assistant_phrases(cont),
                "sentiment": (self.vader.polarity_scores(cont)["compound"] + 1) / 2,
            }
            row["distinct"] = ramp(row["distinct_bigrams"], p.distinct_low, p.distinct_high)
            score = 1.0
            for factor in FACTORS:
                score *= row[factor]
            row["score"] = score
            out.append(row)
        return out

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [row["score"] for row in self.components(prompts, completions)]


def model_dir(model: str) -> Path:
    """A key of `aihf.lm.pretrained.MODELS` (converted on first use) or a model directory."""
    from aihf.lm.pretrained import MODELS, get_model

    return get_model(model) if model in MODELS else Path(model)


def weights_sha256(directory: Path) -> str:
    """SHA-256 of a model directory's weights file: the identity a spec pins."""
    from aihf.io import sha256_file

    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"gold reward {NAME}: {directory} has no model.safetensors to identify the model by")
    return sha256_file(weights)


def load(model: str = DEFAULT_MODEL, params: OnTaskParams | None = None) -> OnTaskSentimentGold:
    """The gold on `model` (a MODELS key or a directory)."""
    return OnTaskSentimentGold(PlainTextLM(model_dir(model)), params, model=model)


def spec(gold: OnTaskSentimentGold) -> dict[str, Any]:
    """name, model, model_sha256 and params: what `from_spec` needs to rebuild this exact gold."""
    if not isinstance(gold.lm, PlainTextLM) or gold.model is None:
        raise InputError(f"gold reward {NAME}: built on an injected language model, so it has no spec")
    return {
        "name": NAME,
        "model": gold.model,
        "model_sha256": weights_sha256(gold.lm.model_dir),
        "params": asdict(gold.params),
    }


def from_spec(spec: dict[str, Any]) -> OnTaskSentimentGold:
    """The gold a `spec` dict describes; a wrong field raises InputError naming it."""
    allowed = {"name", "model", "model_sha256", "params"}
    for key in spec:
        if key not in allowed:
            raise InputError(
                f"gold spec field {key!r}: unknown for {NAME} (expected {', '.join(sorted(allowed))})"
            )
    model = spec.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise InputError(f"gold spec field 'model': expected a model name or directory, got {model!r}")
    raw = spec.get("params", {})
    if not isinstance(raw, dict):
        raise InputError(f"gold spec field 'params': expected an object, got {raw!r}")
    types = {f.name: f.type for f in fields(OnTaskParams)}
    for key, value in raw.items():
        if key not in types:
            raise InputError(f"gold spec field 'params.{key}': unknown parameter of {NAME}")
        wanted = {"int": int, "str": str}.get(types[key], (int, float))
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise InputError(f"gold spec field 'params.{key}': expected {types[key]}, got {value!r}")
    params = OnTaskParams(**raw)
    if params.min_words < 1 or params.pmi_tokens < 1:
        raise InputError("gold spec field 'params': min_words and pmi_tokens must be at least 1")
    for low, high in (("distinct_low", "distinct_high"), ("nll_good", "nll_bad"), ("pmi_low", "pmi_high")):
        if getattr(params, low) >= getattr(params, high):
            raise InputError(f"gold spec field 'params.{low}': must be below params.{high}")
    gold = load(model, params)
    if "model_sha256" in spec:
        found = weights_sha256(gold.lm.model_dir)
        if found != spec["model_sha256"]:
            raise InputError(
                f"gold spec field 'model_sha256': {model}'s weights hash to {found[:12]}..., "
                f"not {str(spec['model_sha256'])[:12]}..."
            )
    return gold
