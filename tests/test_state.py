"""aihf.state: run state without pickle round-trips exactly; damage is one line."""

import random
import re

import numpy as np
import pytest
import torch

from aihf.errors import InputError
from aihf.state import read_state, write_state


def test_state_round_trips_without_pickle(tmp_path):
    rng = np.random.default_rng(3)
    state = {
        "step": 12,
        "config": {"beta": 0.1, "name": "aihf", "hidden": (64, 64), "none": None, "nan": float("nan")},
        "python_rng": random.Random(1).getstate(),
        "numpy_rng": rng.bit_generator.state,
        "legacy_numpy_rng": np.random.RandomState(2).get_state(),
        "torch_rng": torch.Generator().manual_seed(5).get_state(),
        "buffer": {
            "obs": np.arange(12, dtype=np.float32).reshape(4, 3),
            "done": np.array([True, False, True, False]),
            "index": np.array([1, 2], dtype=np.int64),
            "keys": np.array([7, 8], dtype=np.uint32),
        },
        "by_step": {0: "a", 5: "b"},
        "__weird__": [1, {"__tensor__": "not a reference"}],
        "scalar": np.float32(1.5),
    }
    write_state(tmp_path, "state", state)
    loaded = read_state(tmp_path, "state")
    assert (
        loaded["step"] == 12 and loaded["config"]["hidden"] == (64, 64) and loaded["config"]["none"] is None
    )
    assert loaded["config"]["nan"] != loaded["config"]["nan"]
    assert loaded["python_rng"] == state["python_rng"]
    assert loaded["numpy_rng"] == state["numpy_rng"]
    legacy = loaded["legacy_numpy_rng"]
    assert legacy[0] == "MT19937" and np.array_equal(legacy[1], state["legacy_numpy_rng"][1])
    restored = np.random.RandomState()
    restored.set_state(legacy)
    assert restored.randint(1 << 30) == np.random.RandomState(2).randint(1 << 30)
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    for key, array in state["buffer"].items():
        assert loaded["buffer"][key].dtype == array.dtype and np.array_equal(loaded["buffer"][key], array)
    assert loaded["by_step"] == {0: "a", 5: "b"}
    assert loaded["__weird__"] == [1, {"__tensor__": "not a reference"}]
    assert loaded["scalar"] == 1.5 and loaded["scalar"].dtype == np.float32
    assert b"pickle" not in (tmp_path / "state.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.npz"]


def test_state_that_is_not_data_is_a_bug(tmp_path):
    with pytest.raises(TypeError, match="not checkpoint data: object"):
        write_state(tmp_path, "state", {"x": object()})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a checkpoint state file"),
        ('{"__dict__": {"x": {"__tensor__": "9"}}}', "not a checkpoint state file ('9')"),
        ('{"__items__": 3}', "not a checkpoint state file"),
    ],
)
def test_a_damaged_state_file_is_one_line(tmp_path, text, message):
    write_state(tmp_path, "state", {"x": 1})
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        read_state(tmp_path, "state")
    assert "\n" not in str(info.value)


def test_an_object_array_is_refused_unread(tmp_path):
    write_state(tmp_path, "state", {"x": 1})
    np.savez(tmp_path / "state.npz", a=np.array([object()], dtype=object))
    with pytest.raises(InputError, match="not a checkpoint array file"):
        read_state(tmp_path, "state")
