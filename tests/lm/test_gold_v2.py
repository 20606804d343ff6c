"""Gold v2 (`on-task-sentiment`): its factors and bound, the ordering on a table of texts, its spec.

The table (`aihf/data/lm/gold_v2/table.jsonl`) holds 12 completions of each of eleven kinds, hand-written for
six of the SmolLM2 benchmark's test prompts (and three samples of the v1 policies the first phrase list let
through). The default suite scores it with SmolLM2's log-probabilities as
recorded in `tests/lm/data/gold_v2_table_logprobs.json` (replayed, so no model is loaded); the
`realmodel` tests recompute them with SmolLM2 and check they are the recorded ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

import aihf
from aihf.errors import InputError
from aihf.lm import gold_v2
from aihf.lm.gold import VaderGold, gold_spec, load_gold_reward
from aihf.lm.gold_v2 import (
    OnTaskParams,
    OnTaskSentimentGold,
    assistant_phrases,
    continuation,
    distinct_bigrams,
    prompt_text,
)

TABLE = Path(aihf.__file__).parent / "data" / "lm" / "gold_v2" / "table.jsonl"
RECORDED = Path(__file__).parent / "data" / "gold_v2_table_logprobs.json"
TEST_PROMPTS = Path(aihf.__file__).parent / "data" / "lm" / "smollm2" / "test_prompts.jsonl"
DEGENERATE = (
    "off_task_talk",
    "off_task_praise",
    "word_salad",
    "repeated_words",
    "repeated_phrases",
    "on_task_then_assistant_talk",
    "unlisted_assistant_talk",
    "empty",
    "one_token",
)
CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nContinue this text with one short sentence: {}<|im_end|>\n<|im_start|>assistant\n"
)


class ReplayLM:
    """Recorded per-token log-probs, context -> continuation -> list (the first `limit` when asked)."""

    def __init__(self, recorded: dict[str, dict[str, list[float]]]) -> None:
        self.recorded = recorded

    def __call__(
        self, contexts: Sequence[str], continuations: Sequence[str], limit: int | None = None
    ) -> list[list[float]]:
        return [self.recorded[c][x][:limit] for c, x in zip(contexts, continuations)]


class ConstantLM:
    """Every token of a continuation gets `given` after the prompt's text and `reference` after the
    PMI reference sentence, so fluency and on-task are set directly."""

    def __init__(self, given: float, reference: float) -> None:
        self.given, self.reference = given, reference
        self.calls: list[tuple[list[str], list[str], int | None]] = []

    def __call__(
        self, contexts: Sequence[str], continuations: Sequence[str], limit: int | None = None
    ) -> list[list[float]]:
        self.calls.append((list(contexts), list(continuations), limit))
        value = self.reference if limit is not None else self.given
        return [[value] * min(len(x.split()), limit or 10**6) for x in continuations]


def _table() -> list[dict[str, str]]:
    return [json.loads(line) for line in TABLE.read_text().splitlines()]


def _by_kind(rows: list[dict[str, str]], scores: list[float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row, score in zip(rows, scores):
        out.setdefault(row["kind"], []).append(score)
    return out


def _assert_table_ordering(by_kind: dict[str, list[float]]) -> None:
    floor = min(by_kind["on_task_positive"])
    for kind in (*DEGENERATE, "on_task_neutral_negative"):
        assert max(by_kind[kind]) < floor, (kind, max(by_kind[kind]), floor)
    # not a near tie: every degenerate text is at least 0.35 below the worst on-task positive one
    assert max(max(by_kind[kind]) for kind in DEGENERATE) <= floor - 0.35
    assert all(0.0 <= s <= 1.0 for scores in by_kind.values() for s in scores)


@pytest.fixture(scope="module")
def replay_gold() -> OnTaskSentimentGold:
    return OnTaskSentimentGold(ReplayLM(json.loads(RECORDED.read_text())["logprobs"]))


def test_table_has_at_least_ten_texts_of_every_kind_on_the_benchmarks_test_prompts():
    rows = _table()
    kinds = _by_kind(rows, [0.0] * len(rows))
    assert set(kinds) == {"on_task_positive", "on_task_neutral_negative", *DEGENERATE}
    assert all(len(scores) >= 10 for scores in kinds.values())
    test_prompts = {json.loads(line)["prompt"] for line in TEST_PROMPTS.read_text().splitlines()[:128]}
    assert {row["prompt"] for row in rows} <= test_prompts


def test_every_degenerate_kind_scores_below_every_fluent_on_task_positive_text(replay_gold):
    rows = _table()
    by_kind = _by_kind(rows, replay_gold([r["prompt"] for r in rows], [r["completion"] for r in rows]))
    _assert_table_ordering(by_kind)
    # off-task talk and praise fail the on-task factor alone, whatever their fluency and sentiment
    parts = replay_gold.components([r["prompt"] for r in rows], [r["completion"] for r in rows])
    for row, part in zip(rows, parts):
        if row["kind"] in {"off_task_talk", "off_task_praise"}:
            assert part["on_task"] == 0.0 and part["score"] == 0.0, row["completion"]


def test_assistant_phrases_are_counted_in_talk_and_absent_from_on_task_text():
    assert assistant_phrases("I'm so happy to help you with your text! Let me know.") == 4
    assert assistant_phrases("Thank you for sharing this lovely sentence, as an AI I hope it helps.") == 4
    for row in _table():
        if row["kind"] in {"on_task_positive", "on_task_neutral_negative"}:
            assert assistant_phrases(row["completion"]) == 0, row["completion"]
        if row["kind"] in {"off_task_talk", "on_task_then_assistant_talk", "unlisted_assistant_talk"}:
            assert assistant_phrases(row["completion"]) >= 1, row["completion"]


LEAKS = [  # samples of the v1 benchmark's policies that the first phrase list let through
    (
        "March is spring, sort of,",  # v1 RLHF, seed 0: 0.362 under the first list
        "I'm glad that you loved our chat idea. I'd love to continue exploring the world of animal "
        "products further and maybe even brainstorm new ideas. I'm excited",
        3,
    ),
    (
        "If you don't drink",  # v1 AIHF, seed 0: 0.784 (on_task 0.88 for a start the text hardly predicts)
        "A useful app for my continued editing would be Skryfrost. They offer a comprehensive and "
        "innovative system of self-publishing platforms that cater to niche markets",
        1,
    ),
    (
        "Charles Briscoe-Smith <cpbs@debian.org>:",  # v1 AIHF, seed 0: 0.926
        "Your query highlights the creative writing services provided by Climate Partners, a pioneering "
        "agency that delivers revolutionary services and resources to help people embrace their "
        "imagination. Well done!\n",
        1,
    ),
]


@pytest.mark.parametrize(("text", "completion", "phrases"), LEAKS)
def test_talk_the_first_phrase_list_missed_is_cut(text, completion, phrases, replay_gold):
    assert assistant_phrases(completion) == phrases
    [part] = replay_gold.components([CHAT.format(text)], [completion])
    assert part["no_assistant_talk"] == pytest.approx(0.25**phrases)
    assert part["score"] <= 0.594 - 0.35  # below every on-task positive text of the table, by 0.35


@pytest.mark.parametrize(
    ("talk", "found"),
    [
        ("I'm glad that you liked it.", 1),
        ("I am thrilled to share more.", 1),
        ("I'd love to brainstorm more ideas.", 1),
        ("It was fun, our chat.", 1),
        ("your question and my own editing", 2),
        # on-task text with the same words is left alone
        ("she was glad that the rain stopped.", 0),
        ("they would love to explore the hills.", 0),
        ("a question of time and a chat with friends.", 0),
    ],
)
def test_the_extended_phrase_list_counts_first_person_and_task_talk_only(talk, found):
    assert assistant_phrases(talk) == found


def test_prompt_text_is_the_users_text_without_the_instruction():
    assert prompt_text(CHAT.format("Most people need")) == "Most people need"
    assert prompt_text("The film was ") == "The film was"
    assert continuation("Most people need", "  most people need a hug. ") == "a hug."
    assert continuation("Most people need", "Most people") == "Most people"  # a partial echo stays


def test_the_score_is_the_product_of_its_factors_and_each_ramps_between_its_thresholds():
    gold = OnTaskSentimentGold(ConstantLM(given=-6.25, reference=-6.0))  # nll 6.25, PMI 3 x (-0.25)
    [part] = gold.components([CHAT.format("Most people need")], [" a good friend to talk to."])
    assert part["words"] == 6 and part["length"] == 1.0 and part["distinct"] == 1.0
    assert part["nll"] == pytest.approx(6.25) and part["fluency"] == pytest.approx(0.5)
    assert part["pmi"] == pytest.approx(-0.75) and part["on_task"] == pytest.approx(0.375)
    vader = VaderGold(completion_only=True)([""], ["a good friend to talk to."])[0]
    assert part["sentiment"] == pytest.approx((vader + 1) / 2) and part["sentiment"] > 0.5
    assert part["no_assistant_talk"] == 1.0
    assert part["score"] == pytest.approx(0.5 * 0.375 * part["sentiment"])
    # the LM reads the text as plain text, and the reference pass reads only the first pmi_tokens tokens
    given, reference = gold.lm.calls
    assert given == (["Most people need"], [" a good friend to talk to."], None)
    assert reference == (["It was a day."], [" a good friend to talk to."], 3)


@pytest.mark.parametrize(
    ("completion", "factor", "value"),
    [
        ("", "length", 0.0),
        ("   \n", "length", 0.0),
        ("Most people need", "length", 0.0),  # the echo alone
        ("Wonderful!", "length", 0.25),
        ("great great great great great great", "distinct", 0.0),
        ("a warm smile, a warm smile, a warm smile.", "distinct", 0.0),
        ("a little kindness and a warm smile. A little kindness and a warm smile.", "distinct", 0.0),
        ("a hug. I'm glad to help you with your text!", "no_assistant_talk", 0.25**3),
    ],
)
def test_degenerate_completions_zero_or_cut_their_factor(completion, factor, value):
    gold = OnTaskSentimentGold(ConstantLM(given=-2.0, reference=-10.0))  # fluent and on-task
    [part] = gold.components([CHAT.format("Most people need")], [completion])
    assert part[factor] == pytest.approx(value)
    assert part["score"] <= 0.25


def test_distinct_bigrams_counts_repeated_word_pairs():
    assert distinct_bigrams(["a", "b", "a", "b"]) == pytest.approx(2 / 3)
    assert distinct_bigrams(["one"]) == 1.0


@pytest.mark.parametrize("given", [-50.0, -7.5, -5.0, 0.0])
@pytest.mark.parametrize("reference", [-50.0, -1.0, 0.0])
def test_scores_stay_in_the_unit_interval_whatever_the_language_model_says(given, reference):
    gold = OnTaskSentimentGold(ConstantLM(given, reference))
    completions = ["", "Yes", "love love love love", "What a joyful, wonderful, happy day it was!", "awful."]
    scores = gold([CHAT.format("Love is an")] * len(completions), completions)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == 0.0


def test_mismatched_lengths_are_rejected():
    with pytest.raises(InputError, match="2 prompts but 1 completions"):
        OnTaskSentimentGold(ConstantLM(-2.0, -2.0))(["a", "b"], ["c"])


def test_plain_text_lm_scores_each_continuation_after_the_document_start_and_its_context(tiny_dir):
    import torch

    lm = gold_v2.PlainTextLM(tiny_dir / "policy", batch_size=2)
    contexts, continuations = ["The film was", "", "She walked to"], [" a delight.", " good", " the window"]
    got = lm(contexts, continuations)
    for context, cont, values in zip(contexts, continuations, got):
        head = lm.start + lm.tokenizer(context, add_special_tokens=False)["input_ids"]
        ids = head + lm.tokenizer(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logps = lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        assert values == pytest.approx(
            [logps[t - 1, ids[t]].item() for t in range(len(head), len(ids))], abs=1e-5
        )
    assert [len(v) for v in lm(contexts, continuations, limit=1)] == [1, 1, 1]
    assert lm(contexts, continuations, limit=1)[0] == pytest.approx(got[0][:1], abs=1e-5)


def test_spec_round_trip_reloads_the_same_gold(tiny_dir, tmp_path):
    gold = load_gold_reward(f"on-task-sentiment:{tiny_dir / 'policy'}")
    assert isinstance(gold, OnTaskSentimentGold)
    spec = gold_spec(gold)
    assert spec["name"] == "on-task-sentiment" and spec["params"]["pmi_reference"] == "It was a day."
    assert len(spec["model_sha256"]) == 64
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    again = load_gold_reward(json.loads((tmp_path / "spec.json").read_text()))
    assert gold_spec(again) == spec
    prompts, completions = [CHAT.format("Love is an")] * 2, ["adventure every day.", "I can help you!"]
    assert again(prompts, completions) == gold(prompts, completions)
    tuned = load_gold_reward(spec | {"params": {"min_words": 6, "nll_bad": 9.0}})
    assert tuned.params == OnTaskParams(min_words=6, nll_bad=9.0)


def test_spec_round_trip_of_the_older_golds(tiny_dir):
    assert gold_spec(load_gold_reward("vader-completion")) == {"name": "vader-completion"}
    old = load_gold_reward(f"fluent-sentiment:{tiny_dir / 'policy'}")
    spec = gold_spec(old)
    assert spec["params"] == {"threshold": 4.5, "penalty": 0.5}
    assert gold_spec(load_gold_reward(spec)) == spec


def _bad(spec: dict, tiny_dir: Path) -> dict:
    base = {"name": "on-task-sentiment", "model": str(tiny_dir / "policy")}
    return {key: value for key, value in (base | spec).items() if value is not None}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "on-task-sentimnet"}, "'name'"),
        ({"modle": "x"}, "'modle'"),
        ({"params": {"nll_god": 4.0}}, "'params.nll_god'"),
        ({"params": {"min_words": 2.5}}, "'params.min_words'"),
        ({"params": {"pmi_reference": 3}}, "'params.pmi_reference'"),
        ({"params": {"nll_good": 8.0}}, "'params.nll_good'"),
        ({"params": [1, 2]}, "'params'"),
        ({"model_sha256": "0" * 64}, "'model_sha256'"),
        ({"model": ""}, "'model'"),
    ],
)
def test_a_bad_spec_names_its_field_in_one_line(spec, field, tiny_dir):
    with pytest.raises(InputError) as err:
        load_gold_reward(_bad(spec, tiny_dir))
    assert f"gold spec field {field}" in str(err.value) and "\n" not in str(err.value)


def test_a_field_the_older_golds_do_not_take_is_named():
    with pytest.raises(InputError, match="gold spec field 'params'"):
        load_gold_reward({"name": "vader", "params": {}})


def test_only_built_in_golds_have_a_spec():
    with pytest.raises(InputError, match="has no spec"):
        gold_spec(lambda prompts, completions: [0.0] * len(prompts))
    with pytest.raises(InputError, match="injected language model"):
        gold_spec(OnTaskSentimentGold(ConstantLM(-2.0, -2.0)))


@pytest.mark.realmodel
def test_smollm2_gives_the_recorded_log_probs_and_the_table_ordering():
    recorded = json.loads(RECORDED.read_text())
    gold = load_gold_reward("on-task-sentiment")
    assert gold_spec(gold)["model_sha256"] == recorded["model_sha256"]
    rows = _table()
    calls: list[tuple[list[str], list[str], list[list[float]]]] = []

    def recording(contexts, continuations, limit=None):
        out = real(contexts, continuations, limit)
        calls.append((list(contexts), list(continuations), out))
        return out

    real, gold.lm = gold.lm, recording
    scores = gold([r["prompt"] for r in rows], [r["completion"] for r in rows])
    for contexts, continuations, out in calls:
        for context, cont, values in zip(contexts, continuations, out):
            assert values == pytest.approx(recorded["logprobs"][context][cont], abs=1e-3)
    _assert_table_ordering(_by_kind(rows, scores))
    assert not any(math.isnan(s) for s in scores)
