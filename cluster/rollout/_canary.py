"""``Canary``: move a ``share`` of the slots (so of the traffic) for ``duration_ns``, watch
the gate (error rate, p99, quality signal), roll back automatically on a breach, else
move the rest.

>>> from cluster.rollout._state import Observed, Slot
>>> slots = tuple(Slot(str(i), f"n{i}", "v1") for i in range(4))
>>> Canary(now=lambda: 0, share=0.25).plan(Observed("v1", "v2", slots))
[Start(slots=('0',), version='v2'), Switch(slots=('0',), version='v2', retire=False)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.rollout._actions import Action, Finish, Start, Stop, Switch, Wait
from cluster.rollout._gate import Gate, Promote, Rollback
from cluster.rollout._state import Observed


@dataclass(frozen=True, kw_only=True)
class Canary:
    now: Callable[[], int]
    share: float = 0.1
    duration_ns: int = 60_000_000_000
    gate: Gate = field(default_factory=Gate)

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {self.share}")

    def plan(self, seen: Observed) -> list[Action]:
        canaries = seen.on(seen.candidate)
        if not canaries:
            n = max(1, math.floor(self.share * len(seen.slots)))
            chosen = tuple(s.slot for s in sorted(seen.slots, key=lambda s: (s.node, s.slot))[:n])
            return [Start(chosen, seen.candidate), Switch(chosen, seen.candidate, retire=False)]
        moved = tuple(s.slot for s in canaries)
        verdict = self.gate.verdict(seen.of(seen.candidate), seen.of(seen.baseline))
        if isinstance(verdict, Rollback):
            return [
                Switch(moved, seen.baseline, retire=False),
                Stop(moved, seen.candidate),
                Finish("rolled-back", verdict.reason),
            ]
        if self.now() < max(s.since_ns for s in canaries) + self.duration_ns:
            return [Wait("canary running")]
        if not isinstance(verdict, Promote):
            return [Wait(f"canary ran its duration but {verdict.reason}")]
        rest = tuple(s.slot for s in seen.on(seen.baseline))
        actions: list[Action] = [Stop(moved, seen.baseline)]
        if rest:
            actions += [Start(rest, seen.candidate), Switch(rest, seen.candidate)]
        return [*actions, Finish("completed", "canary passed its gate")]
