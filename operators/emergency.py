"""``EmergencyHandler``: a vehicle's emergencies out to V2V, other vehicles' in as advisories.

>>> h = EmergencyHandler(vehicle="car-1")
>>> e = Message("s", 0, 5, {"kind": "collision_imminent", "x": 10.0, "y": 2.0, "ttc_s": 1.1})
>>> [(p, m.qos.name, m.payload["vehicle"]) for p, m in h.process("emergency", e)]
[('broadcast', 'EMERGENCY', 'car-1')]
>>> v = Message("v2v", 0, 9, {"kind": "collision_imminent", "vehicle": "car-2",
...                           "x": 50.0, "y": 0.0, "time_ns": 9})
>>> [(p, m.payload["target_speed_mps"]) for p, m in h.process("v2v", v)]
[('advisory', 8.0)]
"""

from __future__ import annotations

import math
from typing import Any

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Context, Operator, Outputs
from operators._qos import QoS


class EmergencyHandler(Operator):
    """Publishes this vehicle's emergencies and reacts to other vehicles' ones.

    Inputs:
      ``emergency``: ``SafetyMonitor`` emergencies (``kind``, ``x``, ``y``, ``ttc_s``).
      ``v2v``: emergencies received from other vehicles (what ``broadcast`` sends,
      subscribed from a fleet topic such as ``v2v/emergency``).
      ``ego`` (optional): ``{"x", "y"}`` (GPS): this vehicle's position, for ``radius_m``.
    Outputs:
      ``broadcast`` (QoS EMERGENCY; publish it to the topic): ``{"kind", "vehicle", "x",
      "y", "time_ns", "ttc_s"}``, at most one per ``holdoff_s`` per vehicle.
      ``advisory`` (QoS EMERGENCY; connect to ``DecisionMaker.advisory``):
      ``{"target_speed_mps", "hold_s", "reason", "from_vehicle", "distance_m"}`` for each
      received emergency from another vehicle within ``radius_m`` (distance unknown while
      no own position has been seen: reacted to).
    Parameters:
      ``vehicle``: this vehicle's id (its own broadcasts echoed back are ignored);
      ``slow_to_mps`` / ``hold_s``: the advisory; ``radius_m``: how far away an emergency
      still matters; ``holdoff_s``: minimum time between two broadcasts.
    """

    inputs = ("emergency", "v2v", "ego")
    outputs = ("broadcast", "advisory")

    def __init__(
        self,
        *,
        vehicle: str = "vehicle",
        slow_to_mps: float = 8.0,
        hold_s: float = 10.0,
        radius_m: float = 300.0,
        holdoff_s: float = 2.0,
    ) -> None:
        if not (slow_to_mps >= 0 and hold_s > 0 and radius_m > 0 and holdoff_s >= 0):
            raise OperatorError(
                f"EmergencyHandler(slow_to_mps={slow_to_mps}, hold_s={hold_s}, "
                f"radius_m={radius_m}, holdoff_s={holdoff_s}): use slow_to_mps >= 0, "
                "hold_s > 0, radius_m > 0, holdoff_s >= 0"
            )
        self.vehicle = vehicle
        self.slow_to_mps = float(slow_to_mps)
        self.hold_s = float(hold_s)
        self.radius_m = float(radius_m)
        self.holdoff_ns = round(holdoff_s * 1e9)
        self._operator = "emergency-handler"
        self.last_broadcast: int | None = None
        self.position: tuple[float, float] | None = None

    def setup(self, ctx: Context) -> None:
        self._operator = ctx.operator

    def snapshot(self) -> dict[str, Any]:
        return {"last_broadcast": self.last_broadcast, "position": self.position}

    def restore(self, state: dict[str, Any]) -> None:
        self.last_broadcast, self.position = state["last_broadcast"], state["position"]

    def process(self, port: str, message: Message) -> Outputs:
        p, ts = message.payload, message.event_ts
        if port == "emergency":
            x, y = float(p.get("x", math.nan)), float(p.get("y", math.nan))
            if math.isfinite(x) and math.isfinite(y):
                self.position = (x, y)
            if self.last_broadcast is not None and ts - self.last_broadcast < self.holdoff_ns:
                return ()
            self.last_broadcast = ts
            payload = {"kind": str(p.get("kind", "emergency")), "vehicle": self.vehicle,
                       "x": x, "y": y, "time_ns": int(p.get("time_ns", ts)),
                       "ttc_s": float(p.get("ttc_s", math.nan))}  # fmt: skip
            return [("broadcast", message.derive(payload, qos=QoS.EMERGENCY))]
        if port == "v2v":
            return self._received(message)
        if port == "ego":
            x, y = float(p.get("x", math.nan)), float(p.get("y", math.nan))
            if math.isfinite(x) and math.isfinite(y):
                self.position = (x, y)
            return ()
        raise OperatorError(
            f"no input port {port!r}; connect SafetyMonitor.emergency to 'emergency' and the "
            "V2V topic to 'v2v'",
            operator=self._operator,
        )

    def _received(self, message: Message) -> Outputs:
        p = message.payload
        sender = str(p.get("vehicle", ""))
        if sender == self.vehicle:
            return ()  # our own broadcast echoed by the topic
        distance = math.nan
        if self.position is not None and "x" in p and "y" in p:
            distance = math.hypot(float(p["x"]) - self.position[0],
                                  float(p["y"]) - self.position[1])  # fmt: skip
            if distance > self.radius_m:
                return ()
        payload = {
            "target_speed_mps": self.slow_to_mps, "hold_s": self.hold_s,
            "reason": f"V2V {p.get('kind', 'emergency')} from {sender or 'unknown'}",
            "from_vehicle": sender, "distance_m": distance,
        }  # fmt: skip
        return [("advisory", message.derive(payload, qos=QoS.EMERGENCY))]
