"""``Controller``: decisions → rate-limited throttle / brake / steer commands.

Kernels: ``rate_limit`` (move toward a target by at most ``rate * dt``) and ``pedals``
(an acceleration → throttle and brake in [0, 1]).

>>> rate_limit(0.0, 10.0, max_rate=4.0, dt_s=0.5)
2.0
>>> pedals(-4.0, max_accel_mps2=3.0, max_decel_mps2=8.0)
(0.0, 0.5)
"""

from __future__ import annotations

import math
from typing import Any

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Context, Operator, Outputs
from operators._qos import QoS


def rate_limit(current: float, target: float, *, max_rate: float, dt_s: float) -> float:
    """``target``, or as near to it as ``current`` can move in ``dt_s`` at ``max_rate``
    (units per second; inf: no limit)."""
    step = max_rate * dt_s if dt_s > 0 else 0.0
    return min(max(target, current - step), current + step)


def pedals(
    accel_mps2: float, *, max_accel_mps2: float, max_decel_mps2: float
) -> tuple[float, float]:
    """``(throttle, brake)`` in [0, 1] for an acceleration, given the vehicle's full-throttle
    acceleration and full-brake deceleration."""
    if accel_mps2 >= 0:
        return min(accel_mps2 / max_accel_mps2, 1.0), 0.0
    return 0.0, min(-accel_mps2 / max_decel_mps2, 1.0)


class Controller(Operator):
    """Turns ``DecisionMaker`` decisions into actuator commands, rate-limited, reason attached.

    Inputs:
      ``decision``: ``{"accel_mps2", "steer_rad" (NaN: no lateral command), "aeb",
      "reason"}``.
    Outputs:
      ``control`` (QoS CONTROL; EMERGENCY while ``aeb``): ``{"throttle", "brake"}`` in
      [0, 1], plus ``"steer"`` (front-wheel angle, rad) only when the decision steers, so
      ``DrivingSimulator``'s ``control`` input keeps its own lane following until lane
      keeping starts; also ``"accel_mps2"`` (the limited command), ``"reason"``, and the
      decision's ``"aeb"`` and ``"ttc_s"`` (time to collision it acted on; inf: none).
    Parameters:
      ``max_jerk_mps3``: the acceleration command's rate limit; ``aeb_jerk_mps3``: the
      same while emergency braking (brake build-up); ``max_steer_rate``: rad/s;
      ``max_steer_rad``: steering clamp; ``max_accel_mps2`` / ``max_decel_mps2``: the
      vehicle's acceleration at full throttle / full brake (defaults: the simulator's).
      Time steps are the decisions' event times.

    >>> c = Controller(max_jerk_mps3=10.0)
    >>> d = lambda ts, a: Message("s", ts, ts, {"accel_mps2": a, "steer_rad": float("nan"),
    ...                                         "aeb": False, "reason": "r"})
    >>> _ = list(c.process("decision", d(0, 0.0)))
    >>> [(p, m.payload["brake"], sorted(m.payload)) for p, m in
    ...  c.process("decision", d(100_000_000, -8.0))]
    [('control', 0.125, ['accel_mps2', 'aeb', 'brake', 'reason', 'throttle', 'ttc_s'])]
    """

    inputs = ("decision",)
    outputs = ("control",)

    def __init__(
        self,
        *,
        max_jerk_mps3: float = 5.0,
        aeb_jerk_mps3: float = 40.0,
        max_steer_rate: float = 0.5,
        max_steer_rad: float = 0.5,
        max_accel_mps2: float = 3.0,
        max_decel_mps2: float = 8.0,
    ) -> None:
        values = {"max_jerk_mps3": max_jerk_mps3, "aeb_jerk_mps3": aeb_jerk_mps3,
                  "max_steer_rate": max_steer_rate, "max_steer_rad": max_steer_rad,
                  "max_accel_mps2": max_accel_mps2, "max_decel_mps2": max_decel_mps2}  # fmt: skip
        bad = {k: v for k, v in values.items() if not v > 0}
        if bad:
            raise OperatorError(f"Controller limits must be positive, got {bad}")
        self.max_jerk = float(max_jerk_mps3)
        self.aeb_jerk = float(aeb_jerk_mps3)
        self.max_steer_rate = float(max_steer_rate)
        self.max_steer = float(max_steer_rad)
        self.max_accel = float(max_accel_mps2)
        self.max_decel = float(max_decel_mps2)
        self._operator = "controller"
        self.accel: float | None = None
        self.steer: float | None = None
        self.last_ts: int | None = None

    def setup(self, ctx: Context) -> None:
        self._operator = ctx.operator

    def snapshot(self) -> dict[str, Any]:
        return {"accel": self.accel, "steer": self.steer, "last_ts": self.last_ts}

    def restore(self, state: dict[str, Any]) -> None:
        self.accel, self.steer, self.last_ts = state["accel"], state["steer"], state["last_ts"]

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        if port != "decision" or "accel_mps2" not in p:
            raise OperatorError(
                f"expected a decision on 'decision' with 'accel_mps2' (and 'steer_rad', "
                f"'reason'), got port {port!r} with keys {sorted(p)}; connect "
                "DecisionMaker.decision to Controller.decision",
                operator=self._operator,
            )
        ts = message.event_ts
        dt = 0.0 if self.last_ts is None else max(ts - self.last_ts, 0) / 1e9
        self.last_ts = ts if self.last_ts is None else max(ts, self.last_ts)
        aeb = bool(p.get("aeb", False))
        want = min(max(float(p["accel_mps2"]), -self.max_decel), self.max_accel)
        if self.accel is None:
            self.accel = want if aeb else 0.0  # the vehicle holds its speed until commanded
        else:
            jerk = self.aeb_jerk if aeb else self.max_jerk
            self.accel = rate_limit(self.accel, want, max_rate=jerk, dt_s=dt)
        throttle, brake = pedals(self.accel, max_accel_mps2=self.max_accel,
                                 max_decel_mps2=self.max_decel)  # fmt: skip
        payload: dict[str, Any] = {"throttle": throttle, "brake": brake,
                                   "accel_mps2": self.accel, "aeb": aeb,
                                   "ttc_s": float(p.get("ttc_s", math.inf)),
                                   "reason": str(p.get("reason", ""))}  # fmt: skip
        steer = float(p.get("steer_rad", math.nan))
        if math.isfinite(steer):
            steer = min(max(steer, -self.max_steer), self.max_steer)
            self.steer = steer if self.steer is None else rate_limit(
                self.steer, steer, max_rate=self.max_steer_rate, dt_s=dt)  # fmt: skip
            payload["steer"] = self.steer
        qos = QoS.EMERGENCY if aeb else QoS.CONTROL
        return [("control", message.derive(payload, qos=qos))]
