"""``BlueGreen``: start the whole new set warm, switch all traffic at once, keep the old
set warm for ``window_ns`` and switch back if the gate is breached in that window.

The new set is one ``Start`` of every slot: the executor starts all its replicas at
once (each process booting below the stream on its node, see ``pipelines._rollout``),
so the set is ready in about the time of one replica, not of one per node.

>>> from cluster.rollout._state import Observed, Slot
>>> seen = Observed("v1", "v2", (Slot("0", "n1", "v1"), Slot("1", "n2", "v1")))
>>> BlueGreen(now=lambda: 0).plan(seen)
[Start(slots=('0', '1'), version='v2')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.rollout._actions import Action, Finish, Start, Stop, Switch, Wait
from cluster.rollout._gate import Gate, Rollback
from cluster.rollout._state import Observed


@dataclass(frozen=True, kw_only=True)
class BlueGreen:
    now: Callable[[], int]
    window_ns: int = 0
    gate: Gate = field(default_factory=lambda: Gate(min_frames=0))

    def plan(self, seen: Observed) -> list[Action]:
        every = tuple(s.slot for s in seen.slots)
        if not seen.on(seen.candidate):
            cold = tuple(s.slot for s in seen.slots if s not in seen.warm(seen.candidate))
            if cold:
                return [Start(cold, seen.candidate)]
            return [Switch(every, seen.candidate, retire=False)]
        verdict = self.gate.verdict(seen.of(seen.candidate), seen.of(seen.baseline))
        if isinstance(verdict, Rollback):
            return [
                Switch(every, seen.baseline, retire=False),
                Stop(every, seen.candidate),
                Finish("rolled-back", verdict.reason),
            ]
        if self.now() < max(s.since_ns for s in seen.slots) + self.window_ns:
            return [Wait("rollback window open, old set warm")]
        return [Stop(every, seen.baseline), Finish("completed", "rollback window closed")]
