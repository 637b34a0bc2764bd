"""What a policy sees of one junction at one instant (built by the controller)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: ``decide`` returns this to leave the junction to SUMO's fixed-time program.
FIXED = -1


@dataclass(frozen=True)
class JunctionView:
    """One junction now: per approach lane arrays, the layout and the current phase.

    ``vehicles`` / ``halting``: on each approach lane's detector; ``downstream``: vehicles
    on the lanes each approach feeds; ``arrival_vps``: estimated arrivals per second;
    ``sat_vps``: estimated saturation flow per second; ``serves[g, i]``: green phase
    ``g`` serves lane ``i``; ``phase``: current green index (-1 during a change);
    ``phase_s``: seconds in it; ``plan``: the hub's ``(cycle_s, offset_s)`` or ``None``.
    """

    t_s: float
    vehicles: np.ndarray
    halting: np.ndarray
    downstream: np.ndarray
    arrival_vps: np.ndarray
    sat_vps: np.ndarray
    serves: np.ndarray
    phase: int
    phase_s: float
    plan: tuple[float, float] | None = None


def view_of(
    p: Mapping[str, Any],
    *,
    blocked: Collection[int] = (),
    plan: tuple[float, float] | None = None,
) -> JunctionView:
    """The view of a ``QueueFlowEstimator`` estimate ``p``; ``blocked`` lanes show no demand."""
    vehicles = np.array(p["vehicles"], float)
    halting = np.array(p["halting"], float)
    arrival = np.array(p["arrival_vps"], float)
    lanes = sorted(blocked)
    vehicles[lanes] = halting[lanes] = arrival[lanes] = 0.0
    return JunctionView(
        t_s=float(p["t_s"]),
        vehicles=vehicles,
        halting=halting,
        downstream=np.asarray(p["downstream"], float),
        arrival_vps=arrival,
        sat_vps=np.asarray(p["sat_vps"], float),
        serves=np.asarray(p["serves"], bool),
        phase=int(p["phase"]),
        phase_s=float(p["phase_s"]),
        plan=plan,
    )
