"""Run state without pickle, for every domain's checkpoints: nested Python data (dicts, lists, tuples,
numbers, strings, None) as JSON beside an npz of its arrays (numpy, torch, JAX; dtypes kept, numpy
scalars stay numpy scalars), so resume is exact. Every npz is read with `allow_pickle=False`: loading
a checkpoint's own state runs no code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aihf.errors import InputError
from aihf.io import write_json


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """`value` as JSON, its arrays (numpy, torch, JAX) moved to `arrays` under numbered keys."""
    if isinstance(value, torch.Tensor):
        arrays[key := str(len(arrays))] = value.detach().cpu().numpy()
        return {"__tensor__": key}
    if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("jax"):
        arrays[key := str(len(arrays))] = np.asarray(value)
        return {"__array__": key, "scalar": isinstance(value, np.generic)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(v, arrays) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _encode(v, arrays) for k, v in value.items()}}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    raise TypeError(f"not checkpoint data: {type(value).__name__}")


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return torch.from_numpy(arrays[value["__tensor__"]].copy())
    if "__array__" in value:
        array = arrays[value["__array__"]]
        return array[()] if value["scalar"] else array
    if "__tuple__" in value:
        return tuple(_decode(v, arrays) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
    return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}


def write_state(directory: Path, name: str, value: Any) -> None:
    """`name.json` and `name.npz`: `value` without pickle."""
    arrays: dict[str, np.ndarray] = {}
    write_json(directory / f"{name}.json", _encode(value, arrays))
    with open(directory / f"{name}.npz", "wb") as fh:
        np.savez(fh, **arrays)


def read_state(directory: Path, name: str) -> Any:
    """What `write_state` wrote; a damaged or foreign file is one InputError line naming it."""
    arrays = load_npz(directory / f"{name}.npz")
    path = directory / f"{name}.json"
    try:
        return _decode(json.loads(path.read_text()), arrays)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise InputError(f"{path}: not a checkpoint state file ({err})") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:  # ValueError: object arrays, which would need unpickling
        raise InputError(f"{path}: not a checkpoint array file ({err})") from None
