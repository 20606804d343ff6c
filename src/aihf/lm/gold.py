"""Gold rewards: the "true" reward a benchmark measures policies with, and trains its data generator on.

The paper scores IMDb continuations with a sentiment classifier (distilbert-imdb) and safety with
beaver-7b. Here the default is VADER's compound sentiment score (`vaderSentiment`, a rule-based
scorer that needs no download), in [-1, 1]. Every gold reward has one signature,

    reward_fn(prompts: list[str], completions: list[str]) -> list[float]

and `load_gold_reward(spec)` builds one from a spec string:

- ``vader`` (default): VADER compound score of prompt + completion (the whole text, as the paper's
  classifier sees the whole review); ``vader-completion`` scores the completion alone.
- ``fluent-sentiment`` (or ``fluent-sentiment:MODEL_DIR``): positive sentiment that word salad cannot
  game. VADER (compound of the completion, mapped to [0, 1]) minus a fluency penalty,
  ``penalty * max(0, nll - threshold)``, where ``nll`` is the completion's mean negative
  log-likelihood per token under a frozen language model given the prompt (default: SmolLM2-135M-Instruct
  from `aihf lm get-model`). Strings of positive words saturate VADER but read at 5-7 nats/token, far
  above fluent English (about 2), so they score below fluent text of the same sentiment.
- ``on-task-sentiment`` (or ``on-task-sentiment:MODEL``): gold v2 (`aihf.lm.gold_v2`), in [0, 1]; only
  fluent, positive text that continues the prompt's text scores high (off-task talk, word salad,
  repetition and empty or one-word answers score low). Use it for new results; ``fluent-sentiment``
  stays as it was for the results that name it.
- ``module:function``: any importable callable with the signature above.
- a directory or Hub name of a Hugging Face sequence-classification model, optionally ``PATH#LABEL``
  to pick the logit of a label (name or index; default: the label named like "positive", else the
  last logit); e.g. ``lvwerra/distilbert-imdb#POSITIVE`` reproduces the paper's gold reward.

`gold_spec(fn)` records a built-in gold as a JSON-able dict (name, parameters, the model's weights hash)
that `load_gold_reward(spec)` rebuilds exactly, so a results file names the gold it was measured with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.lm import gold_v2

RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def _check_lengths(prompts: Sequence[str], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise InputError(f"gold reward: got {len(prompts)} prompts but {len(completions)} completions")


class VaderGold:
    """VADER compound sentiment in [-1, 1]: positive text scores high."""

    def __init__(self, completion_only: bool = False) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.completion_only = completion_only
        self.name = "vader-completion" if completion_only else "vader"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_lengths(prompts, completions)
        texts = completions if self.completion_only else [p + c for p, c in zip(prompts, completions)]
        return [float(self.analyzer.polarity_scores(t)["compound"]) for t in texts]


class ClassifierGold:
    """The logit of one label of a Hugging Face sequence classifier, on prompt + completion."""

    def __init__(
        self, path: str, label: str | None = None, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        except OSError as err:
            raise InputError(
                f"gold reward {path!r}: could not load a sequence-classification model ({err})"
            ) from err
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"  # natural positions; classifiers read the last real token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.index = self._label_index(label)
        self.batch_size, self.device, self.name = batch_size, device, f"{path}#{self.index}"
        self._torch = torch

    def _label_index(self, label: str | None) -> int:
        id2label = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        n = self.model.config.num_labels
        if label is None:
            positive = [i for i, name in id2label.items() if name.lower() in {"positive", "pos", "label_1"}]
            return positive[0] if positive and n > 1 else n - 1
        if label.isdigit() and int(label) < n:
            return int(label)
        for i, name in id2label.items():
            if name.lower() == label.lower():
                return i
        raise InputError(
            f"gold reward: label {label!r} not among the model's labels {sorted(id2label.values())}"
        )

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_lengths(prompts, completions)
        texts = [p + c for p, c in zip(prompts, completions)]
        scores: list[float] = []
        with self._torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True
                ).to(self.device)
                scores.extend(self.model(**batch).logits[:, self.index].float().tolist())
        return scores


class FluentSentimentGold:
    """VADER sentiment of the completion in [0, 1] minus a penalty on its surprise to a frozen LM."""

    def __init__(
        self,
        model_dir: str | None = None,
        threshold: float = 4.5,  # nats/token; short fluent completions of odd prompts read at 3-4.5
        penalty: float = 0.5,
        batch_size: int = 16,
    ) -> None:
        from aihf.lm.modeling import load_model

        if model_dir is None:
            from aihf.lm.pretrained import get_model

            model_dir = str(get_model("smollm2-135m-instruct"))
        try:
            self.model, self.tokenizer = load_model(model_dir)
        except InputError as err:
            raise InputError(f"gold reward fluent-sentiment: the fluency model: {err}") from err
        self.vader = VaderGold(completion_only=True)
        self.model_dir = model_dir  # for gold_spec
        self.threshold, self.penalty, self.batch_size = threshold, penalty, batch_size
        self.name = f"fluent-sentiment:{Path(model_dir).name}"

    def nll_per_token(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Mean negative log-likelihood (nats) of each completion's tokens given its prompt."""
        import torch

        from aihf.lm.modeling import completion_logprobs, encode

        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(prompts), self.batch_size):
                ps, cs = list(prompts[i : i + self.batch_size]), list(completions[i : i + self.batch_size])
                batch = encode(self.tokenizer, ps, cs)
                # the completion alone, without the EOS the scorer appends: fluency of the words
                batch["completion_mask"][torch.arange(len(ps)), batch["attention_mask"].sum(1) - 1] = 0
                logps = completion_logprobs(self.model, batch)
                tokens = logps.mask.sum(-1).clamp(min=1)
                out.extend((-logps.sums / tokens).tolist())
        return out

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        _check_lengths(prompts, completions)
        sentiment = [(v + 1) / 2 for v in self.vader(prompts, completions)]
        nll = self.nll_per_token(prompts, completions)
        return [s - self.penalty * max(0.0, n - self.threshold) for s, n in zip(sentiment, nll)]


def _import_callable(spec: str) -> RewardFn:
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise InputError(
            f"gold reward {spec!r}: cannot import {attr!r} from module {module_name!r} ({err})"
        ) from err
    if not callable(fn):
        raise InputError(f"gold reward {spec!r}: {attr!r} is not callable")
    return fn


def load_gold_reward(spec: str | dict[str, Any] | RewardFn = "vader") -> RewardFn:
    """A gold reward from a spec string (see the module docstring), a spec dict from `gold_spec`, or
    `spec` itself if it is callable."""
    if callable(spec):
        return spec
    if isinstance(spec, dict):
        return _from_spec_dict(spec)
    if spec in {"vader", "vader-completion"}:
        return VaderGold(completion_only=spec == "vader-completion")
    if spec == "fluent-sentiment" or spec.startswith("fluent-sentiment:"):
        return FluentSentimentGold(spec.partition(":")[2] or None)
    if spec == gold_v2.NAME or spec.startswith(gold_v2.NAME + ":"):
        return gold_v2.load(spec.partition(":")[2] or gold_v2.DEFAULT_MODEL)
    path, _, label = spec.partition("#")
    if ":" in path and not Path(path).exists() and "/" not in path.partition(":")[0]:
        return _import_callable(path)
    return ClassifierGold(path, label or None)


SPEC_NAMES = ("vader", "vader-completion", "fluent-sentiment", gold_v2.NAME)


def gold_spec(fn: RewardFn) -> dict[str, Any]:
    """A built-in gold as a dict that `load_gold_reward` rebuilds exactly (name, params, model hash)."""
    if isinstance(fn, gold_v2.OnTaskSentimentGold):
        return gold_v2.spec(fn)
    if isinstance(fn, VaderGold):
        return {"name": fn.name}
    if isinstance(fn, FluentSentimentGold):
        from aihf.io import sha256_file

        directory = Path(fn.model_dir)
        return {
            "name": "fluent-sentiment",
            "model": str(directory),
            "model_sha256": sha256_file(directory / "model.safetensors"),
            "params": {"threshold": fn.threshold, "penalty": fn.penalty},
        }
    raise InputError(f"gold_spec: {gold_name(fn)!r} has no spec (only {', '.join(SPEC_NAMES)} have one)")


def _from_spec_dict(spec: dict[str, Any]) -> RewardFn:
    name = spec.get("name")
    if name not in SPEC_NAMES:
        raise InputError(f"gold spec field 'name': {name!r} is not one of {', '.join(SPEC_NAMES)}")
    if name == gold_v2.NAME:
        return gold_v2.from_spec(spec)
    if name in {"vader", "vader-completion"}:
        extra = sorted(set(spec) - {"name"})
        if extra:
            raise InputError(f"gold spec field {extra[0]!r}: {name} takes no fields but 'name'")
        return VaderGold(completion_only=name == "vader-completion")
    extra = sorted(set(spec) - {"name", "model", "model_sha256", "params"})
    if extra:
        raise InputError(f"gold spec field {extra[0]!r}: unknown for fluent-sentiment")
    params = spec.get("params", {})
    if not isinstance(params, dict) or set(params) - {"threshold", "penalty"}:
        raise InputError("gold spec field 'params': fluent-sentiment takes only threshold and penalty")
    gold = FluentSentimentGold(spec.get("model"), **params)
    wanted = spec.get("model_sha256")
    if wanted is not None and gold_spec(gold)["model_sha256"] != wanted:
        raise InputError(f"gold spec field 'model_sha256': the weights in {gold.model_dir} hash otherwise")
    return gold


def gold_name(fn: RewardFn) -> str:
    return getattr(fn, "name", getattr(fn, "__name__", type(fn).__name__))
