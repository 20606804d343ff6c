"""The promise for bad input, across the three CLIs: exit code 2, exactly one line on stderr naming the
file, line, field or flag at fault, no traceback, nothing on stdout, and nothing written (an existing
file given as --out is left as it was). Each case runs in-process through `aihf.cli.main` and fails at
validation, before any training; a few run as real processes to see the true stderr.

Case: (id, argv, files, expected). In argv and file contents, {t} is the case's directory, {out} the
output path (absent before the run), {tiny} the tiny local LM pair. `files` maps names under {t} to
text, bytes or a function writing that path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aihf.cli import main

# ------------------------------------------------------------------------------------------------------
# file makers


def _npz(**changes: Any) -> Callable[[Path, Path], None]:
    """A small valid Pendulum trajectory/preference file, with `changes` applied (None deletes a key)."""

    def write(path: Path, tiny: Path) -> None:
        n, lengths = 10, np.array([5, 5])
        arrays: dict[str, Any] = {
            "observations": np.zeros((n, 3), np.float32),
            "actions": np.zeros((n, 1), np.float32),
            "rewards": np.zeros(n, np.float32),
            "terminated": np.zeros(n, bool),
            "truncated": np.zeros(n, bool),
            "lengths": lengths,
            "segments": np.array([[0, 0, 3, 1, 0, 3]]),
            "labels": np.array([1.0], np.float32),
        }
        for key, value in changes.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        with path.open("wb") as fh:
            np.savez(fh, **arrays)

    return write


def _model_without(*names: str) -> Callable[[Path, Path], None]:
    """A copy of the tiny policy directory lacking `names`."""

    def write(path: Path, tiny: Path) -> None:
        path.mkdir()
        for source in (tiny / "policy").iterdir():
            if source.name not in names:
                (path / source.name).write_bytes(source.read_bytes())

    return write


def _jsonl(*rows: str) -> str:
    return "".join(f"{r}\n" for r in rows)


PAIR = '{"prompt": "The film was", "chosen": " warm.", "rejected": " dull."}'
DEMO = '{"prompt": "The film was", "completion": " warm."}'

# ------------------------------------------------------------------------------------------------------
# choice

# fmt: off
SOLVE = ["choice", "solve", "--json"]
CHOICE: list[tuple[str, list[str], dict[str, Any], str]] = [
    ("negative-count", [*SOLVE, "--demo-counts", "5,-1"], {}, "--demo-counts item 2"),
    ("fraction-count", [*SOLVE, "--demo-counts", "5,1.5"], {}, "--demo-counts item 2"),
    ("text-count", [*SOLVE, "--demo-counts", "5,x"], {}, "--demo-counts item 2"),
    ("empty-counts", [*SOLVE, "--demo-counts", ""], {}, "--demo-counts is empty"),
    ("no-demos", [*SOLVE, "--demo-counts", "0,0"], {}, "no demonstrations"),
    ("huge-count", [*SOLVE, "--demo-counts", "99999999999999999999999,1"], {}, "item 1: expected a non-neg"),
    ("huge-pref", [*SOLVE, "--demo-counts", "5,5", "--pref-counts", "0>1:1" + "0" * 20], {}, "at most"),
    ("huge-pref-sum", [*SOLVE, "--demo-counts", "5,5", "--pref-counts", "0>1:1000000000000,0>1:1000000000000"], {}, "item 2"),
    ("self-pref", [*SOLVE, "--demo-counts", "5,5", "--pref-counts", "1>1:3"], {}, "over itself"),
    ("pref-range", [*SOLVE, "--demo-counts", "5,5", "--pref-counts", "0>2:3"], {}, "out of range"),
    ("pref-syntax", [*SOLVE, "--demo-counts", "5,5", "--pref-counts", "0-1:3"], {}, "winner>loser"),
    ("pref-negative", [*SOLVE, "--demo-counts", "5,5", "--pref-counts", "0>1:-2"], {}, "--pref-counts item 1"),
    ("prior-length", [*SOLVE, "--demo-counts", "5,5", "--prior", "0.2,0.3,0.5"], {}, "expected 2"),
    ("prior-sum", [*SOLVE, "--demo-counts", "5,5", "--prior", "0.2,0.3"], {}, "summing to 1"),
    ("prior-zero", [*SOLVE, "--demo-counts", "5,5", "--prior", "1,0"], {}, "probability 0"),
    ("prior-text", [*SOLVE, "--demo-counts", "5,5", "--prior", "a,b"], {}, "--prior"),
    ("prior-nan", [*SOLVE, "--demo-counts", "5,5", "--prior", "nan,nan"], {}, "prior must be"),
    ("beta-zero", [*SOLVE, "--demo-counts", "5,5", "--beta", "0"], {}, "--beta"),
    ("beta-nan", [*SOLVE, "--demo-counts", "5,5", "--beta", "nan"], {}, "--beta"),
    ("beta-huge", [*SOLVE, "--demo-counts", "5,5", "--beta", "1e300"], {}, "--beta"),
    ("alpha-negative", [*SOLVE, "--demo-counts", "5,5", "--alpha", "-1"], {}, "--alpha"),
    ("alpha-inf", [*SOLVE, "--demo-counts", "5,5", "--alpha", "inf"], {}, "--alpha"),
    ("beta-text", [*SOLVE, "--demo-counts", "5,5", "--beta", "big"], {}, "argument --beta"),
    ("data-missing", [*SOLVE, "--data", "{t}/none.json"], {}, "none.json: no such file"),
    ("data-dir", [*SOLVE, "--data", "{t}"], {}, "no such file"),
    ("json-syntax", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [1, 2'}, "d.json: not valid"),
    ("json-list", [*SOLVE, "--data", "{t}/d.json"], {"d.json": "[1, 2]"}, "d.json: expected a JSON object"),
    ("json-shape", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [1, 2], "pref_counts": [[0]]}'}, "shape"),
    ("json-field", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [1], "x": 1}'}, "unknown field"),
    ("json-float", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [1, 2.5]}'}, "demo_counts[1]"),
    ("json-text", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": "1,2"}'}, "must be a list"),
    ("json-triple", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [1, 2], "preferences": [[0, 1]]}'}, "preferences[0]"),
    ("json-huge", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [1e30, 1]}'}, "demo_counts[0]"),
    ("json-actions", [*SOLVE, "--data", "{t}/d.json"], {"d.json": '{"demo_counts": [' + "1," * 20000 + "1]}"}, "actions"),
    ("json-binary", [*SOLVE, "--data", "{t}/d.json"], {"d.json": b"\xff\xfe\x00"}, "d.json: not valid JSON"),
    ("csv-header", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "a,b,c,d\ndemo,0,,3\n"}, "d.csv: expected the header"),
    ("csv-kind", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\n\ndemo,0,,3\nfoo,0,,3\n"}, "d.csv, line 4, field 'kind'"),
    ("csv-count", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\ndemo,0,,-3\n"}, "d.csv, line 2, field 'count'"),
    ("csv-index", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\ndemo,x,,3\n"}, "d.csv, line 2, field 'i'"),
    ("csv-fields", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\ndemo,0,3\n"}, "d.csv, line 2: expected 4"),
    ("csv-self", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\ndemo,0,,1\npref,1,1,2\n"}, "line 3: action 1"),
    ("csv-big-index", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\ndemo,1000000000000,,1\n"}, "actions"),
    ("csv-sum", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\ndemo,0,,1000000000000\ndemo,0,,1000000000000\n"}, "line 3, field 'count'"),
    ("csv-binary", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": b"\xff\xfe\x00\x01"}, "d.csv: not a text CSV"),
    ("csv-empty", [*SOLVE, "--data", "{t}/d.csv"], {"d.csv": "kind,i,j,count\n"}, "no data rows"),
    ("data-format", [*SOLVE, "--data", "{t}/d.txt"], {"d.txt": "hello"}, "unknown data format"),
    ("data-and-prefs", [*SOLVE, "--data", "{t}/d.json", "--pref-counts", "0>1"], {"d.json": '{"demo_counts": [1]}'}, "cannot be combined"),
    ("out-is-file", ["choice", "example1", "--out", "{t}/f"], {"f": "keep me"}, "--out {t}/f: is an existing file"),
    ("out-under-file", ["choice", "example2", "--out", "{t}/f/run"], {"f": "keep me"}, "{t}/f is a file"),
    ("repeats", ["choice", "example2", "--out", "{out}", "--repeats", "1"], {}, "--repeats"),
    ("sweep-sizes", ["choice", "sweep", "--out", "{out}", "--demo-sizes", "10,0"], {}, "--demo-sizes"),
    ("sweep-text", ["choice", "sweep", "--out", "{out}", "--pref-sizes", "a"], {}, "--pref-sizes"),
    ("sweep-actions", ["choice", "sweep", "--out", "{out}", "--actions", "1"], {}, "--actions"),
    ("sweep-huge-size", ["choice", "sweep", "--out", "{out}", "--demo-sizes", "99999999999999999999"], {}, "--demo-sizes"),
    ("sweep-many-actions", ["choice", "sweep", "--out", "{out}", "--actions", "100000000"], {}, "--actions = 100000000"),
    ("repeats-huge", ["choice", "example2", "--out", "{out}", "--repeats", "99999999999999999999"], {}, "--repeats"),
    ("seed-negative", ["choice", "sweep", "--out", "{out}", "--seed", "-1"], {}, "--seed = -1"),
    ("variance-beta", ["choice", "variance", "--out", "{out}", "--beta", "-1"], {}, "--beta"),
]

# ------------------------------------------------------------------------------------------------------
# control (Pendulum-v1 and its shipped data unless a case gives files)

TRAIN = ["control", "train", "--env", "Pendulum-v1", "--no-progress", "--out", "{out}"]
BAD_YAML = "{t}/c.yaml"
CONTROL: list[tuple[str, list[str], dict[str, Any], str]] = [
    ("total-steps-zero", [*TRAIN, "--n-timesteps", "0"], {}, "--n_timesteps = 0"),
    ("total-steps-huge", [*TRAIN, "--n-timesteps", "1000000000000"], {}, "--n_timesteps = 1000000000000"),
    ("total-steps-negative", [*TRAIN, "--n-timesteps", "-5"], {}, "--n_timesteps = -5"),
    ("steps-per-iter", [*TRAIN, "--steps-per-iter", "0"], {}, "--steps_per_iter"),
    ("alpha-negative", [*TRAIN, "--alpha", "-1"], {}, "--alpha = -1"),
    ("alpha-nan", [*TRAIN, "--alpha", "nan"], {}, "--alpha = 'nan'"),
    ("reward-lr-negative", [*TRAIN, "--reward-lr", "-1"], {}, "--reward_lr"),
    ("reward-lr-nan", [*TRAIN, "--reward-lr", "nan"], {}, "--reward_lr = 'nan'"),
    ("reward-lr-inf", [*TRAIN, "--reward-lr", "inf"], {}, "--reward_lr = 'inf'"),
    ("learning-starts", [*TRAIN, "--learning-starts", "-1"], {}, "--learning_starts"),
    ("eval-episodes", [*TRAIN, "--eval-episodes", "0"], {}, "--eval_episodes"),
    ("eval-interval", [*TRAIN, "--eval-interval", "-1"], {}, "--eval_interval"),
    ("reward-scale", [*TRAIN, "--reward-scale", "0"], {}, "--reward_scale"),
    ("centering", [*TRAIN, "--centering-coef", "-0.1"], {}, "--centering_coef"),
    ("weight-decay", [*TRAIN, "--reward-weight-decay", "-1"], {}, "--reward_weight_decay"),
    ("reward-updates", [*TRAIN, "--reward-updates", "-2"], {}, "--reward_updates_per_iter"),
    ("seed-negative", [*TRAIN, "--seed", "-1"], {}, "--seed = -1"),
    ("seed-text", [*TRAIN, "--seed", "abc"], {}, "--seed = 'abc'"),
    ("demo-form", [*TRAIN, "--demo-form", "cubic"], {}, "--demo_form = 'cubic'"),
    ("termination", [*TRAIN, "--termination", "ignore"], {}, "--termination"),
    ("algo", [*TRAIN, "--algo", "ppo"], {}, "field 'algo' = 'ppo'"),
    ("env-unknown", [*TRAIN, "--env", "NoSuchEnv-v9"], {}, "--env NoSuchEnv-v9: not a registered"),
    ("env-discrete", [*TRAIN, "--env", "CartPole-v1", "--algo", "sac-true"], {}, "Box action space"),
    ("yaml-type", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "batch_size: two\n"}, "c.yaml: field 'batch_size' = 'two'"),
    ("yaml-text-lr", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "reward_lr: fast\n"}, "c.yaml: field 'reward_lr'"),
    ("yaml-hidden", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "policy_kwargs: {net_arch: [64, 0]}\n"}, "c.yaml: field 'policy_kwargs'"),
    ("yaml-gamma", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "gamma: 1.5\n"}, "c.yaml: field 'gamma' = 1.5"),
    ("yaml-holdout", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "pref_holdout: 1\n"}, "field 'pref_holdout'"),
    ("yaml-bool", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "tensorboard: maybe\n"}, "field 'tensorboard'"),
    ("yaml-nan", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "bc_lr: .nan\n"}, "field 'bc_lr' = nan"),
    ("yaml-int-float", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "n_timesteps: 1.5e3\n"}, "field 'n_timesteps'"),
    ("yaml-device", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "device: tpu\n"}, "c.yaml: field 'device' = 'tpu'"),
    ("yaml-syntax", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "alpha: 1\nbeta: [1, 2\n"}, "c.yaml, line 3: not valid YAML"),
    ("yaml-indent", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "alpha: 1\n  gamma: 2\n"}, "c.yaml, line 2: not valid YAML"),
    ("yaml-list", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "- alpha\n"}, "c.yaml: expected a mapping"),
    ("yaml-unknown", [*TRAIN, "--config", BAD_YAML], {"c.yaml": "alpah: 1\n"}, "c.yaml: unknown option(s) alpah"),
    ("yaml-missing", [*TRAIN, "--config", "{t}/none.yaml"], {}, "none.yaml: config file not found"),
    ("yaml-binary", [*TRAIN, "--config", BAD_YAML], {"c.yaml": b"\xff\xfe\x00"}, "c.yaml: not a text"),
    ("demos-missing", [*TRAIN, "--demos", "{t}/none.npz"], {}, "none.npz: file not found"),
    ("demos-text", [*TRAIN, "--demos", "{t}/d.npz"], {"d.npz": "not an npz"}, "d.npz: not a readable .npz"),
    ("demos-no-actions", [*TRAIN, "--demos", "{t}/d.npz"], {"d.npz": _npz(actions=None)}, "d.npz: missing array 'actions'"),
    ("demos-nan", [*TRAIN, "--demos", "{t}/d.npz"], {"d.npz": _npz(observations=np.full((10, 3), np.nan, np.float32))}, "d.npz: trajectory 0, step 0"),
    ("demos-size", [*TRAIN, "--demos", "{t}/d.npz"], {"d.npz": _npz(observations=np.zeros((10, 4), np.float32))}, "d.npz: observations have size 4"),
    ("demos-lengths", [*TRAIN, "--demos", "{t}/d.npz"], {"d.npz": _npz(lengths=np.array([5, 6]))}, "d.npz: 'lengths' sum to 11"),
    ("prefs-label", [*TRAIN, "--prefs", "{t}/p.npz"], {"p.npz": _npz(labels=np.array([2.0], np.float32))}, "p.npz: preference 0: label 2.0"),
    ("prefs-segment", [*TRAIN, "--prefs", "{t}/p.npz"], {"p.npz": _npz(segments=np.array([[0, 0, 9, 1, 0, 3]]))}, "p.npz: preference 0: segment a"),
    ("out-is-file", ["control", "train", "--out", "{t}/f"], {"f": "keep me"}, "--out {t}/f: is an existing file"),
    ("out-under-file", ["control", "train", "--out", "{t}/f/run"], {"f": "keep me"}, "{t}/f is a file"),
    ("no-out", ["control", "train", "--algo", "aihf"], {}, "--out is required"),
    ("resume-empty", ["control", "train", "--resume", "{t}"], {}, "no checkpoint to resume from"),
    ("collect-steps", ["control", "collect", "--out", "{out}", "--expert-steps", "0"], {}, "field 'expert_steps'"),
    ("collect-every", ["control", "collect", "--out", "{out}", "--checkpoint-every", "0"], {}, "field 'checkpoint_every'"),
    ("collect-temp", ["control", "collect", "--out", "{out}", "--temperature", "0"], {}, "field 'temperature'"),
    ("collect-prefs", ["control", "collect", "--out", "{out}", "--num-preferences", "0"], {}, "field 'num_preferences'"),
    ("collect-episodes", ["control", "collect", "--out", "{out}", "--expert-steps", "1000", "--episodes-per-checkpoint", "1"], {}, "gives 1 episodes"),
    ("collect-env", ["control", "collect", "--out", "{out}", "--env", "NoSuchEnv-v9"], {}, "--env NoSuchEnv-v9"),
    ("bench-steps", ["control", "bench", "--out", "{out}", "--total-steps", "0"], {}, "field 'n_timesteps' = 0"),
    ("bench-seed", ["control", "bench", "--out", "{out}", "--seeds", "-1"], {}, "field 'seed' = -1"),
    ("bench-yaml", ["control", "bench", "--out", "{out}", "--config", BAD_YAML], {"c.yaml": "alpha: -1\n"}, "c.yaml: field 'alpha'"),
]

# ------------------------------------------------------------------------------------------------------
# lm (the tiny local pair; every case stops before a model's weights load)

LM = ["lm", "train", "--model_name_or_path", "{tiny}/policy", "--output_dir", "{out}"]
DPO = [*LM, "--trainer", "dpo", "--prefs", "{t}/p.jsonl"]
OK_PREFS = {"p.jsonl": _jsonl(PAIR, PAIR)}
AIHF = [*LM, "--trainer", "aihf", "--reward-model", "{tiny}/reward_model", "--prefs", "{t}/p.jsonl"]


def _yaml(text: str) -> dict[str, Any]:
    return {**OK_PREFS, "c.yaml": text}


LM_CASES: list[tuple[str, list[str], dict[str, Any], str]] = [
    ("prefs-missing", DPO, {}, "p.jsonl: file not found"),
    ("prefs-json", DPO, {"p.jsonl": _jsonl(PAIR, '{"prompt": ')}, "p.jsonl, line 2: not valid JSON"),
    ("prefs-blank-lines", DPO, {"p.jsonl": PAIR + "\n\n\n[1]\n"}, "p.jsonl, line 4: expected a JSON object"),
    ("prefs-columns", DPO, {"p.jsonl": _jsonl('{"prompt": "a", "good": "b"}')}, "p.jsonl, line 1: missing columns"),
    ("prefs-empty", DPO, {"p.jsonl": "\n"}, "p.jsonl: no rows"),
    ("prefs-type", DPO, {"p.jsonl": _jsonl(PAIR, '{"prompt": "a", "chosen": 3, "rejected": "b"}')}, "p.jsonl, line 2, field 'chosen'"),
    ("prefs-blank", DPO, {"p.jsonl": _jsonl(PAIR, '{"prompt": "a", "chosen": " ", "rejected": "b"}')}, "line 2, field 'chosen': expected a non-empty"),
    ("prefs-null", DPO, {"p.jsonl": _jsonl(PAIR, '{"prompt": "a", "chosen": "b", "rejected": null}')}, "line 2, field 'rejected': missing"),
    ("prefs-ties", DPO, {"p.jsonl": _jsonl('{"prompt": "a", "chosen": " b", "rejected": " b"}')}, "1 with chosen == rejected"),
    ("prefs-binary", DPO, {"p.jsonl": b"\xff\xfe\x00\n"}, "p.jsonl: not a UTF-8"),
    ("prefs-suffix", [*LM, "--trainer", "dpo", "--prefs", "{t}/p.txt"], {"p.txt": PAIR}, "p.txt: unsupported file type"),
    ("demos-columns", [*LM, "--trainer", "sft", "--demos", "{t}/d.jsonl"], {"d.jsonl": _jsonl('{"prompt": "a"}')}, "d.jsonl, line 1: missing columns"),
    ("demos-messages", [*LM, "--trainer", "sft", "--demos", "{t}/d.jsonl"], {"d.jsonl": _jsonl('{"messages": "hi"}')}, "d.jsonl, line 1, field 'messages'"),
    ("chat-template", [*LM, "--trainer", "sft", "--demos", "{t}/d.jsonl", "--config", "{t}/c.yaml"], {"d.jsonl": _jsonl('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'), "c.yaml": "chat_template: '{{ x }'\n"}, "d.jsonl, line 1: the chat template cannot render it"),
    ("sft-no-demos", [*LM, "--trainer", "sft"], {}, "sft: needs --demos"),
    ("dpo-demos", [*DPO, "--demos", "{t}/p.jsonl"], OK_PREFS, "dpo: does not use --demos"),
    ("aihf-no-reward", [*LM, "--trainer", "aihf", "--prefs", "{t}/p.jsonl"], OK_PREFS, "needs --reward-model"),
    ("direct-no-demos", [*LM, "--trainer", "direct-aihf", "--prefs", "{t}/p.jsonl"], OK_PREFS, "alpha > 0 needs demonstrations"),
    ("aihf-no-data", [*LM, "--trainer", "aihf", "--reward-model", "{tiny}/reward_model"], {}, "learning the reward needs"),
    ("rlhf-no-data", [*LM, "--trainer", "rlhf", "--reward-model", "{tiny}/reward_model"], {}, "the policy step needs prompts"),
    ("rlhf-sft-no-demos", [*LM, "--trainer", "rlhf", "--reward-model", "{tiny}/reward_model", "--prefs", "{t}/p.jsonl", "--config", "{t}/c.yaml"], _yaml("sft_steps: 2\n"), "sft_steps > 0 needs demonstrations"),
    ("no-model", ["lm", "train", "--trainer", "dpo", "--prefs", "{t}/p.jsonl", "--output_dir", "{out}"], OK_PREFS, "needs --model"),
    ("model-missing", ["lm", "train", "--trainer", "dpo", "--model_name_or_path", "{t}/nope", "--prefs", "{t}/p.jsonl", "--output_dir", "{out}"], OK_PREFS, "--model_name_or_path {t}/nope: no such model"),
    ("model-file", ["lm", "train", "--trainer", "dpo", "--model_name_or_path", "{t}/p.jsonl", "--prefs", "{t}/p.jsonl", "--output_dir", "{out}"], OK_PREFS, "p.jsonl: is a file"),
    ("model-no-config", ["lm", "train", "--trainer", "dpo", "--model_name_or_path", "{t}/m", "--prefs", "{t}/p.jsonl", "--output_dir", "{out}"], {**OK_PREFS, "m": _model_without("config.json")}, "--model_name_or_path {t}/m: no config.json"),
    ("model-no-tokenizer", ["lm", "train", "--trainer", "dpo", "--model_name_or_path", "{t}/m", "--prefs", "{t}/p.jsonl", "--output_dir", "{out}"], {**OK_PREFS, "m": _model_without("tokenizer.json", "tokenizer_config.json")}, "--model_name_or_path {t}/m: no tokenizer files"),
    ("reward-model-missing", [*LM, "--trainer", "aihf", "--reward-model", "{t}/rm/x", "--prefs", "{t}/p.jsonl"], OK_PREFS, "--reward-model {t}/rm/x: no such model"),
    ("max-steps-negative", [*DPO, "--max-steps", "-3"], OK_PREFS, "--max_steps = -3"),
    ("max-steps-zero", [*DPO, "--max-steps", "0"], OK_PREFS, "--max_steps = 0"),
    ("max-iterations", [*AIHF, "--max-iterations", "-1"], OK_PREFS, "--max_iterations = -1"),
    ("max-steps-text", [*DPO, "--max-steps", "ten"], OK_PREFS, "--max_steps = 'ten'"),
    ("trainer", [*LM, "--trainer", "ppo"], {}, "argument --trainer"),
    ("yaml-batch-text", [*DPO, "--config", "{t}/c.yaml"], _yaml("per_device_train_batch_size: two\n"), "c.yaml: field 'per_device_train_batch_size' = 'two'"),
    ("yaml-batch-zero", [*DPO, "--config", "{t}/c.yaml"], _yaml("per_device_train_batch_size: 0\n"), "c.yaml: field 'per_device_train_batch_size' = 0"),
    ("yaml-lr", [*DPO, "--config", "{t}/c.yaml"], _yaml("learning_rate: -1\n"), "field 'learning_rate' = -1"),
    ("yaml-lr-nan", [*DPO, "--config", "{t}/c.yaml"], _yaml("learning_rate: .nan\n"), "field 'learning_rate' = nan"),
    ("yaml-max-length", [*DPO, "--config", "{t}/c.yaml"], _yaml("max_length: 1000000000000\n"), "field 'max_length'"),
    ("yaml-beta", [*DPO, "--config", "{t}/c.yaml"], _yaml("beta: 0\n"), "field 'beta' = 0"),
    ("yaml-alpha", [*DPO, "--config", "{t}/c.yaml"], _yaml("alpha: -1\n"), "field 'alpha' = -1"),
    ("yaml-smoothing", [*DPO, "--config", "{t}/c.yaml"], _yaml("label_smoothing: 0.9\n"), "field 'label_smoothing'"),
    ("yaml-overlong", [*DPO, "--config", "{t}/c.yaml"], _yaml("overlong: sometimes\n"), "field 'overlong'"),
    ("yaml-scheduler", [*DPO, "--config", "{t}/c.yaml"], _yaml("lr_scheduler_type: zigzag\n"), "field 'lr_scheduler_type'"),
    ("yaml-bool", [*DPO, "--config", "{t}/c.yaml"], _yaml("bf16: sure\n"), "field 'bf16'"),
    ("yaml-modules", [*DPO, "--config", "{t}/c.yaml"], _yaml("lora_target_modules: q_proj\n"), "field 'lora_target_modules'"),
    ("yaml-top-p", [*AIHF, "--config", "{t}/c.yaml"], _yaml("top_p: 2\n"), "field 'top_p' = 2"),
    ("yaml-samples", [*AIHF, "--config", "{t}/c.yaml"], _yaml("num_generations: 1\n"), "field 'num_generations' = 1"),
    ("yaml-optimizer", [*AIHF, "--config", "{t}/c.yaml"], _yaml("policy_optimizer: ppo\n"), "field 'policy_optimizer'"),
    ("yaml-reward-lr", [*AIHF, "--config", "{t}/c.yaml"], _yaml("reward_learning_rate: fast\n"), "field 'reward_learning_rate'"),
    ("yaml-syntax", [*DPO, "--config", "{t}/c.yaml"], _yaml("beta: 0.1\nalpha: {1\n"), "c.yaml, line 3: not valid YAML"),
    ("yaml-tab", [*DPO, "--config", "{t}/c.yaml"], _yaml("beta: 0.1\n\tx: 1\n"), "c.yaml, line 2: not valid YAML"),
    ("yaml-unknown", [*DPO, "--config", "{t}/c.yaml"], _yaml("learning_rat: 0.1\n"), "c.yaml: unknown keys ['learning_rat']"),
    ("yaml-scalar", [*DPO, "--config", "{t}/c.yaml"], _yaml("just text\n"), "c.yaml: expected a mapping"),
    ("yaml-missing", [*DPO, "--config", "{t}/none.yaml"], OK_PREFS, "none.yaml: config file not found"),
    ("yaml-dir", [*DPO, "--config", "{t}"], OK_PREFS, "config file not found (it is a directory)"),
    ("resume-none", [*DPO, "--config", "{t}/c.yaml"], _yaml("resume_from_checkpoint: true\n"), "there is no checkpoint"),
    ("resume-path", [*DPO, "--config", "{t}/c.yaml"], _yaml("resume_from_checkpoint: /no/such\n"), "/no/such: resume_from_checkpoint"),
    ("out-is-file", ["lm", "train", "--trainer", "dpo", "--output_dir", "{t}/f"], {"f": "keep me"}, "--output_dir {t}/f: is an existing file"),
    ("out-under-file", ["lm", "train", "--trainer", "dpo", "--output_dir", "{t}/f/run"], {"f": "keep me"}, "{t}/f is a file"),
    ("tiny-out-file", ["lm", "tiny-model", "--out", "{t}/f"], {"f": "keep me"}, "--out {t}/f: is an existing file"),
    ("eval-out-dir", ["lm", "eval", "--policy", "{tiny}/policy", "--out", "{t}"], {}, "is a directory, expected a file"),
    ("eval-prompts", ["lm", "eval", "--policy", "{tiny}/policy", "--prompts", "{t}/none.jsonl"], {}, "none.jsonl: file not found"),
    ("eval-prompt-field", ["lm", "eval", "--policy", "{tiny}/policy", "--prompts", "{t}/q.jsonl"], {"q.jsonl": _jsonl(DEMO, '{"text": "a"}')}, "q.jsonl, line 2, field 'prompt'"),
    ("eval-n-prompts", ["lm", "eval", "--policy", "{tiny}/policy", "--n-prompts", "0"], {}, "--n-prompts = 0"),
    ("eval-policy", ["lm", "eval", "--policy", "{t}/none/policy"], {}, "--policy {t}/none/policy: no such model"),
    ("eval-reward", ["lm", "eval", "--policy", "{tiny}/policy", "--reward-model", "{t}/rm"], {"rm": "x"}, "--reward-model {t}/rm: is a file"),
    ("pretrain-steps", ["lm", "pretrain", "--out", "{out}", "--steps", "0"], {}, "--steps = 0"),
    ("datagen-steps", ["lm", "generate-data", "--out", "{out}", "--rl-steps", "-1"], {}, "--rl-steps = -1"),
    ("datagen-base", ["lm", "generate-data", "--out", "{out}", "--base-model", "{t}/b"], {"b": "x"}, "--base-model {t}/b: is a file"),
    ("quickstart-out", ["quickstart", "--out", "{t}/f"], {"f": "keep me"}, "--out {t}/f: is an existing file"),
    ("bench-workers", ["lm", "bench", "--out", "{out}", "--quick", "--workers", "0"], {}, "--workers '0'"),
    ("bench-shard", ["lm", "bench", "--out", "{out}", "--quick", "--shard", "3/2"], {}, "--shard '3/2'"),
    ("bench-override", ["lm", "bench", "--out", "{out}", "--quick", "--override", "beta"], {}, "--override 'beta'"),
    ("bench-override-value", ["lm", "bench", "--out", "{out}", "--quick", "--override", "aihf.beta=-1"], {}, "aihf config (with --override): field 'beta' = -1"),
    ("bench-override-key", ["lm", "bench", "--out", "{out}", "--quick", "--override", "dpo.bta=1"], {}, "unknown keys ['bta']"),
    ("bench-override-method", ["lm", "bench", "--out", "{out}", "--quick", "--override", "ppo.beta=1"], {}, "--override: unknown methods ['ppo']"),
    ("bench-methods", ["lm", "bench", "--out", "{out}", "--quick", "--methods", "nope"], {}, "--methods: unknown methods ['nope']"),
    ("bench-n-test", ["lm", "bench", "--out", "{out}", "--quick", "--n-test", "0"], {}, "--n-test = 0"),
    ("bench-kl", ["lm", "bench", "--out", "{out}", "--quick", "--kl-scales", "-1"], {}, "--kl-scales = [-1.0]"),
    ("bench-seeds", ["lm", "bench", "--out", "{out}", "--quick", "--seeds", "-1"], {}, "--seeds = [-1]"),
    ("bench-sizes", ["lm", "bench", "--out", "{out}", "--quick", "--pref-sizes", "0"], {}, "--pref-sizes = [0]"),
    ("bench-base", ["lm", "bench", "--out", "{out}", "--quick", "--base-model", "{t}/none/m"], {}, "--base-model {t}/none/m"),
]

# fmt: on

CASES = (
    [pytest.param(*c[1:], id=f"choice-{c[0]}") for c in CHOICE]
    + [pytest.param(*c[1:], id=f"control-{c[0]}") for c in CONTROL]
    + [pytest.param(*c[1:], id=f"lm-{c[0]}") for c in LM_CASES]
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aihf.lm.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


def _prepare(argv: list[str], files: dict[str, Any], tmp: Path, tiny: Path) -> tuple[list[str], Path]:
    fill = {"t": str(tmp), "out": str(tmp / "out"), "tiny": str(tiny)}
    for name, content in files.items():
        path = tmp / name
        if callable(content):
            content(path, tiny)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return [a.format(**fill) for a in argv], tmp / "out"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_table_is_large_enough():
    assert len(CASES) >= 100


@pytest.mark.parametrize(("argv", "files", "expected"), CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, files, expected, tiny, tmp_path, capfd):
    argv, out = _prepare(argv, files, tmp_path, tiny)
    expected = expected.format(t=tmp_path)
    before = _snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own usage errors
        code = exit_info.code
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("aihf"), captured.err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()
    assert _snapshot(tmp_path) == before  # inputs untouched, nothing new beside them


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_out_directory(tmp_path, capfd):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["choice", "example1", "--out", str(locked / "run")]) == 2
    finally:
        locked.chmod(0o700)
    assert "is not writable" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["choice", "solve", "--demo-counts", "5,-1"], "--demo-counts item 2"),
        (["control", "train", "--out", "{t}/out", "--reward-lr", "nan"], "--reward_lr = 'nan'"),
        (
            [
                "lm",
                "train",
                "--trainer",
                "dpo",
                "--model_name_or_path",
                "{tiny}/policy",
                "--prefs",
                "{t}/p.jsonl",
                "--output_dir",
                "{t}/o",
            ],
            "p.jsonl, line 2: not valid JSON",
        ),
    ],
    ids=["choice", "control", "lm"],
)
def test_a_real_process_prints_only_the_error_line(argv, expected, tiny, tmp_path):
    """In-process capture can miss handlers bound to the original stderr; a real process cannot."""
    (tmp_path / "p.jsonl").write_text(_jsonl(PAIR, "{"))
    argv = [a.format(t=tmp_path, tiny=tiny) for a in argv]
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "aihf", *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        ("gymnasium", ["control", "train", "--out", "o"], "aihf[control]"),
        ("transformers", ["lm", "tiny-model", "--out", "o"], "aihf[lm]"),
    ],
)
def test_a_missing_extra_is_named_not_hidden(blocked, argv, extra, tmp_path):
    """`aihf lm` without the lm extra says what to install instead of "invalid choice"."""
    code = f"import sys; sys.modules[{blocked!r}] = None; from aihf.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"needs the package '{blocked}'" in proc.stderr and f"pip install '{extra}'" in proc.stderr
    assert not (tmp_path / "o").exists()
