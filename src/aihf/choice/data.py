"""Discrete-choice data: demonstration counts, preference counts, an optional prior, and their parsing.

N actions, 0-indexed. ``demo_counts[i]`` = n_i, how often action i was demonstrated;
``pref_counts[i, j]`` = w_ij, how often i was preferred over j (the diagonal is zero).

Accepted inputs (every problem raises `aihf.errors.InputError` naming the field and what was expected):

Command-line strings
    ``--demo-counts 50,50`` (N non-negative integers) and
    ``--pref-counts "0>1:6,1>0:4"`` (``winner>loser:count``; ``:count`` may be left out for 1;
    repeated pairs add up); ``--prior 0.5,0.5`` (N probabilities summing to 1).

JSON file (``--data data.json``), an object with
    ``"demo_counts"``: list of N non-negative integers (required; it fixes N),
    ``"pref_counts"``: the N x N matrix ``w[i][j]`` (optional), and/or
    ``"preferences"``: a list of ``[winner, loser, count]`` triples (optional; added to the matrix),
    ``"prior"``: list of N probabilities (optional).

CSV file (``--data data.csv``), with the header ``kind,i,j,count`` and one row per record:
    ``demo,i,,count``  action i was demonstrated ``count`` times,
    ``pref,i,j,count`` action i was preferred over action j ``count`` times.
    N is one more than the largest index that appears; repeated rows add up.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aihf.errors import InputError


@dataclass(frozen=True)
class ChoiceData:
    """Validated counts for one discrete-choice problem (construct with `make_data`)."""

    demo_counts: np.ndarray  # (N,) int64, n_i
    pref_counts: np.ndarray  # (N, N) int64, w_ij = times i preferred over j
    prior: np.ndarray | None = None  # (N,) float64 pi_0, or None for uniform

    @property
    def n_actions(self) -> int:
        return len(self.demo_counts)

    @property
    def n_demos(self) -> int:
        return int(self.demo_counts.sum())

    @property
    def n_prefs(self) -> int:
        return int(self.pref_counts.sum())


# Counts enter float64 arithmetic, exact only below 2**53: larger data sets are not counts but typos.
MAX_COUNT = 10**12
MAX_TOTAL = 10**15
MAX_ACTIONS = 10_000  # the exact solvers hold N x N matrices


def _count(value: Any, where: str) -> int:
    """A count in [0, MAX_COUNT]; integral floats such as 6.0 are accepted, booleans are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating, str)):
        raise InputError(f"{where}: expected a non-negative integer count, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{where}: expected a non-negative integer count, got {text!r}") from None
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value) or not float(value).is_integer():
            raise InputError(f"{where}: expected a non-negative integer count, got {value!r}")
        value = int(value)
    if not 0 <= value <= MAX_COUNT:
        limit = f"{MAX_COUNT:.0e}"
        raise InputError(f"{where}: expected a non-negative integer count (at most {limit}), got {value}")
    return int(value)


def _index(value: Any, n_actions: int | None, where: str) -> int:
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
            raise InputError(f"{where}: expected an action index (integer), got {value!r}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{where}: expected an action index (integer), got {value!r}")
    if value < 0 or (n_actions is not None and value >= n_actions):
        limit = f"0..{n_actions - 1}" if n_actions is not None else ">= 0"
        raise InputError(f"{where}: action index {value} is out of range (expected {limit})")
    return int(value)


def make_data(
    demo_counts: Any,
    pref_counts: Any = None,
    prior: Any = None,
    source: str = "data",
) -> ChoiceData:
    """Validate counts (lists or arrays) into a `ChoiceData`; `source` prefixes every error message."""
    if demo_counts is None or len(demo_counts) == 0:
        raise InputError(f"{source}: demo_counts is empty (expected one count per action)")
    demos = np.array([_count(v, f"{source}: demo_counts[{i}]") for i, v in enumerate(demo_counts)], np.int64)
    n = len(demos)
    if n > MAX_ACTIONS:
        raise InputError(f"{source}: {n} actions, expected at most {MAX_ACTIONS}")
    prefs = np.zeros((n, n), np.int64)
    if pref_counts is not None:
        matrix = np.asarray(pref_counts, dtype=object)
        if matrix.ndim != 2 or matrix.shape != (n, n):
            raise InputError(
                f"{source}: pref_counts has shape {matrix.shape}, expected {n} x {n} to match the "
                f"{n} demo_counts"
            )
        for i in range(n):
            for j in range(n):
                prefs[i, j] = _count(matrix[i, j], f"{source}: pref_counts[{i}][{j}]")
        bad = np.flatnonzero(np.diag(prefs))
        if len(bad):
            raise InputError(f"{source}: pref_counts prefers action {bad[0]} over itself")
    if demos.sum() == 0:
        raise InputError(f"{source}: no demonstrations (all demo_counts are 0); SFT and RLHF need some")
    if demos.sum() + prefs.sum() > MAX_TOTAL:
        raise InputError(
            f"{source}: {demos.sum() + prefs.sum()} records in all, expected at most {MAX_TOTAL:.0e}"
        )
    return ChoiceData(demos, prefs, _prior(prior, demos, source))


def _prior(prior: Any, demos: np.ndarray, source: str) -> np.ndarray | None:
    if prior is None:
        return None
    try:
        values = np.array([float(v) for v in prior], np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: prior must be a list of {len(demos)} probabilities") from None
    if len(values) != len(demos):
        raise InputError(f"{source}: prior has {len(values)} entries, expected {len(demos)} (one per action)")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or abs(values.sum() - 1) > 1e-6:
        raise InputError(f"{source}: prior must be non-negative probabilities summing to 1")
    zero = np.flatnonzero((values == 0) & (demos > 0))
    if len(zero):
        raise InputError(f"{source}: prior gives probability 0 to demonstrated action {zero[0]}")
    return values / values.sum()


def parse_demo_counts(text: str) -> list[int]:
    """``"50,50"`` -> [50, 50]."""
    items = [t for t in text.split(",")] if text.strip() else []
    return [_count(t, f"--demo-counts item {k + 1}") for k, t in enumerate(items)]


def parse_pref_counts(text: str, n_actions: int) -> np.ndarray:
    """``"0>1:6,1>0:4"`` -> the N x N matrix w (w[0,1] = 6, w[1,0] = 4)."""
    prefs = np.zeros((n_actions, n_actions), np.int64)
    for k, token in enumerate(t.strip() for t in text.split(",")):
        where = f"--pref-counts item {k + 1} ({token!r})"
        pair, _, count = token.partition(":")
        winner, sep, loser = pair.partition(">")
        if not sep:
            raise InputError(f"{where}: expected 'winner>loser:count', e.g. '0>1:6'")
        i, j = _index(winner, n_actions, where), _index(loser, n_actions, where)
        if i == j:
            raise InputError(f"{where}: an action cannot be preferred over itself")
        prefs[i, j] = _count(prefs[i, j] + (_count(count, where) if count.strip() else 1), where)
    return prefs


def parse_prior(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise InputError(f"--prior: expected comma-separated probabilities, got {text!r}") from None


def load_data(path: str | Path) -> ChoiceData:
    """Read a JSON or CSV data file (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return _load_json(path)
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    raise InputError(f"{path}: unknown data format (expected a .json or .csv file)")


def _load_json(path: Path) -> ChoiceData:
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(obj, dict) or "demo_counts" not in obj:
        raise InputError(f"{path}: expected a JSON object with a 'demo_counts' list")
    unknown = set(obj) - {"demo_counts", "pref_counts", "preferences", "prior"}
    if unknown:
        raise InputError(
            f"{path}: unknown field(s) {sorted(unknown)} "
            "(expected demo_counts, pref_counts, preferences, prior)"
        )
    demos = obj["demo_counts"]
    if not isinstance(demos, list):
        raise InputError(f"{path}: field 'demo_counts' must be a list of counts")
    data = make_data(demos, obj.get("pref_counts"), obj.get("prior"), source=str(path))
    triples = obj.get("preferences")
    if triples is None:
        return data
    if not isinstance(triples, list):
        raise InputError(f"{path}: field 'preferences' must be a list of [winner, loser, count] triples")
    prefs = data.pref_counts + _triples(triples, data.n_actions, str(path))
    return ChoiceData(data.demo_counts, prefs, data.prior)


def _triples(rows: list, n_actions: int, source: str) -> np.ndarray:
    prefs = np.zeros((n_actions, n_actions), np.int64)
    for k, row in enumerate(rows):
        where = f"{source}: preferences[{k}]"
        if not isinstance(row, list) or len(row) != 3:
            raise InputError(f"{where}: expected [winner, loser, count], got {row!r}")
        winner, loser, count = row
        i, j = _index(winner, n_actions, where), _index(loser, n_actions, where)
        if i == j:
            raise InputError(f"{where}: action {i} is preferred over itself")
        prefs[i, j] = _count(prefs[i, j] + _count(count, where), where)
    return prefs


def _load_csv(path: Path) -> ChoiceData:
    """Messages name the file's own 1-based line numbers (blank lines and quoted line breaks counted)."""
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    except csv.Error as err:
        raise InputError(f"{path}: not a valid CSV file ({err})") from None
    if not rows or [c.strip().lower() for c in rows[0][1]] != ["kind", "i", "j", "count"]:
        raise InputError(f"{path}: expected the header 'kind,i,j,count'")
    records = []
    for line, row in rows[1:]:
        where = f"{path}, line {line}"
        if len(row) != 4:
            raise InputError(f"{where}: expected 4 fields (kind,i,j,count), got {len(row)}")
        kind = row[0].strip().lower()
        if kind == "demo":
            records.append((kind, _index(row[1], None, f"{where}, field 'i'"), None, row[3], where))
        elif kind == "pref":
            i = _index(row[1], None, f"{where}, field 'i'")
            j = _index(row[2], None, f"{where}, field 'j'")
            if i == j:
                raise InputError(f"{where}: action {i} is preferred over itself")
            records.append((kind, i, j, row[3], where))
        else:
            raise InputError(f"{where}, field 'kind': expected 'demo' or 'pref', got {row[0]!r}")
    if not records:
        raise InputError(f"{path}: no data rows")
    n = 1 + max(max(i, j if j is not None else 0) for _, i, j, _, _ in records)
    if n > MAX_ACTIONS:
        raise InputError(f"{path}: action index {n - 1} means {n} actions, expected at most {MAX_ACTIONS}")
    demos, prefs = np.zeros(n, np.int64), np.zeros((n, n), np.int64)
    for kind, i, j, count, where in records:
        value = _count(count, f"{where}, field 'count'")
        if kind == "demo":
            demos[i] = _count(demos[i] + value, f"{where}, field 'count' (total for action {i})")
        else:
            prefs[i, j] = _count(prefs[i, j] + value, f"{where}, field 'count' (total for {i}>{j})")
    return make_data(demos, prefs, source=str(path))
