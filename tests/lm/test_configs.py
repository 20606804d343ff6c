"""The shipped YAML configs load into their trainer's config dataclass (no unknown or mistyped keys)."""

import dataclasses
from pathlib import Path

import pytest

from aihf.lm.config import load_yaml
from aihf.lm.methods import METHODS, build_config

ROOT = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((ROOT / "lm").glob("*.yaml")), ids=lambda p: p.name)
def test_paper_configs_build(path):
    values = load_yaml(path)
    config = build_config(values["trainer"], values, str(path))
    assert isinstance(config, METHODS[values["trainer"]].config)
    for key in set(values) & {f.name for f in dataclasses.fields(config)}:
        assert getattr(config, key) == values[key]
    assert values.get("model_name_or_path")


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    values = load_yaml(path)
    assert values["distributed_type"] in {"MULTI_GPU", "DEEPSPEED", "FSDP"}
