import re

import pytest

from aihf.errors import InputError
from aihf.lm.data import prepare_text_data
from aihf.lm.modeling import load_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture
def tokenizer(tiny_dir):
    return load_tokenizer(str(tiny_dir / "policy"))


def test_loads_jsonl_and_parquet(tokenizer, data_dir, tmp_path):
    import datasets

    prefs = prepare_text_data(data_dir / "prefs.jsonl", "prefs", tokenizer)
    assert len(prefs) == 6 and set(prefs.rows[0]) == {"prompt", "chosen", "rejected"}
    datasets.Dataset.from_list(prefs.rows).to_parquet(str(tmp_path / "p.parquet"))
    assert prepare_text_data(tmp_path / "p.parquet", "prefs", tokenizer).rows == prefs.rows
    datasets.Dataset.from_list(prefs.rows).save_to_disk(str(tmp_path / "disk"))
    assert prepare_text_data(tmp_path / "disk", "prefs", tokenizer).rows == prefs.rows


@pytest.mark.parametrize(
    ("kind", "rows", "message"),
    [
        ("demos", [{"prompt": "a", "answer": "b"}], "missing columns for demos"),
        (
            "prefs",
            [
                {"prompt": "a", "chosen": "b", "rejected": "c"},
                {"prompt": "a", "chosen": " ", "rejected": "c"},
            ],
            "line 2, field 'chosen': expected a non-empty string",
        ),
        ("demos", [{"prompt": "a", "completion": 3}], "line 1, field 'completion': expected a string"),
        (
            "prefs",
            [
                {
                    "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                    "rejected": [{"role": "user", "content": "HEY"}, {"role": "assistant", "content": "no"}],
                }
            ],
            "line 1: prompt mismatch",
        ),
    ],
)
def test_bad_rows_name_file_row_and_field(tokenizer, tmp_path, jsonl, kind, rows, message):
    path = jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=message) as err:
        prepare_text_data(path, kind, tokenizer)
    assert "bad.jsonl" in str(err.value)


def test_invalid_json_line_is_reported(tokenizer, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    with pytest.raises(InputError, match=r"broken.jsonl, line 2: not valid JSON"):
        prepare_text_data(path, "demos", tokenizer)


def test_overlong_rows_are_counted_then_truncated_dropped_or_rejected(tokenizer, tmp_path, jsonl):
    rows = [{"prompt": "a", "completion": "short"}, {"prompt": "a", "completion": " long" * 50}]
    path = jsonl(tmp_path / "d.jsonl", rows)
    kept = prepare_text_data(path, "demos", tokenizer, max_length=16, overlong="truncate")
    assert (len(kept), kept.overlong, kept.dropped) == (2, 1, 0) and "1 of 2 rows" in kept.notes[0]
    dropped = prepare_text_data(path, "demos", tokenizer, max_length=16, overlong="drop")
    assert (len(dropped), dropped.dropped) == (1, 1)
    with pytest.raises(InputError, match=r"d.jsonl, line 2: .* tokens, more than max_length=16"):
        prepare_text_data(path, "demos", tokenizer, max_length=16, overlong="error")


def test_conversational_rows_render_with_the_chat_template(tokenizer):
    conversation = [{"role": "user", "content": "Rate the film"}, {"role": "assistant", "content": "Lovely"}]
    with pytest.raises(InputError, match="chat template"):
        prepare_text_data([{"messages": conversation}], "demos", tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    demo = prepare_text_data([{"messages": conversation}], "demos", tokenizer).rows[0]
    assert demo == {"prompt": "<user>Rate the film\n<assistant>", "completion": "Lovely\n"}
    pair = {"chosen": conversation, "rejected": [conversation[0], {"role": "assistant", "content": "Bad"}]}
    pref = prepare_text_data([pair], "prefs", tokenizer).rows[0]
    assert pref == {"prompt": "<user>Rate the film\n<assistant>", "chosen": "Lovely\n", "rejected": "Bad\n"}
    prompt = prepare_text_data([{"prompt": conversation[:1]}], "prompts", tokenizer).rows[0]
    assert prompt == {"prompt": "<user>Rate the film\n<assistant>"}


def test_implicit_prompts_and_demonstrations_from_a_preference_set(tokenizer):
    hh = {
        "chosen": "\n\nHuman: Hi?\n\nAssistant: Hello there.",
        "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away.",
    }
    pref = prepare_text_data([hh], "prefs", tokenizer).rows[0]
    assert pref["prompt"] == "\n\nHuman: Hi?\n\nAssistant:"
    assert pref["prompt"] + pref["chosen"] == hh["chosen"]
    demo = prepare_text_data([hh], "demos", tokenizer).rows[0]  # the chosen answer is the demonstration
    assert demo == {"prompt": pref["prompt"], "completion": pref["chosen"]}
    with pytest.raises(InputError, match="share no prompt"):
        prepare_text_data([{"chosen": "yes", "rejected": "no"}], "prefs", tokenizer)


def test_text_prompt_with_conversation_answers_checks_the_pair_shares_its_prompt(tokenizer):
    tokenizer.chat_template = CHAT_TEMPLATE
    user = {"role": "user", "content": "Rate the film"}
    row = {
        "prompt": "Rate the film",
        "chosen": [user, {"role": "assistant", "content": "Lovely"}],
        "rejected": [user, {"role": "assistant", "content": "Bad"}],
    }
    pref = prepare_text_data([row], "prefs", tokenizer).rows[0]
    assert pref == {"prompt": "<user>Rate the film\n<assistant>", "chosen": "Lovely\n", "rejected": "Bad\n"}
    row["rejected"] = [{"role": "user", "content": "Another question"}, row["rejected"][1]]
    with pytest.raises(InputError, match="row 1: prompt mismatch"):
        prepare_text_data([row], "prefs", tokenizer)


USER = {"role": "user", "content": "Rate the film"}
PAIR_OK = {"prompt": "a", "chosen": " b", "rejected": " c"}
REPLY = {"role": "assistant", "content": "Lovely"}


@pytest.mark.parametrize(
    ("kind", "row", "message"),
    [
        (
            "demos",
            {"messages": [USER, {"role": "assistant", "content": 3}]},
            "field 'messages', message 2: 'content' = 3",
        ),
        (
            "demos",
            {"messages": [USER, {"role": "assistant", "content": None}]},
            "message 2: 'content' = None",
        ),
        ("demos", {"messages": [USER, {"role": "assistant", "content": ["a", "b"]}]}, "message 2: 'content'"),
        ("demos", {"messages": [USER, {"role": "assistant"}]}, "message 2: missing 'content'"),
        (
            "demos",
            {"messages": [{"role": 1, "content": "hi"}, REPLY]},
            "message 1: 'role' = 1: expected one of",
        ),
        ("demos", {"messages": [{"role": None, "content": "hi"}, REPLY]}, "message 1: 'role' = None"),
        ("demos", {"messages": [{"role": "robot", "content": "hi"}, REPLY]}, "message 1: 'role' = 'robot'"),
        ("demos", {"messages": [{"role": ["user"], "content": "hi"}, REPLY]}, "message 1: 'role' = ['user']"),
        ("demos", {"messages": [USER, "Lovely"]}, "message 2: expected an object with 'role' and 'content'"),
        ("demos", {"messages": [USER, {"content": "Lovely"}]}, "message 2: missing 'role'"),
        (
            "prompts",
            {"prompt": [{"role": "user", "content": 7.5}]},
            "field 'prompt', message 1: 'content' = 7.5",
        ),
        (
            "prompts",
            {"messages": [{"role": "user", "content": {"text": "hi"}}]},
            "field 'messages', message 1",
        ),
        (
            "prefs",
            {"chosen": [USER, REPLY], "rejected": [USER, {"role": "assistant", "content": 0}]},
            "field 'rejected', message 2",
        ),
        (
            "prefs",
            {"prompt": [USER], "chosen": [REPLY], "rejected": [{"role": 2, "content": "x"}]},
            "field 'rejected', message 1: 'role' = 2",
        ),
        (
            "prefs",
            {
                "prompt": "Rate it",
                "chosen": [USER, {"role": "assistant", "content": True}],
                "rejected": [USER, REPLY],
            },
            "field 'chosen', message 2",
        ),
    ],
)
def test_message_rows_are_checked_by_type(tokenizer, tmp_path, jsonl, kind, row, message):
    tokenizer.chat_template = CHAT_TEMPLATE
    path = jsonl(tmp_path / "chat.jsonl", [row])
    with pytest.raises(
        InputError, match=re.escape("chat.jsonl, line 1, ") + ".*" + re.escape(message)
    ) as err:
        prepare_text_data(path, kind, tokenizer)
    assert "\n" not in str(err.value) and ", field '" in str(err.value)


def test_a_huge_bad_value_is_shown_shortened(tokenizer):
    row = {"messages": [USER, {"role": "assistant", "content": ["x" * 10_000] * 1000}]}
    with pytest.raises(
        InputError, match=r"message 2: 'content' = \['xxx.*\.\.\.\]: expected a string"
    ) as err:
        prepare_text_data([row], "demos", tokenizer)
    assert len(str(err.value)) < 400  # from 10 million characters


def test_every_role_trl_accepts_renders(tokenizer):
    tokenizer.chat_template = CHAT_TEMPLATE
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ]
    demo = prepare_text_data([{"messages": conversation}], "demos", tokenizer).rows[0]
    assert demo["completion"] == "Sunny.\n"


def test_logged_notes_escape_control_characters_in_the_file_name(tokenizer, tmp_path, jsonl, caplog):
    path = jsonl(
        tmp_path / "p\x1b[2J.jsonl", [{"prompt": "a", "chosen": " b", "rejected": " b"}] * 2 + [PAIR_OK]
    )
    with caplog.at_level("WARNING", logger="aihf.lm.data"):
        data = prepare_text_data(path, "prefs", tokenizer)
    assert data.dropped == 2
    assert "p\\x1b[2J.jsonl: 2 of 3 pairs" in caplog.text and "\x1b" not in caplog.text


def _old_longest(tokenizer, row):
    """The length check as it was (one `tokenizer` call per row and answer): the datasets path's oracle."""
    answers = [row[k] for k in ("completion", "chosen", "rejected") if k in row] or [""]
    return max(len(tokenizer(row["prompt"] + a)["input_ids"]) for a in answers)


@pytest.mark.parametrize("num_proc", [None, 2])
def test_datasets_tokenisation_gives_the_ids_and_the_checks_of_per_row_tokenising(
    tokenizer, tmp_path, jsonl, num_proc
):
    """prompt/completion, messages and preference rows: `tokenize_columns` (Dataset.map, batched, num_proc
    processes) gives each text's ids as `tokenizer(text)`, so overlong rows are the same ones as before."""
    from aihf.lm.data import tokenize_columns

    tokenizer.chat_template = CHAT_TEMPLATE
    words = " warm and clever" * 3
    sets = {
        "demos": [{"prompt": f"p{i}", "completion": words * (1 + i % 3)} for i in range(1, 10)],
        "messages": [
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": words * (1 + i % 4)},
                ]
            }
            for i in range(1, 10)
        ],
        "prefs": [
            {"prompt": f"p{i}", "chosen": words * (1 + i % 3), "rejected": f"no {i}"} for i in range(1, 10)
        ],
    }
    for name, rows in sets.items():
        kind = "prefs" if name == "prefs" else "demos"
        text = prepare_text_data(jsonl(tmp_path / f"{name}.jsonl", rows), kind, tokenizer).rows
        answers = [k for k in ("completion", "chosen", "rejected") if k in text[0]]
        columns = {"prompt": [r["prompt"] for r in text]} | {
            a: [r["prompt"] + r[a] for r in text] for a in answers
        }
        tokenized = tokenize_columns(tokenizer, columns, num_proc)
        for column, texts in columns.items():
            assert tokenized[f"{column}_ids"] == [tokenizer(t)["input_ids"] for t in texts], (name, column)
        longest = [_old_longest(tokenizer, r) for r in text]
        limit = sorted(longest)[len(longest) // 2]  # about half the rows are over it
        over = [i for i, n in enumerate(longest) if n > limit]
        assert 0 < len(over) < len(text)
        kept = prepare_text_data(
            tmp_path / f"{name}.jsonl", kind, tokenizer, limit, "drop", num_proc=num_proc
        )
        assert kept.rows == [r for i, r in enumerate(text) if i not in over] and kept.overlong == len(over)
        with pytest.raises(InputError, match=rf"{name}.jsonl, line {over[0] + 1}: {longest[over[0]]} tokens"):
            prepare_text_data(tmp_path / f"{name}.jsonl", kind, tokenizer, limit, "error", num_proc=num_proc)


def test_every_row_is_checked_before_any_is_tokenised(tokenizer, tmp_path, jsonl):
    """A bad row is named even when an earlier row is over max_length with overlong: error."""
    rows = [{"prompt": "a", "completion": " long" * 50}, {"prompt": "a", "completion": 3}]
    with pytest.raises(InputError, match=r"d\.jsonl, line 2, field 'completion': expected a string"):
        prepare_text_data(
            jsonl(tmp_path / "d.jsonl", rows), "demos", tokenizer, max_length=16, overlong="error"
        )


def test_tokenising_waits_for_the_main_process_when_an_accelerator_exists(tokenizer, monkeypatch):
    import contextlib

    import accelerate
    import accelerate.state

    from aihf.lm.data import tokenize_columns

    entered = []

    class State:  # accelerate's PartialState as seen by a launched process
        @contextlib.contextmanager
        def main_process_first(self):
            entered.append(True)
            yield

    monkeypatch.setattr(accelerate, "PartialState", State)
    monkeypatch.setattr(accelerate.state, "is_initialized", lambda: False)
    tokenize_columns(tokenizer, {"text": ["a b", "c"]})
    assert entered == []  # no accelerator: nothing to wait for
    monkeypatch.setattr(accelerate.state, "is_initialized", lambda: True)
    assert (
        tokenize_columns(tokenizer, {"text": ["a b", "c"]})["text_ids"]
        == tokenizer(["a b", "c"])["input_ids"]
    )
    assert entered == [True]
