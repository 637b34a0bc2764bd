"""``SafetyMonitor``: obstacles in the ego path from lidar, time-to-collision, stale sensors.

The kernels are pure functions: ``path_obstacles`` (lidar points in the ego frame →
the nearest obstacle in the ego's path corridor) and ``ttc`` (distance and closing
speed → seconds to collision). The operator keeps the little state they need between
scans (the previous nearest distance, when each sensor was last heard from).

>>> import numpy as np
>>> pts = np.array([[20.0, 0.1, 0.8, 0.5], [20.2, 0.4, 1.1, 0.5], [15.0, 4.0, 1.0, 0.5],
...                 [8.0, 0.0, 0.02, 0.1], [np.nan, 0, 0, 0]], np.float32)
>>> found = path_obstacles(pts, corridor=Corridor())
>>> round(found.nearest_m, 1), found.points, found.dropped
(20.0, 2, 1)
>>> ttc(20.0, 10.0), ttc(20.0, -1.0)
(2.0, inf)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators._errors import OperatorError
from operators._message import Message, Meta
from operators._operator import Context, Field, Operator, Outputs, Port
from operators._qos import QoS

#: Sensors the monitor watches, in the order they are reported when stale.
SENSORS = ("lidar", "ego")


@dataclass(frozen=True)
class Corridor:
    """The swept path of the ego ahead: a band ``half_width_m + margin_m`` either side of the
    predicted path (an arc of the ego's current curvature), from ``min_range_m`` to
    ``max_range_m`` ahead of the front bumper, between ``min_height_m`` and ``max_height_m``
    above the road plane (``ground_z_m`` in the ego frame)."""

    half_width_m: float = 0.95
    margin_m: float = 0.3
    min_range_m: float = 0.0
    max_range_m: float = 80.0
    min_height_m: float = 0.3
    max_height_m: float = 2.5
    ground_z_m: float = 0.0


@dataclass(frozen=True)
class PathObstacle:
    """What ``path_obstacles`` found: nearest distance (inf: none), points in the corridor,
    and how many non-finite points it dropped."""

    nearest_m: float
    points: int
    dropped: int


def path_obstacles(
    points: np.ndarray,
    *,
    corridor: Corridor,
    curvature: float = 0.0,
    min_points: int = 2,
) -> PathObstacle:
    """The nearest obstacle in ``corridor`` among lidar ``points`` (N x >=3, ego frame: x
    forward, y left, z up). ``curvature`` (1/m, positive left) bends the corridor along the
    arc the ego is driving. Fewer than ``min_points`` points in the corridor is no obstacle
    (a single stray return does not brake the car). NaN / inf points are dropped and counted.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise OperatorError(
            f"lidar points have shape {list(pts.shape)}; expected (N, 3) or (N, 4) "
            "(x, y, z[, intensity]) in the ego frame"
        )
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    dropped = int((~finite).sum())
    x, y, z = pts[finite, 0], pts[finite, 1], pts[finite, 2]
    centre = 0.5 * curvature * x * x
    height = z - corridor.ground_z_m
    ahead = (
        (x >= corridor.min_range_m)
        & (x <= corridor.max_range_m)
        & (height >= corridor.min_height_m)
        & (height <= corridor.max_height_m)
    )
    lateral = np.abs(y - centre)
    half = corridor.half_width_m + corridor.margin_m
    inside = ahead & (lateral <= half)
    n = int(inside.sum())
    nearest = float(x[inside].min()) if n >= min_points else math.inf
    return PathObstacle(nearest, n, dropped)


def ttc(distance_m: float, closing_mps: float, *, min_closing_mps: float = 0.1) -> float:
    """Time to collision (s): ``distance / closing speed``; inf when not closing (or no
    obstacle), 0 when already touching."""
    if not math.isfinite(distance_m) or not closing_mps > min_closing_mps:
        return math.inf
    return max(distance_m, 0.0) / closing_mps


class SafetyMonitor(Operator):
    """Watches the ego's path with the lidar and the sensors' liveness.

    Inputs:
      ``lidar``: ``{"points": float32 Nx4}`` in the ego frame (as ``DrivingSimulator``
      sends them); NaN / inf points are dropped and counted.
      ``ego``: ``{"speed" m/s, "yaw_rate" rad/s, "x", "y", "heading"}`` (GPS-IMU).
    Outputs:
      ``safety`` (one per scan, and one per sensor going stale or recovering):
      ``{"event": "scan" | "sensor_stale" | "sensor_recovered", "ttc_s", "nearest_m",
      "closing_mps", "in_path" (bool), "points_in_path", "dropped_points",
      "ego_speed_mps", "stale" (str array of the silent sensors)}``.
      ``emergency`` (QoS EMERGENCY) when an in-path obstacle's time to collision is below
      ``ttc_threshold_s``: ``{"kind": "collision_imminent", "ttc_s", "nearest_m",
      "closing_mps", "ego_speed_mps", "x", "y", "heading", "time_ns"}``.
    Parameters:
      ``corridor``: the path corridor (``Corridor``); ``ttc_threshold_s``: emergency
      below this; ``min_points``: returns needed to call something an obstacle;
      ``smoothing``: weight of the newest closing-speed estimate (0..1]; closing speed is
      the change of the nearest distance between successive scans (event time), so a
      newly seen obstacle has none until its second scan; ``max_jump_m``: a nearest
      distance that moves more than this (beyond what the closing speed explains)
      between scans is a different obstacle; ``lidar_deadline_ms`` / ``ego_deadline_ms``:
      a sensor silent longer than this (checked every ``tick_ms`` by ``on_tick``) is
      reported stale, as a ``safety`` event, never an exception.

    >>> import numpy as np
    >>> mon = SafetyMonitor()
    >>> _ = list(mon.process("ego", Message("s", 0, 0, {"speed": 10.0, "yaw_rate": 0.0})))
    >>> scan = lambda x: {"points": np.array([[x, 0, 1, 0], [x, 0.3, 1, 0]], np.float32)}
    >>> _ = list(mon.process("lidar", Message("s", 1, 0, scan(30.0))))
    >>> [(p, round(m.payload["ttc_s"], 2)) for p, m in
    ...  mon.process("lidar", Message("s", 2, 100_000_000, scan(29.0)))]
    [('safety', 2.9)]
    >>> [(p, m.qos.name) for p, m in mon.process("lidar", Message("s", 3, 200_000_000,
    ...  scan(27.0)))]
    [('safety', 'PERCEPTION'), ('emergency', 'EMERGENCY')]
    """

    inputs = (Port("lidar", {"points": Field("float32", (None, 4))}), Port("ego"))
    outputs = (Port("safety"), Port("emergency"))
    tick_period_ns = 50_000_000

    def __init__(
        self,
        *,
        corridor: Corridor | None = None,
        ttc_threshold_s: float = 2.6,
        min_points: int = 2,
        smoothing: float = 0.7,
        max_jump_m: float = 3.0,
        lidar_deadline_ms: float = 300.0,
        ego_deadline_ms: float = 200.0,
        tick_ms: float = 50.0,
    ) -> None:
        if not ttc_threshold_s > 0 or not 0 < smoothing <= 1 or min_points < 1:
            raise OperatorError(
                f"SafetyMonitor(ttc_threshold_s={ttc_threshold_s}, smoothing={smoothing}, "
                f"min_points={min_points}): use ttc_threshold_s > 0, 0 < smoothing <= 1, "
                "min_points >= 1"
            )
        if not (lidar_deadline_ms > 0 and ego_deadline_ms > 0 and tick_ms > 0):
            raise OperatorError("deadlines and tick_ms are milliseconds and must be positive")
        self.corridor = corridor or Corridor()
        self.ttc_threshold_s = float(ttc_threshold_s)
        self.min_points = int(min_points)
        self.smoothing = float(smoothing)
        self.max_jump_m = float(max_jump_m)
        self.deadlines_ns = {"lidar": round(lidar_deadline_ms * 1e6),
                             "ego": round(ego_deadline_ms * 1e6)}  # fmt: skip
        self.tick_period_ns = round(tick_ms * 1e6)
        self._operator = "safety-monitor"
        self._reset()

    def _reset(self) -> None:
        self.ego: dict[str, float] = {"speed": 0.0, "yaw_rate": 0.0, "x": 0.0, "y": 0.0,
                                      "heading": 0.0}  # fmt: skip
        self.last_seen: dict[str, int] = {}
        self.started_ns: int | None = None
        self.prev_nearest = math.inf
        self.prev_ts: int | None = None
        self.closing: float | None = None
        self.stale: tuple[str, ...] = ()
        self.ticks = 0

    def setup(self, ctx: Context) -> None:
        self._operator = ctx.operator

    # -- state ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"ego": dict(self.ego), "last_seen": dict(self.last_seen),
                "started_ns": self.started_ns, "prev_nearest": self.prev_nearest,
                "prev_ts": self.prev_ts, "closing": self.closing, "stale": self.stale,
                "ticks": self.ticks}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.ego, self.last_seen = dict(state["ego"]), dict(state["last_seen"])
        self.started_ns, self.prev_ts = state["started_ns"], state["prev_ts"]
        self.prev_nearest, self.closing = state["prev_nearest"], state["closing"]
        self.stale, self.ticks = tuple(state["stale"]), int(state["ticks"])

    # -- messages ---------------------------------------------------------------------
    def process(self, port: str, message: Message) -> Outputs:
        if port not in SENSORS:
            raise OperatorError(
                f"no input port {port!r}; connect to 'lidar' or 'ego'", operator=self._operator
            )
        self.last_seen[port] = max(self.last_seen.get(port, message.event_ts), message.event_ts)
        if port == "ego":
            p = message.payload
            for key in self.ego:
                if key in p and math.isfinite(float(p[key])):
                    self.ego[key] = float(p[key])
            return ()
        return self._scan(message)

    def _scan(self, message: Message) -> Outputs:
        speed = max(self.ego["speed"], 0.0)
        curvature = self.ego["yaw_rate"] / speed if speed > 1.0 else 0.0
        found = path_obstacles(
            message.payload["points"], corridor=self.corridor, curvature=curvature,
            min_points=self.min_points,
        )  # fmt: skip
        ts = message.event_ts
        self.closing = self._closing(found.nearest_m, ts, speed)
        self.prev_nearest, self.prev_ts = found.nearest_m, ts
        closing = 0.0 if self.closing is None else self.closing
        t = ttc(found.nearest_m, closing)
        in_path = math.isfinite(found.nearest_m)
        out = [("safety", message.derive(self._payload("scan", found, closing, t)))]
        if in_path and t < self.ttc_threshold_s:
            payload = {
                "kind": "collision_imminent", "ttc_s": t, "nearest_m": found.nearest_m,
                "closing_mps": closing, "ego_speed_mps": speed, "x": self.ego["x"],
                "y": self.ego["y"], "heading": self.ego["heading"], "time_ns": ts,
            }  # fmt: skip
            out.append(("emergency", message.derive(payload, qos=QoS.EMERGENCY)))
        return out

    def _closing(self, nearest: float, ts: int, speed: float) -> float | None:
        """Smoothed closing speed of the nearest in-path obstacle (None until it is seen on
        two successive scans; a nearest distance that jumps by more than ``max_jump_m``
        beyond what the closing speed explains is a different obstacle: start again)."""
        if not math.isfinite(nearest) or not math.isfinite(self.prev_nearest):
            return None
        if self.prev_ts is None or ts <= self.prev_ts:
            return self.closing
        dt = (ts - self.prev_ts) / 1e9
        raw = (self.prev_nearest - nearest) / dt
        expected = 0.0 if self.closing is None else self.closing
        if abs(raw - expected) * dt > self.max_jump_m + speed * dt:
            return None
        if self.closing is None:
            return raw
        return self.smoothing * raw + (1.0 - self.smoothing) * self.closing

    def _payload(self, event: str, found: PathObstacle | None, closing: float, t: float):
        return {
            "event": event,
            "ttc_s": t,
            "nearest_m": found.nearest_m if found else math.inf,
            "closing_mps": closing,
            "in_path": bool(found and math.isfinite(found.nearest_m)),
            "points_in_path": found.points if found else 0,
            "dropped_points": found.dropped if found else 0,
            "ego_speed_mps": self.ego["speed"],
            "stale": np.array(self.stale, dtype="<U16"),
        }

    # -- deadlines --------------------------------------------------------------------
    def on_tick(self, now: int) -> Outputs:
        """Report sensors that went silent past their deadline (and those that came back)."""
        if self.started_ns is None:
            self.started_ns = now
        stale = tuple(
            s for s in SENSORS
            if now - self.last_seen.get(s, self.started_ns) > self.deadlines_ns[s]
        )  # fmt: skip
        went, back = set(stale) - set(self.stale), set(self.stale) - set(stale)
        self.stale = stale
        out = []
        for event, changed in (("sensor_stale", went), ("sensor_recovered", back)):
            if changed:
                payload = self._payload(event, None, math.nan, math.inf)
                payload["sensors"] = np.array(sorted(changed), dtype="<U16")
                meta = Meta(qos=QoS.CONTROL)
                out.append(("safety", Message("", self.ticks, now, payload, meta=meta)))
                self.ticks += 1
        return out
