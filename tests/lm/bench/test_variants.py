"""`aihf lm data-variants`: the scarce, noisy and partial-coverage data sets of protocol v2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aihf.lm.bench.variants import build_variants, prompt_type, read_data, type_halves

CHAT = "<|im_start|>user\nContinue this text with one short sentence: {}<|im_end|>\n<|im_start|>assistant\n{}"
OPENINGS = ["The cat", "A dog", "I think", "You know", "If only", "When it", "Most people", "It was"]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _prompt(i: int) -> str:
    text = f"{OPENINGS[i % len(OPENINGS)]} {i}"
    return CHAT.format(text, text)


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    _write(root / "demos.jsonl", [{"prompt": _prompt(i), "completion": f" d{i}"} for i in range(40)])
    prefs = [{"prompt": _prompt(i), "chosen": f" good{i}", "rejected": f" bad{i}"} for i in range(150)]
    _write(root / "prefs.jsonl", prefs)
    _write(root / "prefs_heldout.jsonl", prefs[:5])
    _write(root / "prompts.jsonl", [{"prompt": _prompt(i)} for i in range(20)])
    _write(root / "test_prompts.jsonl", [{"prompt": _prompt(1000 + i)} for i in range(32)])
    return root


def test_prompt_type_is_the_first_word_of_the_text():
    assert prompt_type(CHAT.format("The cat sat", "The cat sat")) == "the"
    assert prompt_type("I'm here") == "i'm"
    assert prompt_type("<|im_start|>user\nContinue this text with one short sentence: ...<|im_end|>") == "-"


def test_the_three_variants_from_one_full_set(data, tmp_path):
    out = tmp_path / "variants"
    build_variants(data, out, seed=0)
    prefs = _read(data / "prefs.jsonl")
    assert _read(out / "scarce" / "prefs.jsonl") == prefs[:100]
    # noisy: exactly 30 % flipped, the listed rows and only those
    flipped = json.loads((out / "noisy" / "flipped.json").read_text())["rows"]
    assert len(flipped) == 45 and flipped == sorted(set(flipped))
    for i, (clean, noisy) in enumerate(zip(prefs, _read(out / "noisy" / "prefs.jsonl"))):
        swapped = {"prompt": clean["prompt"], "chosen": clean["rejected"], "rejected": clean["chosen"]}
        assert noisy == (swapped if i in flipped else clean)
    # partial: demonstrations of the covered types only; the test prompts split by the same types
    types = json.loads((out / "partial" / "types.json").read_text())
    covered, uncovered = set(types["covered"]), set(types["uncovered"])
    assert covered and uncovered and not covered & uncovered
    assert covered | uncovered == {prompt_type(d["prompt"]) for d in _read(data / "demos.jsonl")}
    demos = _read(out / "partial" / "demos.jsonl")
    assert len(demos) == 20 and {prompt_type(d["prompt"]) for d in demos} == covered
    tests_c = _read(out / "partial" / "test_prompts_covered.jsonl")
    tests_u = _read(out / "partial" / "test_prompts_uncovered.jsonl")
    assert {prompt_type(t["prompt"]) for t in tests_c} <= covered
    assert {prompt_type(t["prompt"]) for t in tests_u} <= uncovered
    assert len(tests_c) + len(tests_u) == 32
    # the rest is the full set's, the held-out pairs clean in every variant
    for name in ("scarce", "noisy", "partial"):
        assert (out / name / "prefs_heldout.jsonl").read_bytes() == (
            data / "prefs_heldout.jsonl"
        ).read_bytes()
        assert (out / name / "prompts.jsonl").read_bytes() == (data / "prompts.jsonl").read_bytes()
        assert json.loads((out / name / "variant.json").read_text())["seed"] == 0


def test_variants_are_deterministic_in_their_seed(data, tmp_path):
    build_variants(data, tmp_path / "a", seed=3)
    build_variants(data, tmp_path / "b", seed=3)
    build_variants(data, tmp_path / "c", seed=4)
    for name in ("noisy/prefs.jsonl", "noisy/flipped.json", "partial/demos.jsonl", "partial/types.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "noisy/flipped.json").read_bytes() != (
        tmp_path / "c" / "noisy/flipped.json"
    ).read_bytes()


def test_type_halves_balance_the_demonstrations():
    demos = [{"prompt": w} for w in ["a"] * 6 + ["b"] * 5 + ["c"] * 3 + ["d"] * 2 + ["e"]]
    covered, uncovered = type_halves(demos, seed=0)
    count = {t: sum(d["prompt"] == t for d in demos) for t in "abcde"}
    assert abs(sum(count[t] for t in covered) - sum(count[t] for t in uncovered)) <= 1


@pytest.mark.parametrize(
    ("file", "row", "said"),
    [
        (
            "demos.jsonl",
            {"prompt": "p"},
            "demos.jsonl, line 41: expected the string fields prompt, completion",
        ),
        ("prefs.jsonl", {"prompt": "p", "chosen": "a", "rejected": 3}, "prefs.jsonl, line 151: expected"),
        ("test_prompts.jsonl", {"prompt": "p", "gold": 0.5}, "test_prompts.jsonl, line 33: expected"),
    ],
)
def test_a_variant_source_of_the_wrong_shape_stops_in_one_line_before_writing(
    data, tmp_path, capsys, file, row, said
):
    from aihf.cli import main

    with (data / file).open("a") as f:
        f.write(json.dumps(row) + "\n")
    out = tmp_path / "variants"
    assert main(["lm", "data-variants", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and said in err
    assert not out.exists()


def test_too_few_pairs_for_the_scarce_set_is_refused(data, tmp_path):
    from aihf.errors import InputError

    _write(data / "prefs.jsonl", _read(data / "prefs.jsonl")[:99])
    with pytest.raises(InputError, match="99 pairs, fewer than 100"):
        build_variants(data, tmp_path / "v")


def test_the_bench_names_a_data_file_of_the_wrong_shape_before_any_job(data, tmp_path, capsys, tiny_dir):
    from aihf.cli import main

    with (data / "prefs.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    argv = ["lm", "bench", "--quick", "--out", str(tmp_path / "out"), "--methods", "sft"]
    argv += ["--data-dir", str(data), "--base-model", str(tiny_dir / "policy")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "prefs.jsonl, line 151: expected the string fields prompt, chosen" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_the_shipped_v2_data_and_variants_are_what_their_records_say(tmp_path):
    """The committed smollm2_v2 sets: the Table-3 ordering its quality.json states holds on the files,
    every variant was made from these very files, and rebuilding the variants gives the shipped ones."""
    from aihf.io import sha256_file
    from aihf.lm.bench.datagen import SMOLLM2_V2_DATA_DIR as V2

    sets = read_data(V2)
    quality = json.loads((V2 / "quality.json").read_text())["quality"]
    assert quality["demonstrations"]["mean"] > quality["preferred"]["mean"] > quality["non_preferred"]["mean"]
    assert len(sets["demos.jsonl"]) == quality["demonstrations"]["n"]
    assert len(sets["prefs.jsonl"]) == quality["preferred"]["n"]
    build_variants(V2, tmp_path, seed=0)
    for name in ("scarce", "noisy", "partial"):
        record = json.loads((V2 / "variants" / name / "variant.json").read_text())
        assert record["source_sha256"] == {f: sha256_file(V2 / f) for f in record["source_sha256"]}
        for shipped in (V2 / "variants" / name).iterdir():
            if shipped.name != "variant.json":  # it records the source path it was given
                assert shipped.read_bytes() == (tmp_path / name / shipped.name).read_bytes(), shipped
