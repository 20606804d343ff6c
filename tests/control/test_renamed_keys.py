"""Keys renamed to SB3 / RL Zoo's names (control) are still read under their old names: from YAML, flags
and saved runs. The old names here are on purpose: the rename script leaves this file alone."""

import json

import pytest

import aihf.flags
from aihf.cli import build_parser
from aihf.control.bench import canonical_result, run_status
from aihf.control.cli import _config_from_args
from aihf.control.config import AIHFControlConfig, load_config
from aihf.errors import InputError


def _train_config(argv: list[str]):
    return _config_from_args(build_parser().parse_args(["control", "train", "--out", "o", *argv]))


def test_old_names_policy_kwargs_flags_and_old_results(tmp_path, capsys, monkeypatch):
    """SB3 / RL Zoo names replaced ours (total_steps, sac_lr, sac_batch_size, sac_hidden): old YAML keys and
    flags still work with one deprecation line; policy_kwargs is data (YAML / JSON or RL Zoo's
    dict(...) of literals), never evaluated; a results.json in the old names is still this config's run."""
    monkeypatch.setattr(aihf.flags, "_warned", set())
    path = tmp_path / "old.yaml"
    path.write_text("total_steps: 300\nsac_lr: 0.001\nsac_batch_size: 32\nsac_hidden: [32, 16]\n")
    cfg = load_config(path, {})
    assert (cfg.n_timesteps, cfg.learning_rate, cfg.batch_size) == (300, 1e-3, 32)
    assert cfg.policy_kwargs == {"net_arch": [32, 16]}
    assert "old.yaml: sac_hidden is deprecated, use policy_kwargs" in capsys.readouterr().err
    assert _train_config(["--total-steps", "400"]).n_timesteps == 400
    assert "arguments: --total_steps is deprecated, use --n_timesteps" in capsys.readouterr().err
    flag = _train_config(["--policy_kwargs", "dict(net_arch=[256, 256], n_critics=3)"]).policy_kwargs
    assert flag == {"net_arch": [256, 256], "n_critics": 3}
    assert _train_config(["--policy-kwargs", "{net_arch: {pi: [8], qf: [16, 16]}}"]).policy_kwargs == {
        "net_arch": {"pi": [8], "qf": [16, 16]}
    }
    with pytest.raises(SystemExit):  # a call is not a literal: refused, not run
        _train_config(["--policy_kwargs", "dict(net_arch=__import__('os').getcwd())"])
    with pytest.raises(InputError, match="field 'policy_kwargs': unknown key"):
        _train_config(["--policy_kwargs", "{activation_fn: nn.Tanh}"])
    with pytest.raises(InputError, match="--total_steps and --n_timesteps are one setting"):
        _train_config(["--total_steps", "1", "--n_timesteps", "2"])
    run = tmp_path / "run"
    run.mkdir()
    saved = cfg.to_dict()
    saved = {("total_steps" if k == "n_timesteps" else k): v for k, v in saved.items()}
    saved["sac_hidden"] = saved.pop("policy_kwargs")["net_arch"]
    (run / "results.json").write_text(json.dumps({"config": saved}))
    assert canonical_result({"config": saved})["config"] == cfg.to_dict()
    assert run_status(run, cfg) == "finished"
    for added in ("train_freq", "gradient_steps"):  # fields a run saved before they existed lacks
        del saved[added]
    (run / "results.json").write_text(json.dumps({"config": saved}))
    assert run_status(run, cfg) == "finished"
    assert run_status(run, AIHFControlConfig.from_dict(cfg.to_dict() | {"gradient_steps": 2})) == "new"
