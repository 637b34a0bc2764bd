"""What a planner observes: the slots of one operator and the metrics of each version.

A *slot* is one replica position of the operator (``"0"``, ``"1"``, or a key of
keyed replicas) pinned to one node. At any moment exactly one version is
*active* in a slot (the upstream routers send the slot's traffic to it); other
versions may be *warm* there (started, model loaded, warmed, no traffic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Slot:
    slot: str
    node: str
    active: str
    warm: frozenset[str] = frozenset()
    #: Clock time (ns) at which ``active`` last changed (the rollout's start if never).
    since_ns: int = 0
    #: Frames the active replica processed since the rollout began (a replica the rollout
    #: started: since it took the slot over).
    frames: int = 0


@dataclass(frozen=True)
class VersionMetrics:
    """Figures of one version's replicas since they started (or since the rollout began)."""

    frames: int = 0
    errors: int = 0
    p99_ms: float | None = None
    quality: float | None = None

    @property
    def error_rate(self) -> float:
        total = self.frames + self.errors
        return self.errors / total if total else 0.0


@dataclass(frozen=True)
class Observed:
    """One look at a rollout: ``baseline`` is the version it moves away from, ``candidate``
    the one it moves to; ``keyed`` when the operator routes by key (each stream to one slot)."""

    baseline: str
    candidate: str
    slots: tuple[Slot, ...]
    metrics: Mapping[str, VersionMetrics] = field(default_factory=dict)
    started_ns: int = 0
    keyed: bool = False

    def on(self, version: str) -> tuple[Slot, ...]:
        """Slots where ``version`` is active."""
        return tuple(s for s in self.slots if s.active == version)

    def warm(self, version: str) -> tuple[Slot, ...]:
        """Slots where ``version`` runs (active or warm)."""
        return tuple(s for s in self.slots if s.active == version or version in s.warm)

    def of(self, version: str) -> VersionMetrics:
        return self.metrics.get(version, VersionMetrics())
