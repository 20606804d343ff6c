"""Tiny local models and data shared by the LM tests (built once per session, no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aihf.lm.tiny import save_tiny_models

# Separable toy data: demonstrations and preferred answers are warm, rejected answers are cold.
PROMPTS = ["The film was", "I thought the story", "Our team", "She walked", "The acting", "Overall it"]
GOOD = [
    " a delight, warm and clever.",
    " moving, funny and beautifully shot.",
    " agreed it works better.",
    " to the window and smiled.",
    " was warm and thoughtful.",
    " was the best film of the year.",
]
BAD = [
    " terrible, dull and slow.",
    " wooden; a waste of an evening.",
    " fell flat again.",
    " into the rain, bored.",
    " was wooden and flat.",
    " made no sense at all.",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_jsonl(root / "demos.jsonl", [{"prompt": p, "completion": g} for p, g in zip(PROMPTS, GOOD)])
    write_jsonl(
        root / "prefs.jsonl",
        [{"prompt": p, "chosen": g, "rejected": b} for p, g, b in zip(PROMPTS, GOOD, BAD)],
    )
    write_jsonl(root / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    return root


@pytest.fixture
def jsonl():
    """write_jsonl(path, rows) -> path, for tests that build their own files."""
    return write_jsonl


@pytest.fixture
def run_config(monkeypatch: pytest.MonkeyPatch):
    """`run_config(argv)`: the config `aihf lm train ARGV` would train with, through the real command
    line up to the method's runner, which is replaced by one that records its config."""
    import dataclasses

    import aihf.cli
    import aihf.lm.methods as methods

    seen = []
    for name, method in list(methods.METHODS.items()):
        runner = dataclasses.replace(method, run=lambda inputs: seen.append(inputs.config) or {})
        monkeypatch.setitem(methods.METHODS, name, runner)

    def run(argv: list[str]):
        assert aihf.cli.main(["lm", "train", *argv]) == 0
        return seen[-1]

    return run
