"""``FixedTime``: leave the junction to SUMO's own fixed-time program (the passthrough)."""

from __future__ import annotations

from dataclasses import dataclass

from operators.city.policies._view import FIXED, JunctionView


@dataclass(frozen=True)
class FixedTime:
    """Always ``FIXED``: the controller only sends heartbeats, SUMO's program runs.

    >>> FixedTime().decide(None, {})
    -1
    """

    def decide(self, view: JunctionView | None, memory: dict) -> int:
        return FIXED
