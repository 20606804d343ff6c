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
    assert values["distributed_type"] in {"MULTI_GPU", "DEEPSPEED"}


def test_a_config_in_the_old_key_names_builds_the_same_config(tmp_path, capsys):
    """Configs written before TRL's names (batch_size, num_samples, max_new_tokens, cpu, model) still load."""
    path = ROOT / "lm" / "imdb_gpt2_aihf.yaml"
    text = path.read_text()
    old = text.replace("per_device_train_batch_size:", "batch_size:").replace(
        "num_generations:", "num_samples:"
    )
    old = old.replace("max_completion_length:", "max_new_tokens:").replace("model_name_or_path:", "model:")
    assert old != text
    (tmp_path / "old.yaml").write_text(old)
    values, old_values = load_yaml(path), load_yaml(tmp_path / "old.yaml")
    new = build_config(values["trainer"], values, str(path))
    assert build_config(values["trainer"], old_values, str(tmp_path / "old.yaml")) == new
    assert "num_samples is deprecated, use num_generations" in capsys.readouterr().err
