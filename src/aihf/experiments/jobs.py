"""The job model: a method, its settings and a seed, identified by what it computes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Portable = Callable[[Any], Any]  # a value as any machine writes it (e.g. machine paths made relative)


@dataclass(frozen=True)
class Job:
    """One run of a benchmark.

    `name` is the run's directory and record name (the domain builds it from method, settings and
    seed); `spec` is what the run computes (the resolved config, the evaluation settings): a saved
    record is this job's only when it holds the same values under the same keys. Jobs compare by
    method, settings and seed, so a sweep point equal to a main run is one job.
    """

    method: str
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()
    name: str = field(default="", compare=False)
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def get(self, key: str, default: Any = None) -> Any:
        """A setting's value (e.g. the data size or KL scale of a sweep point)."""
        return dict(self.settings).get(key, default)

    @property
    def key(self) -> str:
        """A digest of `spec`: equal for two jobs that would compute the same run."""
        return spec_key(self.spec)

    def matches(self, record: Mapping[str, Any], portable: Portable | None = None) -> bool:
        """True when `record` was written by a run of this job's spec; `portable` maps both sides to
        a form that does not depend on the machine (where a record from another one may be read)."""
        same = portable or (lambda value: value)
        return all(same(record.get(k)) == same(v) for k, v in self.spec.items())


def spec_key(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
