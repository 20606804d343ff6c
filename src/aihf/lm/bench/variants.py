"""Data variants for the paper's regime (docs/lm_protocol_v2.md, section 1): each a data directory of
its own, made once from a full one (`aihf lm generate-data`) with a fixed seed, so a benchmark protocol
names it like the full data.

- **scarce**: the first `SCARCE_PAIRS` preference pairs (a prefix: the data generator writes one pair
  per prompt first, so a prefix is a data set in its own right).
- **noisy**: `NOISE` of the full set's pairs with chosen and rejected swapped, the swapped rows listed in
  `flipped.json` (0-based row numbers of prefs.jsonl).
- **partial**: demonstrations only for the prompts of half of the prompt types. A prompt's type is the
  first word of its text (lower-cased letters, digits and apostrophes; `-` when it has none): the
  sentence's opening ("the", "a", "i", "you", "if", "when", ...) sets its construction and what a
  continuation must do, and it is read off the data with no outside labels (the corpus keeps no source
  file per cookie). The types are dealt into two halves of about equal demonstration counts (a seeded
  shuffle, then the larger types first to whichever half holds fewer); `types.json` lists them, and the
  test prompts are split the same way (`test_prompts_covered.jsonl`, `test_prompts_uncovered.jsonl`) so
  each half is scored on its own.

Every other file is copied unchanged, and the held-out preference pairs stay clean in every variant
(they measure the learned reward against the truth). `variant.json` records what was done, the seed and
the SHA-256 of each source file.
"""

from __future__ import annotations

import random
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aihf.errors import InputError
from aihf.io import read_jsonl_lines, sha256_file, write_json
from aihf.lm.bench.datagen import write_jsonl
from aihf.lm.gold_v2 import prompt_text

NAMES = ("scarce", "noisy", "partial")
SCARCE_PAIRS = 100
NOISE = 0.3
# the files of a data directory and the string fields each row holds, exactly
COLUMNS: dict[str, tuple[str, ...]] = {
    "demos.jsonl": ("prompt", "completion"),
    "prefs.jsonl": ("prompt", "chosen", "rejected"),
    "prefs_heldout.jsonl": ("prompt", "chosen", "rejected"),
    "prompts.jsonl": ("prompt",),
    "test_prompts.jsonl": ("prompt",),
}
_FIRST_WORD = re.compile(r"[a-z0-9']+")


def read_data(data_dir: str | Path) -> dict[str, list[dict[str, str]]]:
    """Every file of a data directory, each row checked to hold exactly its file's string fields; a
    missing file or a row of another shape is one InputError naming file, line and fields."""
    root = Path(data_dir)
    out = {}
    for name, columns in COLUMNS.items():
        path = root / name
        if not path.is_file():
            raise InputError(f"{path}: missing (a data directory holds {', '.join(COLUMNS)})")
        out[name] = read_rows(path, columns, exact=True)
    return out


def read_rows(path: Path, columns: Sequence[str], exact: bool = False) -> list[dict[str, str]]:
    """The rows of one data file, each holding `columns` as strings (`exact`: and nothing else); a
    row of another shape, or no rows, is one InputError naming file and line."""
    rows = []
    for number, row in read_jsonl_lines(path):
        shaped = sorted(row) == sorted(columns) if exact else set(columns) <= set(row)
        if not shaped or not all(isinstance(row[c], str) for c in columns):
            got = ", ".join(f"{k}: {type(v).__name__}" for k, v in row.items()) or "nothing"
            raise InputError(
                f"{path}, line {number}: expected the string fields {', '.join(columns)}, got {got}"
            )
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def prompt_type(prompt: str) -> str:
    """The first word of the prompt's text (the chat turn's text, or the prompt), or `-`."""
    words = _FIRST_WORD.findall(prompt_text(prompt).lower())
    return words[0] if words else "-"


def type_halves(demos: Sequence[dict[str, str]], seed: int) -> tuple[list[str], list[str]]:
    """(covered, uncovered) prompt types: about half the demonstrations each, dealt deterministically."""
    counts = Counter(prompt_type(d["prompt"]) for d in demos)
    types = sorted(counts)
    random.Random(seed).shuffle(types)
    types.sort(key=lambda t: -counts[t])  # stable: equal counts keep the seeded order
    halves: tuple[list[str], list[str]] = ([], [])
    sizes = [0, 0]
    for t in types:
        i = 0 if sizes[0] <= sizes[1] else 1
        halves[i].append(t)
        sizes[i] += counts[t]
    return sorted(halves[0]), sorted(halves[1])


def build_variants(data_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write OUT/scarce, OUT/noisy and OUT/partial from the data directory `data_dir`; returns a summary."""
    data = read_data(data_dir)  # every shape checked before anything is written
    prefs, demos = data["prefs.jsonl"], data["demos.jsonl"]
    if len(prefs) < SCARCE_PAIRS:
        raise InputError(f"{Path(data_dir) / 'prefs.jsonl'}: {len(prefs)} pairs, fewer than {SCARCE_PAIRS}")
    sources = {name: sha256_file(Path(data_dir) / name) for name in COLUMNS}
    flipped = sorted(random.Random(seed).sample(range(len(prefs)), round(NOISE * len(prefs))))
    swap = set(flipped)
    noisy = [
        {"prompt": p["prompt"], "chosen": p["rejected"], "rejected": p["chosen"]} if i in swap else p
        for i, p in enumerate(prefs)
    ]
    covered, uncovered = type_halves(demos, seed)
    kept = set(covered)
    tests = data["test_prompts.jsonl"]
    changed = {
        "scarce": {"prefs.jsonl": prefs[:SCARCE_PAIRS]},
        "noisy": {"prefs.jsonl": noisy},
        "partial": {
            "demos.jsonl": [d for d in demos if prompt_type(d["prompt"]) in kept],
            "test_prompts_covered.jsonl": [t for t in tests if prompt_type(t["prompt"]) in kept],
            "test_prompts_uncovered.jsonl": [t for t in tests if prompt_type(t["prompt"]) not in kept],
        },
    }
    notes = {
        "scarce": {"prefs": f"the first {SCARCE_PAIRS} of {len(prefs)} pairs"},
        "noisy": {"prefs": f"{len(flipped)} of {len(prefs)} pairs flipped ({NOISE:.0%}): flipped.json"},
        "partial": {"demos": "demonstrations of the covered prompt types only: types.json"},
    }
    summary: dict[str, Any] = {}
    for name in NAMES:
        out = Path(out_dir) / name
        out.mkdir(parents=True, exist_ok=True)
        for file in COLUMNS:
            if file not in changed[name]:
                shutil.copyfile(Path(data_dir) / file, out / file)
        for file, rows in changed[name].items():
            write_jsonl(out / file, rows)
        counts = {file: len(rows) for file, rows in changed[name].items()}
        summary[name] = {"variant": name, "seed": seed, "changed": notes[name], "rows": counts}
        write_json(out / "variant.json", summary[name] | {"source": str(data_dir), "source_sha256": sources})
    write_json(Path(out_dir) / "noisy" / "flipped.json", {"fraction": NOISE, "seed": seed, "rows": flipped})
    write_json(
        Path(out_dir) / "partial" / "types.json",
        {"seed": seed, "rule": "first word of the prompt's text", "covered": covered, "uncovered": uncovered},
    )
    return summary
