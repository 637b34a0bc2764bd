"""``DecisionMaker``: adaptive cruise, emergency braking, lane keeping, signs, V2V advisories.

Each decision cycle (one per ``ego`` message, and one at once per emergency) picks the
lowest of the longitudinal accelerations its behaviours ask for and says which one won
(the ``reason``). The behaviours are pure kernels: ``acc_accel`` (cruise and follow),
``lane_keep_steer`` and ``speed_limit_mps`` (GTSRB class → limit).

>>> round(acc_accel(20.0, set_speed_mps=20.0), 2)  # at the set speed, nothing ahead
0.0
>>> round(acc_accel(20.0, set_speed_mps=20.0, gap_m=20.0, lead_speed_mps=15.0), 2)
-3.5
>>> speed_limit_mps(2), speed_limit_mps(14)
(13.889, None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Context, Operator, Outputs
from operators._qos import QoS

#: GTSRB speed-limit classes → km/h (see ../shared/data/MANIFEST.md).
SPEED_LIMITS_KMH = ((0, 20), (1, 30), (2, 50), (3, 60), (4, 70), (5, 80), (7, 100), (8, 120))
#: GTSRB class of the stop sign.
STOP = 14


def speed_limit_mps(class_id: int) -> float | None:
    """The limit (m/s, 3 decimals) a GTSRB class sets, or ``None`` if it is no speed limit."""
    kmh = dict(SPEED_LIMITS_KMH).get(int(class_id))
    return None if kmh is None else round(kmh / 3.6, 3)


def acc_accel(
    speed_mps: float,
    *,
    set_speed_mps: float,
    gap_m: float = math.inf,
    lead_speed_mps: float | None = None,
    time_gap_s: float = 1.6,
    min_gap_m: float = 5.0,
    k_speed: float = 0.5,
    k_gap: float = 0.25,
    k_rel: float = 0.7,
    max_accel_mps2: float = 1.5,
    max_decel_mps2: float = 3.5,
) -> float:
    """Adaptive cruise: the acceleration (m/s^2) to hold ``set_speed_mps``, or to keep
    ``min_gap_m + time_gap_s * speed`` behind a lead ``gap_m`` ahead at ``lead_speed_mps``,
    whichever is lower; clipped to ``[-max_decel_mps2, max_accel_mps2]``."""
    cruise = k_speed * (set_speed_mps - speed_mps)
    follow = math.inf
    if math.isfinite(gap_m):
        lead = speed_mps if lead_speed_mps is None else lead_speed_mps
        desired = min_gap_m + time_gap_s * max(speed_mps, 0.0)
        follow = k_gap * (gap_m - desired) + k_rel * (lead - speed_mps)
    return min(max(min(cruise, follow), -max_decel_mps2), max_accel_mps2)


def lane_keep_steer(
    offset_m: float,
    heading_rad: float,
    *,
    curvature: float = 0.0,
    speed_mps: float = 10.0,
    wheelbase_m: float = 2.8,
    offset_tau_s: float = 3.0,
    heading_tau_s: float = 1.0,
    max_lateral_mps2: float = 4.0,
) -> float:
    """Front-wheel angle (rad, positive left) that follows the lane, from the lane estimate:
    ``offset_m`` (positive: left of the lane centre), ``heading_rad`` (positive: turned left
    of the lane direction) and the road's ``curvature`` (1/m, positive left).

    A kinematic law whose gains scale with speed, so it neither dawdles in town nor
    oscillates on the motorway: aim for a heading that closes the offset in about
    ``offset_tau_s``, turn toward it in about ``heading_tau_s``, on top of the curvature
    feed-forward; the result is clamped to what ``max_lateral_mps2`` of lateral
    acceleration allows at this speed.
    """
    v = max(speed_mps, 2.0)
    wanted_heading = -math.atan(offset_m / (v * offset_tau_s))
    yaw_rate = v * curvature + v * math.sin(wanted_heading - heading_rad) / (v * heading_tau_s)
    steer = math.atan(wheelbase_m * yaw_rate / v)
    limit = math.atan(wheelbase_m * max_lateral_mps2 / (v * v))
    return min(max(steer, -limit), limit)


@dataclass(frozen=True)
class Behaviour:
    """The knobs of the decision maker's behaviours.

    ``set_speed_mps``: cruise speed (``None``: the first ego speed seen); ``time_gap_s`` /
    ``min_gap_m``: following distance; ``comfort_decel_mps2`` / ``max_accel_mps2``: ACC
    limits; ``aeb_decel_mps2``: emergency braking; ``aeb_hold_s``: AEB stays on this long
    after the last emergency; ``stale_decel_mps2``: gentle stop while the lidar is stale;
    ``fresh_s``: safety / lane data older than this is ignored; ``stop_hold_s``: how long
    to stand at a stop sign; ``stop_margin_m``: stop this far before the sign;
    ``min_lane_confidence``: lane estimates below it are ignored (0.8: both lines seen
    well; with one line the lane detector's offset was often a lane width off).
    """

    set_speed_mps: float | None = None
    time_gap_s: float = 1.6
    min_gap_m: float = 5.0
    comfort_decel_mps2: float = 3.5
    max_accel_mps2: float = 1.5
    aeb_decel_mps2: float = 8.0
    aeb_hold_s: float = 1.0
    stale_decel_mps2: float = 2.0
    fresh_s: float = 0.35
    stop_hold_s: float = 2.0
    stop_margin_m: float = 2.0
    min_lane_confidence: float = 0.8


class DecisionMaker(Operator):
    """Decides the ego's longitudinal acceleration and steering, with the reason.

    Inputs:
      ``ego``: ``{"speed", ...}`` (GPS-IMU); each one starts a decision cycle.
      ``safety``: ``SafetyMonitor`` scans (``nearest_m``, ``closing_mps``, ``ttc_s``,
      ``in_path``, ``stale``) for following and stale-sensor handling.
      ``emergency``: ``SafetyMonitor`` emergencies; each triggers emergency braking (AEB)
      at once, held ``aeb_hold_s`` past the last one.
      ``lanes``: ``{"offset_m", "heading_rad"[, "curvature_1pm", "confidence"]}``
      (positive left; what ``LaneDetector(geometry=True)`` emits); lane keeping steers
      on a fresh lane estimate; once estimates stop coming it steers along the last
      estimate's curvature (a held correction would take the vehicle off the road). An estimate
      with non-finite values or ``confidence`` below ``min_lane_confidence`` is ignored.
      ``signs``: ``{"classes": int array (GTSRB)[, "distances_m": float array]}``: speed
      limits cap the cruise speed; a stop sign stops the car ``stop_margin_m`` before it
      (at a comfortable deceleration when its distance is unknown), holds
      ``stop_hold_s``, then drives on.
      ``advisory``: ``{"target_speed_mps", "hold_s", "reason"}`` (from
      ``EmergencyHandler``): caps the speed for ``hold_s`` seconds.
    Outputs:
      ``decision``: ``{"accel_mps2", "steer_rad" (NaN: no lateral decision), "aeb"
      (bool), "reason" (str), "ttc_s", "target_speed_mps"}``; QoS EMERGENCY while
      braking for an emergency, CONTROL otherwise.
    Parameters:
      ``behaviour``: a ``Behaviour`` (see its fields); ``wheelbase_m`` for lane keeping.
    Never reads ``message.truth``.

    >>> dm = DecisionMaker()
    >>> [(p, m.payload["reason"]) for p, m in dm.process("ego", Message("s", 0, 0,
    ...  {"speed": 15.0}))]
    [('decision', 'cruise 15.0 m/s')]
    >>> e = Message("s", 1, 10, {"ttc_s": 1.2})
    >>> [(p, m.payload["aeb"], m.payload["reason"]) for p, m in dm.process("emergency", e)]
    [('decision', True, 'AEB: ttc 1.20 s')]
    """

    inputs = ("ego", "safety", "emergency", "lanes", "signs", "advisory")
    outputs = ("decision",)

    def __init__(self, *, behaviour: Behaviour | None = None, wheelbase_m: float = 2.8) -> None:
        self.behaviour = behaviour or Behaviour()
        b = self.behaviour
        if not (b.aeb_decel_mps2 > 0 and b.comfort_decel_mps2 > 0 and b.time_gap_s >= 0):
            raise OperatorError(f"{b}: decelerations must be positive (m/s^2) and time_gap_s >= 0")
        self.wheelbase_m = float(wheelbase_m)
        self._operator = "decision-maker"
        self.state: dict[str, Any] = {
            "now": 0, "speed": 0.0, "set_speed": b.set_speed_mps, "limit": math.inf,
            "safety": None, "safety_ts": None, "aeb_until": None, "aeb_ttc": math.inf,
            "lanes": None, "lanes_ts": None, "stop": None, "advisory": None, "stale": (),
            "ego_ts": None,
        }  # fmt: skip

    def setup(self, ctx: Context) -> None:
        self._operator = ctx.operator

    def snapshot(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.state.items()}

    def restore(self, state: dict[str, Any]) -> None:
        self.state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}

    # -- inputs -----------------------------------------------------------------------
    def process(self, port: str, message: Message) -> Outputs:
        s, p, ts = self.state, message.payload, message.event_ts
        s["now"] = max(s["now"], ts)
        if port == "ego":
            self._ego(float(p["speed"]), ts)
            return [("decision", self._decide(message))]
        if port == "safety":
            stale = tuple(str(x) for x in p.get("stale", ()))
            if p.get("event", "scan") != "scan":  # a sensor went stale or came back
                s["stale"] = stale
                return [("decision", self._decide(message))]
            s["safety"] = {"nearest": float(p.get("nearest_m", math.inf)),
                           "closing": float(p.get("closing_mps", 0.0)),
                           "in_path": bool(p.get("in_path", False))}  # fmt: skip
            s["safety_ts"], s["stale"] = ts, stale
            return ()
        if port == "emergency":
            s["aeb_until"] = ts + round(self.behaviour.aeb_hold_s * 1e9)
            s["aeb_ttc"] = float(p.get("ttc_s", math.nan))
            return [("decision", self._decide(message))]
        if port == "lanes":
            lanes = _lane_estimate(p, self.behaviour.min_lane_confidence)
            if lanes is not None:  # an unseen lane is no reason to steer: keep the last one
                s["lanes"], s["lanes_ts"] = lanes, ts
            return ()
        if port == "signs":
            self._signs(p, ts)
            return ()
        if port == "advisory":
            hold = round(float(p.get("hold_s", 10.0)) * 1e9)
            s["advisory"] = {"speed": float(p["target_speed_mps"]), "until": ts + hold,
                             "reason": str(p.get("reason", "V2V advisory"))}  # fmt: skip
            return ()
        raise OperatorError(
            f"no input port {port!r}; use one of {', '.join(self.port_names('inputs'))}",
            operator=self._operator,
        )

    def _ego(self, speed: float, ts: int) -> None:
        s = self.state
        stop = s["stop"]
        if stop is not None and s["ego_ts"] is not None:  # distance driven since the sign
            stop["left"] -= max(speed, 0.0) * (ts - s["ego_ts"]) / 1e9
        s["speed"], s["ego_ts"] = speed, ts
        if s["set_speed"] is None:
            s["set_speed"] = speed

    def _signs(self, p: Any, ts: int) -> None:
        s = self.state
        classes = [int(c) for c in p.get("classes", ())]
        distances = [float(d) for d in p.get("distances_m", [math.nan] * len(classes))]
        for cls, dist in zip(classes, distances, strict=True):
            limit = speed_limit_mps(cls)
            if limit is not None:
                s["limit"] = limit
            elif cls == STOP and (s["stop"] is None or s["stop"].get("done")):
                if s["stop"] is not None and ts < s["stop"]["ignore_until"]:
                    continue  # the sign just obeyed, still in view
                left = dist if math.isfinite(dist) else self._comfort_stop_m()
                s["stop"] = {"left": left, "stopped_at": None, "done": False,
                             "ignore_until": 0}  # fmt: skip

    def _comfort_stop_m(self) -> float:
        v = max(self.state["speed"], 0.0)
        return v * v / (2 * self.behaviour.comfort_decel_mps2) + self.behaviour.stop_margin_m

    # -- the decision -----------------------------------------------------------------
    def _decide(self, message: Message) -> Message:
        s, b = self.state, self.behaviour
        now, v = s["now"], s["speed"]
        target = min(s["set_speed"] if s["set_speed"] is not None else v, s["limit"])
        reason = f"cruise {target:.1f} m/s"
        if s["limit"] < math.inf and target == s["limit"]:
            reason = f"speed limit {target:.1f} m/s"
        adv = s["advisory"]
        if adv is not None and now <= adv["until"] and adv["speed"] < target:
            target, reason = adv["speed"], f"{adv['reason']}: slow to {adv['speed']:.1f} m/s"
        kw = {
            "time_gap_s": b.time_gap_s,
            "min_gap_m": b.min_gap_m,
            "max_accel_mps2": b.max_accel_mps2,
            "max_decel_mps2": b.comfort_decel_mps2,
        }
        accel = acc_accel(v, set_speed_mps=target, **kw)  # fmt: skip
        ttc_s = math.inf
        safety = s["safety"] if self._fresh(s["safety_ts"]) else None
        if safety is not None and safety["in_path"]:
            lead = v - safety["closing"]
            follow = acc_accel(v, set_speed_mps=target, gap_m=safety["nearest"],
                               lead_speed_mps=lead, **kw)  # fmt: skip
            ttc_s = safety["nearest"] / safety["closing"] if safety["closing"] > 0.1 else ttc_s
            if follow < accel - 1e-9:
                accel, reason = follow, f"follow: gap {safety['nearest']:.1f} m"
        stop = self._stop_accel(v, now)
        if stop is not None and stop[0] < accel:
            accel, reason = stop
        silent = s["safety_ts"] is not None and not self._fresh(s["safety_ts"])
        if ("lidar" in s["stale"] or silent) and -b.stale_decel_mps2 < accel:
            accel, reason = -b.stale_decel_mps2, "sensor stale: lidar; slowing down"
        aeb = s["aeb_until"] is not None and now <= s["aeb_until"]
        if aeb:
            accel, ttc_s = -b.aeb_decel_mps2, s["aeb_ttc"]
            reason = f"AEB: ttc {s['aeb_ttc']:.2f} s"
        steer = math.nan
        if s["lanes"] is not None and self._fresh(s["lanes_ts"]):
            lanes = s["lanes"]
            steer = lane_keep_steer(lanes["offset"], lanes["heading"],
                                    curvature=lanes["curvature"], speed_mps=v,
                                    wheelbase_m=self.wheelbase_m)  # fmt: skip
            reason += "; lane keeping"
        elif s["lanes"] is not None:  # lost it: follow the road's last curvature, correct nothing
            steer = math.atan(self.wheelbase_m * s["lanes"]["curvature"])
            reason += "; lane lost: holding the curve"
        payload = {"accel_mps2": float(accel), "steer_rad": float(steer), "aeb": bool(aeb),
                   "reason": reason, "ttc_s": float(ttc_s),
                   "target_speed_mps": float(target)}  # fmt: skip
        return message.derive(payload, qos=QoS.EMERGENCY if aeb else QoS.CONTROL)

    def _fresh(self, ts: int | None) -> bool:
        return ts is not None and self.state["now"] - ts <= round(self.behaviour.fresh_s * 1e9)

    def _stop_accel(self, v: float, now: int) -> tuple[float, str] | None:
        """Braking for a stop sign ahead, standing at it, or ``None`` once it was obeyed."""
        stop, b = self.state["stop"], self.behaviour
        if stop is None or stop["done"]:
            return None
        if stop["stopped_at"] is None and v < 0.2 and stop["left"] < b.stop_margin_m + 3.0:
            stop["stopped_at"] = now
        if stop["stopped_at"] is not None:
            if now - stop["stopped_at"] >= round(b.stop_hold_s * 1e9):
                stop["done"], stop["ignore_until"] = True, now + 10_000_000_000
                return None
            return -b.comfort_decel_mps2, "stop sign: standing"
        room = max(stop["left"] - b.stop_margin_m, 0.05)
        need = v * v / (2 * room)
        return -min(max(need, 0.0), b.aeb_decel_mps2), f"stop sign in {stop['left']:.1f} m"


def _lane_estimate(payload: Any, min_confidence: float) -> dict[str, float] | None:
    """Offset, heading and curvature from a lane message, or ``None`` when it is not usable."""
    lanes = {
        "offset": float(payload["offset_m"]),
        "heading": float(payload["heading_rad"]),
        "curvature": float(payload.get("curvature_1pm", 0.0)),
    }
    confidence = float(payload.get("confidence", 1.0))
    if confidence < min_confidence or not all(math.isfinite(v) for v in lanes.values()):
        return None
    return lanes
