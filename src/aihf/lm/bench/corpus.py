"""The benchmark's corpus: English fortune cookies from Debian's `fortunes` package (BSD licence).

The paper continues IMDb reviews; no data set can be downloaded here, so the project builds its corpus
from real English prose that installs from a package registry: the quotations, quips and aphorisms of
`fortune-mod` (Debian main, `apt-get install fortunes`, BSD licence, see debian/copyright). Their
sentiment ranges from bitter to cheerful, so a sentiment reward has room to move a policy.

`build_corpus` splits the cookies *by cookie* into a pretraining text and held-out cookies; sentences
of the held-out cookies give the prompts (their first few words), split disjointly into data-generation,
RL and test prompts (30% / 40% / 30%, as in the paper). The result is shipped under
`aihf/data/lm/corpus/`, so users need neither Debian nor the package.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

from aihf.errors import InputError
from aihf.io import atomic_path, read_jsonl, write_text

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "lm"
CORPUS_DIR = DATA_DIR / "corpus"
DEFAULT_FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Files that are not prose: pictures, code, and foreign-language text.
SKIPPED_FILES = {"ascii-art", "translate-me", "perl"}
PROMPT_SPLITS = {"datagen": 0.3, "rl": 0.4, "test": 0.3}
HELD_OUT_FRACTION = 0.25

_ATTRIBUTION = re.compile(r"^\s*(--|―|~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def read_cookies(fortune_dir: str | Path = DEFAULT_FORTUNE_DIR) -> list[str]:
    """Every usable cookie in `fortune_dir`, one line of normalised prose each, in a fixed order."""
    root = Path(fortune_dir)
    files = sorted(p for p in root.iterdir() if p.is_file() and "." not in p.name) if root.is_dir() else []
    if not files:
        raise InputError(
            f"{root}: no fortune files found (expected the text files of Debian's `fortunes` package; "
            "install it with `apt-get install fortunes` or pass --fortune-dir)"
        )
    cookies: list[str] = []
    for path in files:
        if path.name in SKIPPED_FILES:
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for chunk in raw.split("\n%\n"):
            text = clean_cookie(chunk)
            if text:
                cookies.append(text)
    return cookies


def clean_cookie(chunk: str) -> str | None:
    """One cookie as one line, attributions dropped; None for art, code, tables or very long pieces."""
    chunk = re.sub(r".\x08", "", chunk)  # overstriking (bold/underline in old terminals)
    lines = [line for line in chunk.splitlines() if line.strip() and not _ATTRIBUTION.match(line)]
    text = " ".join(" ".join(lines).split())
    if not (20 <= len(text) <= 600) or not text.isascii():
        return None
    letters = sum(c.isalpha() or c.isspace() for c in text)
    if letters / len(text) < 0.85:
        return None
    return text


def _bucket(text: str) -> float:
    """A stable number in [0, 1) for `text`, so the splits never depend on file order or Python's hash."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 2**32


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def make_prompt(sentence: str, rng: random.Random, min_words: int = 3, max_words: int = 5) -> str | None:
    """The first few words of a sentence long enough to leave something to continue."""
    words = sentence.split()
    if len(words) < max_words + 3:
        return None
    return " ".join(words[: rng.randint(min_words, max_words)])


def build_corpus(cookies: Iterable[str], seed: int = 0) -> dict[str, list[str]]:
    """Split cookies into `pretrain` text and disjoint `datagen` / `rl` / `test` prompts."""
    rng = random.Random(seed)
    unique = sorted(set(cookies))
    pretrain = [c for c in unique if _bucket(c) >= HELD_OUT_FRACTION]
    held_out = [c for c in unique if _bucket(c) < HELD_OUT_FRACTION]
    prompts: list[str] = []
    seen: set[str] = set()
    for cookie in held_out:
        for sentence in split_sentences(cookie):
            prompt = make_prompt(sentence, rng)
            if prompt and prompt not in seen:
                seen.add(prompt)
                prompts.append(prompt)
    rng.shuffle(prompts)
    out: dict[str, list[str]] = {"pretrain": pretrain}
    start = 0
    for i, (name, fraction) in enumerate(PROMPT_SPLITS.items()):
        stop = len(prompts) if i == len(PROMPT_SPLITS) - 1 else start + round(fraction * len(prompts))
        out[name] = prompts[start:stop]
        start = stop
    return out


def write_corpus(splits: dict[str, list[str]], out_dir: str | Path = CORPUS_DIR) -> Path:
    """`pretrain.txt.gz` (one cookie a line) and `prompts_<split>.jsonl` (TRL's `prompt` column)."""
    out = Path(out_dir)
    # mtime=0 keeps the archive byte-identical across rebuilds.
    with atomic_path(out / "pretrain.txt.gz") as tmp:
        tmp.write_bytes(gzip.compress(("\n".join(splits["pretrain"]) + "\n").encode(), mtime=0))
    for name in PROMPT_SPLITS:
        rows = "".join(json.dumps({"prompt": p}) + "\n" for p in splits[name])
        write_text(out / f"prompts_{name}.jsonl", rows)
    return out


def load_pretrain_text(corpus_dir: str | Path = CORPUS_DIR) -> list[str]:
    path = Path(corpus_dir) / "pretrain.txt.gz"
    if not path.is_file():
        raise InputError(
            f"{path}: missing pretraining text (rebuild it with `aihf lm pretrain --build-corpus`)"
        )
    with gzip.open(path, "rt") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_prompts(split: str, corpus_dir: str | Path = CORPUS_DIR, limit: int | None = None) -> list[str]:
    """Prompts of one split (`datagen`, `rl` or `test`), in their shipped (shuffled) order."""
    if split not in PROMPT_SPLITS:
        raise InputError(f"prompt split {split!r}: expected one of {', '.join(PROMPT_SPLITS)}")
    path = Path(corpus_dir) / f"prompts_{split}.jsonl"
    prompts = [row["prompt"] for row in read_jsonl(path, "the shipped prompt file", field="prompt")]
    return prompts[:limit] if limit is not None else prompts
