"""``Rolling``: move ``batch`` slots at a time, verify each batch before the next.

Slots move in node order, so one node's replicas move together (a fleet-wide
update goes node by node). Each new replica retires the one it replaces; a
batch that breaches the gate rolls every moved slot back. A batch is verified
when ``interval_ns`` has passed since it switched and its own replicas have
processed the gate's ``min_frames`` (the candidate's earlier batches do not
count for it), so the next batch starts only once this one serves; a slot that
gets no traffic holds the rollout until ``min_frames=0``.

>>> from cluster.rollout._state import Observed, Slot
>>> clock = lambda: 0
>>> seen = Observed("v1", "v2", (Slot("0", "n1", "v1"), Slot("1", "n2", "v1")))
>>> Rolling(batch=1, now=clock).plan(seen)
[Start(slots=('0',), version='v2'), Switch(slots=('0',), version='v2', retire=True)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.rollout._actions import Action, Finish, Start, Switch, Wait
from cluster.rollout._gate import Gate, Promote, Rollback
from cluster.rollout._state import Observed


@dataclass(frozen=True, kw_only=True)
class Rolling:
    now: Callable[[], int]
    batch: int = 1
    interval_ns: int = 0
    gate: Gate = field(default_factory=lambda: Gate(min_frames=0))

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    def plan(self, seen: Observed) -> list[Action]:
        moved, left = seen.on(seen.candidate), seen.on(seen.baseline)
        if moved:
            verdict = self.gate.verdict(seen.of(seen.candidate), seen.of(seen.baseline))
            if isinstance(verdict, Rollback):
                back = tuple(s.slot for s in moved)
                return [
                    Start(back, seen.baseline),
                    Switch(back, seen.baseline),
                    Finish("rolled-back", verdict.reason),
                ]
            latest = max(s.since_ns for s in moved)
            if self.now() < latest + self.interval_ns:
                return [Wait("verifying the last batch")]
            if not isinstance(verdict, Promote):
                return [Wait(f"verifying the last batch: {verdict.reason}")]
            frames = sum(s.frames for s in moved if s.since_ns == latest)
            if frames < self.gate.min_frames:
                return [Wait(f"verifying the last batch: {frames} of its "
                             f"{self.gate.min_frames} frames seen")]  # fmt: skip
        if not left:
            return [Finish("completed", f"{len(moved)} replicas on {seen.candidate}")]
        batch = tuple(s.slot for s in sorted(left, key=lambda s: (s.node, s.slot))[: self.batch])
        return [Start(batch, seen.candidate), Switch(batch, seen.candidate)]
