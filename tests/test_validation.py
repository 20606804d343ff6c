"""The shared config validator: types from the hints, ranges per field, and a range for every number."""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest

from aihf.control.collect import COLLECT_RANGES, CollectConfig
from aihf.control.config import RANGES as CONTROL_RANGES
from aihf.control.config import AIHFControlConfig
from aihf.errors import InputError
from aihf.lm.config import RANGES as LM_RANGES
from aihf.lm.methods import METHODS
from aihf.validation import AT_LEAST_1, POSITIVE, Range, load_yaml, validate_config

RANGES = {"n": AT_LEAST_1, "rate": POSITIVE, "sizes": AT_LEAST_1, "limit": Range(0, 1, high_open=True)}


@dataclass
class Example:
    n: int = 1
    rate: float = 0.1
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    limit: float | None = None
    sizes: tuple[int, ...] = (1, 2)
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        validate_config(self, RANGES)


def test_good_values_are_normalised():
    ex = Example(n=3, rate=1, limit=0.5, sizes=[4], names=["x"])
    assert isinstance(ex.rate, float) and ex.sizes == (4,) and ex.limit == 0.5
    assert Example(rate="1e-5").rate == 1e-5  # PyYAML reads 1e-5 (no dot) as text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n": 0}, "field 'n' = 0: expected an integer >= 1"),
        ({"n": True}, "field 'n' = True: expected an integer"),
        ({"n": 2.0}, "field 'n' = 2.0: expected an integer"),
        ({"n": "two"}, "field 'n' = 'two'"),
        ({"rate": math.nan}, "field 'rate' = nan: expected a number > 0"),
        ({"rate": math.inf}, "field 'rate' = inf"),
        ({"rate": "fast"}, "field 'rate' = 'fast'"),
        ({"flag": "yes"}, "expected true or false"),
        ({"mode": "c"}, "expected one of 'a', 'b'"),
        ({"limit": 1.0}, "expected a number in [0, 1) or null"),
        ({"sizes": [1, 0]}, "expected a list of integers >= 1"),
        ({"names": "x"}, "expected a list of strings"),
    ],
)
def test_bad_values_name_field_value_and_range(values, message):
    with pytest.raises(InputError) as err:
        Example(**values)
    assert message in str(err.value)


def _is_number(hint) -> bool:
    """int or float, alone, optional, or as list items (bool is an int to Python, not here)."""
    if hint in (int, float):
        return True
    return any(_is_number(a) for a in typing.get_args(hint) if a is not type(None))


CONFIG_CLASSES = [(c, LM_RANGES) for c in dict.fromkeys(m.config for m in METHODS.values())]
CONFIG_CLASSES += [(AIHFControlConfig, CONTROL_RANGES), (CollectConfig, COLLECT_RANGES)]


@pytest.mark.parametrize(("cls", "ranges"), CONFIG_CLASSES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_numeric_field_declares_its_range(cls, ranges):
    """A new numeric field needs a line in its RANGES mapping, or bad values would pass unchecked."""
    hints = typing.get_type_hints(cls)
    missing = [f.name for f in dataclasses.fields(cls) if _is_number(hints[f.name]) and f.name not in ranges]
    assert not missing, f"{cls.__name__}: add ranges for {missing}"
    cls()  # the defaults are valid


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [1,\nc: 2\n")
    with pytest.raises(InputError, match=r"c\.yaml, line \d: not valid YAML"):
        load_yaml(path)
    path.write_text("- 1\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_yaml(path)
    with pytest.raises(InputError, match="config file not found"):
        load_yaml(tmp_path / "none.yaml")
