"""``ABTest``: split by key, so each stream stays on one variant, for ``duration_ns``; both
variants' metrics are recorded side by side and the split stays in place.

Needs a keyed operator (``key_by``: each key always goes to the same slot), so
moving a ``share`` of the slots moves whole streams. Ends ``measured``; promote
the winner with a rolling or blue-green rollout.

>>> from cluster.rollout._state import Observed, Slot
>>> slots = tuple(Slot(str(i), f"n{i}", "A") for i in range(2))
>>> ABTest(now=lambda: 0).plan(Observed("A", "B", slots, keyed=True))
[Start(slots=('1',), version='B'), Switch(slots=('1',), version='B', retire=True)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from cluster._errors import RolloutRefused
from cluster.rollout._actions import Action, Finish, Start, Switch, Wait
from cluster.rollout._state import Observed


@dataclass(frozen=True, kw_only=True)
class ABTest:
    now: Callable[[], int]
    share: float = 0.5
    duration_ns: int = 60_000_000_000

    def plan(self, seen: Observed) -> list[Action]:
        if not seen.keyed:
            raise RolloutRefused(
                "an A/B test splits streams by key, but this operator is not keyed; declare it "
                "with key_by='source' (or a payload field) in the pipeline"
            )
        if len(seen.slots) < 2:
            raise RolloutRefused("an A/B test needs at least 2 replicas, one per variant")
        variant_b = seen.on(seen.candidate)
        if not variant_b:
            n = min(len(seen.slots) - 1, max(1, math.floor(self.share * len(seen.slots))))
            ordered = sorted(seen.slots, key=lambda s: (s.node, s.slot))
            chosen = tuple(s.slot for s in ordered[len(ordered) - n :])
            return [Start(chosen, seen.candidate), Switch(chosen, seen.candidate)]
        if self.now() < max(s.since_ns for s in variant_b) + self.duration_ns:
            return [Wait("A/B test running")]
        a, b = seen.of(seen.baseline), seen.of(seen.candidate)
        return [
            Finish(
                "measured",
                f"{seen.baseline}: {a.frames} frames, error rate {a.error_rate:.3f}, "
                f"p99 {a.p99_ms} ms, quality {a.quality}; {seen.candidate}: {b.frames} frames, "
                f"error rate {b.error_rate:.3f}, p99 {b.p99_ms} ms, quality {b.quality}",
            )
        ]
