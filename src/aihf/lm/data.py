"""Loading and validating the three kinds of LM data: demonstrations, preferences and prompts.

Formats are TRL's: demonstrations `prompt`/`completion` (or conversational `messages`), preferences
`prompt`/`chosen`/`rejected` (conversational too, and with an implicit prompt shared by both answers),
prompt-only sets `prompt`. Sources: a Hub name, a `save_to_disk` directory, a data directory, JSONL
or Parquet. Everything is validated and rendered to plain text before training starts, so a bad row
stops the run with an `InputError` naming the file, line (JSONL, 1-based) or row and the field rather
than failing mid-training. A preference pair whose chosen and rejected answers are equal teaches nothing:
it is dropped, and the count logged and written to the model card's notes.
The length check tokenises with `datasets.Dataset.map(batched=True, num_proc=...)` (`tokenize_columns`;
TRL's `dataset_num_proc`), after every row has been checked. The trainers only ever see text; each
model re-tokenises it with its own tokenizer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aihf.errors import InputError
from aihf.io import read_jsonl_lines
from aihf.safety import check_input_file, escape_terminal, hub_offline, hub_unreachable

logger = logging.getLogger(__name__)

Kind = Literal["demos", "prefs", "prompts"]
Overlong = Literal["truncate", "drop", "error"]

_COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    # Accepted column sets per kind, first match wins. Demonstrations may come from a preference set
    # (its chosen answers), as the paper builds them from Anthropic-HH.
    "demos": (("prompt", "completion"), ("messages",), ("prompt", "chosen"), ("chosen", "rejected")),
    "prefs": (("prompt", "chosen", "rejected"), ("chosen", "rejected")),
    "prompts": (("prompt",), ("messages",), ("chosen", "rejected")),
}
# The text fields each kind ends with.
_FIELDS = {
    "demos": ("prompt", "completion"),
    "prefs": ("prompt", "chosen", "rejected"),
    "prompts": ("prompt",),
}


@dataclass
class TextData:
    """Validated text rows: `prompt` plus `completion` (demos) or `chosen`/`rejected` (prefs)."""

    kind: str
    source: str
    rows: list[dict[str, str]]
    overlong: int = 0  # rows longer than max_length after tokenisation (truncated or dropped)
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[str]:
        return [row[name] for row in self.rows]


def load_records(source: str | Path, split: str = "train") -> tuple[list[dict[str, Any]], str, list[str]]:
    """Rows of a Hub dataset, a dataset directory, or a JSONL/JSON/Parquet file, with a display name and
    where each row is, for messages: "line N" of a JSONL file (1-based, as editors count), else "row N"
    (1-based). JSONL is read here, without datasets' progress bars, so a bad line is named before any
    other output."""
    path = Path(source)
    name = str(source)
    if path.suffix == ".jsonl" and not path.is_dir():
        numbered = read_jsonl_lines(path)
        return [row for _, row in numbered], name, [f"line {n}" for n, _ in numbered]
    import datasets

    try:
        with _quiet_datasets(datasets):
            if path.is_dir():
                if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                    loaded = datasets.load_from_disk(str(path))
                    ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
                else:
                    ds = datasets.load_dataset(str(path), split=split)
            elif path.suffix in {".json", ".parquet"}:
                check_input_file(path)
                ds = datasets.load_dataset(path.suffix[1:], data_files=str(path), split="train")
            elif path.exists():
                raise InputError(
                    f"{name}: unsupported file type {path.suffix!r}: expected .jsonl, .json or .parquet"
                )
            elif (
                path.is_symlink() or name.startswith(("/", ".", "~")) or name.partition(":")[0].count("/") > 1
            ):
                # a broken or looping link, or a local path (a Hub name is "org/name"): say what is wrong
                check_input_file(path)
                raise InputError(f"{name}: file not found")
            else:  # a Hub name, optionally "name:split" with datasets' slicing, e.g. "org/set:train[:10000]"
                ds = _load_hub_dataset(datasets, name, split)
    except InputError:
        raise
    except Exception as err:  # datasets raises many types; the user needs the source and the reason
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"{name}: could not load the dataset ({type(err).__name__}: {reason})") from err
    rows = [dict(row) for row in ds]
    return rows, name, [f"row {i}" for i in range(1, len(rows) + 1)]


def _load_hub_dataset(datasets: Any, name: str, split: str) -> Any:
    """A Hub dataset; with the Hub out of reach, from the local cache only, so an uncached name fails
    at once with one line instead of five retries (40 s) of connection messages."""
    hub, _, hub_split = name.partition(":")
    reason = hub_unreachable()
    if reason is None:
        return datasets.load_dataset(hub, split=hub_split or split)
    try:
        with hub_offline():
            return datasets.load_dataset(hub, split=hub_split or split)
    except Exception:
        raise InputError(
            f"{escape_terminal(name)}: not a local file or directory and not in the datasets cache, and "
            f"{reason}"
        ) from None


@contextlib.contextmanager
def _quiet_datasets(datasets: Any) -> Iterator[None]:
    """No "Generating train split" bars and no logged errors (datasets logs "Failed to read ..." before
    raising) while loading: the error line, if any, is all that prints."""
    enabled = datasets.utils.logging.is_progress_bar_enabled()
    verbosity = datasets.utils.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(verbosity)
        if enabled:
            datasets.enable_progress_bars()


# The roles TRL's data utilities accept in a conversation.
ROLES = ("system", "user", "assistant", "tool")


def _check_messages(messages: list[Any], where: str) -> None:
    """Every message an object with a known `role` and a string `content`, or InputError naming the
    1-based message: a number, null or list would otherwise render as text and train as if valid."""
    for number, message in enumerate(messages, start=1):
        place = f"{where}, message {number}"
        if not isinstance(message, dict):
            raise InputError(
                f"{place}: expected an object with 'role' and 'content', got {type(message).__name__}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise InputError(f"{place}: missing {key!r}")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise InputError(
                f"{place}: 'role' = {_short(role)}: expected one of {', '.join(map(repr, ROLES))}"
            )
        if not isinstance(content, str):
            raise InputError(f"{place}: 'content' = {_short(content)}: expected a string")


def _short(value: Any) -> str:
    """A repr cut to a readable length: a value from the data may be megabytes long."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring, shortener.maxother, shortener.maxlist, shortener.maxdict = 40, 40, 3, 3
    return shortener.repr(value)


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool, where: str) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError(
            f"{where}: conversational data needs a tokenizer with a chat template; this one has none"
        )
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as err:  # Jinja syntax, or a message the template cannot render (e.g. no 'content')
        reason = f"{type(err).__name__}: {err}"
        raise InputError(f"{where}: the chat template cannot render it ({reason})") from err


def _split_conversation(tokenizer: Any, prompt_msgs: list, reply_msgs: list, where: str) -> tuple[str, str]:
    """Render prompt and prompt+reply with the chat template; the reply text is the rendered difference."""
    prompt = _render(tokenizer, prompt_msgs, True, where)
    full = _render(tokenizer, prompt_msgs + reply_msgs, False, where)
    if not full.startswith(prompt):
        raise InputError(
            f"{where}: the chat template does not render the prompt as a prefix of the conversation"
        )
    return prompt, full[len(prompt) :]


def _implicit_prompt(row: dict[str, Any], where: str) -> dict[str, Any]:
    """Split a (chosen, rejected) pair that embeds its prompt: shared turns, or the shared text prefix."""
    chosen, rejected = row["chosen"], row["rejected"]
    if _is_conversation(chosen) and _is_conversation(rejected):
        if chosen[:-1] != rejected[:-1] or not chosen[:-1]:
            raise InputError(
                f"{where}: prompt mismatch: 'chosen' and 'rejected' must share every turn but the last"
            )
        return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}
    if isinstance(chosen, str) and isinstance(rejected, str):
        from trl.data_utils import extract_prompt  # TRL's rule for where the shared text prefix ends

        split = extract_prompt({"chosen": chosen, "rejected": rejected})
        if not split["prompt"].strip():
            raise InputError(
                f"{where}: 'chosen' and 'rejected' share no prompt and there is no 'prompt' field"
            )
        return split
    raise InputError(f"{where}, fields 'chosen'/'rejected': expected two strings or two conversations")


def _to_text(
    kind: str, layout: tuple[str, ...], row: dict[str, Any], tokenizer: Any, where: str
) -> dict[str, str]:
    """One row to text fields; raises InputError for wrong types or a preference pair with two prompts."""
    for column in layout:
        if isinstance(row[column], list):
            _check_messages(row[column], f"{where}, field {column!r}")
    if layout == ("messages",):
        msgs = row["messages"]
        if kind == "prompts":
            msgs = [m for m in msgs if m.get("role") != "assistant"] if _is_conversation(msgs) else None
            if not msgs:
                raise InputError(f"{where}, field 'messages': expected a conversation")
            return {"prompt": _render(tokenizer, msgs, True, where)}
        if not _is_conversation(msgs) or len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise InputError(
                f"{where}, field 'messages': expected a conversation ending with an assistant turn"
            )
        prompt, completion = _split_conversation(tokenizer, msgs[:-1], msgs[-1:], where)
        return {"prompt": prompt, "completion": completion}
    row = {k: row[k] for k in layout}
    if "prompt" not in row:
        row = _implicit_prompt(row, where)
    elif isinstance(row["prompt"], str) and _is_conversation(row.get("chosen")):
        # e.g. ultrafeedback_binarized: a text prompt and full conversations as answers
        row = _implicit_prompt(row | {"rejected": row.get("rejected", row["chosen"])}, where)
    if kind == "demos" and "chosen" in row:
        row = {"prompt": row["prompt"], "completion": row["chosen"]}
    names = _FIELDS[kind]
    if _is_conversation(row["prompt"]):
        out = {"prompt": _render(tokenizer, row["prompt"], True, where)}
        for name in names[1:]:
            if not _is_conversation(row[name]):
                raise InputError(f"{where}, field {name!r}: expected messages like 'prompt'")
            out["prompt"], out[name] = _split_conversation(tokenizer, row["prompt"], row[name], where)
        return out
    out = {}
    for name in names:
        value = row[name]
        if not isinstance(value, str):
            raise InputError(f"{where}, field {name!r}: expected a string, got {type(value).__name__}")
        out[name] = value
    return out


def _main_process_first() -> Any:
    """accelerate's `main_process_first` when an `Accelerator` exists (the main process tokenises first,
    as TRL's trainers do), else nothing."""
    from accelerate import PartialState
    from accelerate.state import is_initialized

    return PartialState().main_process_first() if is_initialized() else contextlib.nullcontext()


def tokenize_columns(tokenizer: Any, texts: dict[str, list[str]], num_proc: int | None = None) -> Any:
    """A `datasets.Dataset` with `<column>_ids`, the token ids of every text of `texts` (special tokens
    added, as `tokenizer(text)` gives them), tokenised by `Dataset.map(batched=True, num_proc=num_proc)`
    (TRL's `dataset_num_proc`) so large sets tokenise in batches and in parallel; the ids stay in Arrow."""
    import datasets

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {f"{name}_ids": tokenizer(batch[name])["input_ids"] for name in texts}

    from datasets.fingerprint import generate_random_fingerprint

    table = datasets.Dataset.from_dict(texts)
    with _quiet_datasets(datasets), _main_process_first():
        return table.map(
            tokenize,
            batched=True,
            num_proc=num_proc if num_proc and num_proc > 1 and len(table) > 1 else None,
            remove_columns=list(texts),
            # in memory, so nothing is cached: a random fingerprint spares hashing the tokenizer (0.2 s)
            new_fingerprint=generate_random_fingerprint(),
        )


def _token_lengths(tokenizer: Any, rows: list[dict[str, str]], num_proc: int | None) -> list[int]:
    """Tokens of prompt + answer for each row, its longest answer (`tokenize_columns`; read from Arrow)."""
    import pyarrow.compute as pc

    answers = [k for k in ("completion", "chosen", "rejected") if k in rows[0]]
    texts = {a: [r["prompt"] + r[a] for r in rows] for a in answers} or {
        "prompt": [r["prompt"] for r in rows]
    }
    tokenized = tokenize_columns(tokenizer, texts, num_proc)
    lengths = [pc.list_value_length(tokenized.data.column(f"{name}_ids")).to_pylist() for name in texts]
    return [max(row) for row in zip(*lengths)]


def prepare_text_data(
    source: str | Path | list[dict[str, Any]],
    kind: Kind,
    tokenizer: Any,
    max_length: int | None = None,
    overlong: Overlong = "truncate",
    split: str = "train",
    num_proc: int | None = None,
) -> TextData:
    """Load, check and render one data set to text; see the module docstring.

    Every row is checked first (an error names its line or row); then rows whose prompt plus answer
    exceed `max_length` tokens (policy tokenizer; `tokenize_columns` with `num_proc` processes) are
    counted and, per `overlong`, kept for truncation at batch time, dropped, or rejected.
    """
    if isinstance(source, list):
        records, name, places = source, f"<{kind}>", [f"row {i}" for i in range(1, len(source) + 1)]
    else:
        records, name, places = load_records(source, split)
    if not records:
        raise InputError(f"{name}: no rows ({kind} expected)")
    columns = set(records[0])
    layout = next((accepted for accepted in _COLUMNS[kind] if set(accepted) <= columns), None)
    if layout is None:
        wanted = " or ".join("/".join(accepted) for accepted in _COLUMNS[kind])
        raise InputError(
            f"{name}, {places[0]}: missing columns for {kind}: expected {wanted}, found {sorted(columns)}"
        )
    data = TextData(kind=kind, source=name, rows=[])
    ties = 0
    checked: list[tuple[str, dict[str, str]]] = []  # (where, row): every row valid before any tokenising
    for place, record in zip(places, records):
        where = f"{name}, {place}"
        for column in layout:
            if record.get(column) is None:
                raise InputError(f"{where}, field {column!r}: missing value")
        row = _to_text(kind, layout, record, tokenizer, where)
        for key, value in row.items():
            if not value.strip():
                raise InputError(f"{where}, field {key!r}: expected a non-empty string")
        if kind == "prefs" and row["chosen"].strip() == row["rejected"].strip():
            ties += 1  # no preference to learn from: dropped and counted
            continue
        checked.append((where, row))
    lengths = [0] * len(checked)
    if checked and max_length is not None:
        lengths = _token_lengths(tokenizer, [row for _, row in checked], num_proc)
    for (where, row), longest in zip(checked, lengths):
        if max_length is not None and longest > max_length:
            data.overlong += 1
            if overlong == "error":
                raise InputError(f"{where}: {longest} tokens, more than max_length={max_length}")
            if overlong == "drop":
                data.dropped += 1
                continue
        data.rows.append(row)
    if data.overlong:
        action = "dropped" if overlong == "drop" else "truncated at batch time"
        note = (
            f"{name}: {data.overlong} of {len(records)} rows exceed max_length={max_length} tokens ({action})"
        )
        data.notes.append(note)
        logger.warning(escape_terminal(note))  # the file name may carry control characters
    if ties:
        note = f"{name}: {ties} of {len(records)} pairs have chosen == rejected (dropped: nothing to prefer)"
        data.dropped += ties
        data.notes.append(note)
        logger.warning(escape_terminal(note))  # the file name may carry control characters
    if not data.rows:
        raise InputError(
            f"{name}: no usable rows ({data.dropped - ties} longer than max_length={max_length} dropped, "
            f"{ties} with chosen == rejected)"
        )
    return data
