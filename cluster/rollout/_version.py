"""``ReplicaVersion``: what a replica runs = operator code version + model version + config.

The label is what dashboards, metrics and every output message's ``meta.version``
show, e.g. ``1+detector@3+c5e0d1a2``: the code version the operator class
declares, the model reference it resolves (when it has one), and a short hash
of its scalar parameters (its configuration).

>>> class Op:
...     version = "2"
...     def __init__(self, model, threshold):
...         self.model, self.threshold, self._session = model, threshold, object()
>>> v = ReplicaVersion.of(Op("detector@3", 0.3))
>>> (v.code, v.model), v.label == ReplicaVersion.of(Op("detector@3", 0.3)).label
(('2', 'detector@3'), True)
>>> v.config != ReplicaVersion.of(Op("detector@3", 0.5)).config
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

#: Parameter values that make up a configuration (others, e.g. arrays or sessions, do not).
_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class ReplicaVersion:
    code: str
    model: str | None
    config: str

    @classmethod
    def of(cls, operator: Any) -> ReplicaVersion:
        """The version of an operator instance (read, never changed)."""
        model = getattr(operator, "model", None)
        params = {
            k: v
            for k, v in sorted(vars(operator).items())
            if not k.startswith("_") and k != "model" and _plain(v)
        }
        config = hashlib.sha256(repr(params).encode()).hexdigest()[:8]
        return cls(str(getattr(operator, "version", "1")), _model(model), config)

    @property
    def label(self) -> str:
        parts = [self.code, *([self.model] if self.model else []), f"c{self.config}"]
        return "+".join(parts)


def _model(value: Any) -> str | None:
    return None if value is None else str(value)


def _plain(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    return False
