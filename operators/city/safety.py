"""``PublicSafety``: incidents seen in the traffic data, and the clearance plan they trigger."""

from __future__ import annotations

from typing import Any

import numpy as np

from operators._message import Message
from operators._operator import Operator, Outputs, Resources
from operators._qos import QoS


class PublicSafety(Operator):
    """Detects a lane blocked by a stopped vehicle and switches its junction to clearance.

    A lane is *stalled* while it has green, at least ``min_halting`` vehicles halting on
    its detector, nobody crossing its stop line, and room on the lanes it feeds (so a
    queue spilling back from downstream is not mistaken for an incident). Stalled for
    ``stall_s`` simulated seconds of green is an incident.

    Inputs:
      ``state``: a ``QueueFlowEstimator`` estimate of one intersection.
    Outputs:
      ``alerts``: ``incident`` (``critical``) with the lane, and ``incident_cleared``
      (``info``) once vehicles cross that stop line again.
      ``clearance``: ``{"intersection", "unit", "lane", "active"}`` for the junction's
      ``TrafficSignalController`` (the clearance plan: stop spending green on the lane).
    Parameters (keyword-only): ``stall_s``, ``min_halting``, ``downstream_full``.

    >>> ps = PublicSafety(stall_s=3.0)
    >>> def s(t, passed): return Message("city", t, t * 10**9, {"intersection": "B1",
    ...     "unit": "rsu-1", "t_s": float(t), "halting": np.array([4, 0]),
    ...     "passed": np.array([passed, 0]), "downstream": np.zeros(2), "phase": 0,
    ...     "serves": np.array([[True, False]])})
    >>> out = [m for t in range(6) for _, m in ps.process("state", s(t, 0))]
    >>> [m.payload.get("kind", m.payload.get("active")) for m in out]
    ['incident', True]
    """

    inputs = ("state",)
    outputs = ("alerts", "clearance")
    resources = Resources(num_cpus=0.05)

    def __init__(
        self, *, stall_s: float = 60.0, min_halting: int = 3, downstream_full: float = 15.0
    ) -> None:
        self.stall_s = stall_s
        self.min_halting = min_halting
        self.downstream_full = downstream_full
        self._memory: dict[str, dict[str, Any]] = {}

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        junction, t_s = str(p["intersection"]), float(p["t_s"])
        halting = np.asarray(p["halting"])
        passed = np.asarray(p["passed"])
        m = self._memory.setdefault(
            junction, {"t": t_s, "stall": [0.0] * len(halting), "active": []}
        )
        dt, m["t"] = t_s - m["t"], t_s
        phase = int(p["phase"])
        green = np.asarray(p["serves"], bool)[phase] if phase >= 0 else np.zeros(len(halting), bool)
        room = np.asarray(p["downstream"], float) < self.downstream_full
        for lane in range(len(halting)):
            if passed[lane] > 0:
                m["stall"][lane] = 0.0
                if lane in m["active"]:
                    m["active"].remove(lane)
                    yield from self._emit(message, p, lane, False, "incident_cleared", "info")
            elif green[lane] and halting[lane] >= self.min_halting and room[lane]:
                m["stall"][lane] += dt
                if m["stall"][lane] >= self.stall_s and lane not in m["active"]:
                    m["active"].append(lane)
                    yield from self._emit(message, p, lane, True, "incident", "critical")

    def _emit(
        self, message: Message, p, lane: int, active: bool, kind: str, severity: str
    ) -> Outputs:
        where = {"intersection": str(p["intersection"]), "unit": p.get("unit", "")}
        detail = f"approach lane {lane} stopped for {self.stall_s:.0f} s of green"
        alert = {
            "kind": kind,
            "severity": severity,
            **where,
            "t_s": float(p["t_s"]),
            "detail": detail if active else f"approach lane {lane} moving again",
        }
        yield "alerts", message.derive(alert, qos=QoS.EMERGENCY)
        yield (
            "clearance",
            message.derive({**where, "lane": lane, "active": active}, qos=QoS.EMERGENCY),
        )

    def snapshot(self) -> Any:
        return {
            j: {"t": m["t"], "stall": list(m["stall"]), "active": list(m["active"])}
            for j, m in self._memory.items()
        }

    def restore(self, state: Any) -> None:
        self._memory = {
            j: {"t": m["t"], "stall": list(m["stall"]), "active": list(m["active"])}
            for j, m in state.items()
        }
