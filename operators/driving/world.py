"""Pure geometry of a driving scene: road, lanes, scripted actors, signs and the ego vehicle.

Frames used throughout:
  *world*: x east, y north, z up (metres), the road starts at the origin heading east.
  *road*: ``(s, d)``: arc length along the centreline of the ego's lane and lateral
  offset from it (positive to the left).
  *ego*: origin at the centre of the ego's front bumper on the ground, x forward,
  y left, z up.

Everything here is a pure function of the scenario description and the time, except
the ego vehicle, whose state is integrated by ``step_ego`` (optionally from control
commands, so a controller can close the loop).

>>> road = Road(segments=((50.0, 0.0), (100.0, 1 / 100)))
>>> world = World(road=road)
>>> x, y, heading = world.pose(50.0)
>>> round(float(x), 3), round(float(y), 3), round(float(heading), 3)
(50.0, 0.0, 0.0)
>>> round(float(world.pose(150.0)[2]), 3)  # 100 m of curvature 1/100: one radian
1.0
>>> ego = step_ego(EgoState(s=0.0, v=10.0), dt=1.0, kappa=0.0, control=Control(brake=1.0))
>>> round(ego.v, 2), round(ego.s, 2)
(2.0, 6.0)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

#: Class names of the camera ground truth (index = class id).
CLASSES: tuple[str, ...] = ("vehicle", "pedestrian", "sign")
#: Ego vehicle footprint: length and width (m); the ego frame's origin is the front bumper.
EGO_LENGTH = 4.6
EGO_WIDTH = 1.85
#: Wheelbase (m) of the kinematic bicycle model.
WHEELBASE = 2.8
#: Accelerations (m/s^2) at full throttle / full brake, and the most steering (rad).
MAX_ACCEL = 3.0
MAX_DECEL = 8.0
MAX_STEER = 0.5
MAX_SPEED = 40.0


@dataclass(frozen=True)
class Boundary:
    """A painted lane boundary at lateral offset ``d`` (m) from the ego lane's centre."""

    d: float
    style: str = "dashed"  # "solid" | "dashed"
    color: str = "white"  # "white" | "yellow"
    width: float = 0.15

    @property
    def kind(self) -> str:
        return f"{self.style}_{self.color}"


#: Three lanes of 3.5 m, the ego in the middle one.
THREE_LANES: tuple[Boundary, ...] = (
    Boundary(5.25, "solid", "yellow"),
    Boundary(1.75, "dashed", "white"),
    Boundary(-1.75, "dashed", "white"),
    Boundary(-5.25, "solid", "white"),
)

#: Dashes: ``DASH_ON`` metres painted every ``DASH_PERIOD`` metres of arc length.
DASH_ON = 3.0
DASH_PERIOD = 12.0


@dataclass(frozen=True)
class Road:
    """A centreline of constant-curvature pieces ``(length m, curvature 1/m)``, lanes on it.

    Curvature is positive to the left. The last piece is extended as far as needed.
    """

    segments: tuple[tuple[float, float], ...] = ((1000.0, 0.0),)
    lane_width: float = 3.5
    boundaries: tuple[Boundary, ...] = THREE_LANES

    @property
    def left_edge(self) -> float:
        return max(b.d for b in self.boundaries) + 0.5

    @property
    def right_edge(self) -> float:
        return min(b.d for b in self.boundaries) - 0.5


@dataclass(frozen=True)
class Actor:
    """A scripted road user (``kind``: ``car``, ``truck`` or ``pedestrian``).

    Longitudinal motion: from ``s0`` (m) at speed ``v0`` (m/s) with piecewise constant
    acceleration ``accel`` = ``((t, a), ...)`` (from time ``t`` on, ``a`` m/s^2; the
    speed never goes below zero). Lateral: keyframes ``lateral`` = ``((t, d), ...)``,
    linear in between, held before the first and after the last.
    """

    id: int
    kind: str
    s0: float
    v0: float = 0.0
    d0: float = 0.0
    accel: tuple[tuple[float, float], ...] = ()
    lateral: tuple[tuple[float, float], ...] = ()
    size: tuple[float, float, float] = (4.5, 1.8, 1.5)  # length, width, height
    color: tuple[int, int, int] = (60, 60, 200)  # BGR

    def longitudinal(self, t: float) -> tuple[float, float]:
        """``(s, v)`` at time ``t``."""
        s, v, t0, a = self.s0, self.v0, 0.0, 0.0
        for tk, ak in (*self.accel, (math.inf, 0.0)):
            end = min(tk, t)
            if end > t0:
                s, v = _advance(s, v, a, end - t0)
                t0 = end
            if tk >= t:
                break
            a = ak
        return s, v

    def offset(self, t: float) -> tuple[float, float]:
        """``(d, dd/dt)`` at time ``t``."""
        keys = self.lateral
        if not keys:
            return self.d0, 0.0
        ts = [k[0] for k in keys]
        ds = [k[1] for k in keys]
        d = float(np.interp(t, ts, ds))
        for (ta, da), (tb, db) in itertools.pairwise(keys):
            if ta <= t < tb:
                return d, (db - da) / (tb - ta)
        return d, 0.0


def _advance(s: float, v: float, a: float, dt: float) -> tuple[float, float]:
    if a < 0 and v + a * dt < 0:  # stops within dt and stays stopped
        return s + v * v / (-2 * a), 0.0
    return s + v * dt + 0.5 * a * dt * dt, v + a * dt


@dataclass(frozen=True)
class SignSpec:
    """A GTSRB traffic sign beside the road: class id, arc length ``s``, lateral ``d``.

    ``height`` is the height (m) of the plate's centre; ``stop_line`` paints a line
    across the ego's lane at ``s``.
    """

    id: int
    gtsrb: int
    s: float
    d: float = -6.3
    height: float = 2.2
    size: float = 0.8
    stop_line: bool = False


@dataclass(frozen=True)
class Control:
    """A command to the ego vehicle: throttle and brake in [0, 1], steer in radians."""

    throttle: float = 0.0
    brake: float = 0.0
    steer: float = 0.0

    @property
    def accel(self) -> float:
        throttle = min(max(self.throttle, 0.0), 1.0)
        brake = min(max(self.brake, 0.0), 1.0)
        return throttle * MAX_ACCEL - brake * MAX_DECEL


@dataclass(frozen=True)
class EgoState:
    """The ego vehicle in road coordinates: ``s``, ``d``, heading error ``psi``, speed ``v``."""

    s: float = 0.0
    d: float = 0.0
    psi: float = 0.0
    v: float = 0.0
    steer: float = 0.0
    accel: float = 0.0


def step_ego(
    ego: EgoState,
    *,
    dt: float,
    kappa: float,
    control: Control | None = None,
    steer: float | None = None,
) -> EgoState:
    """Advance the ego by ``dt`` seconds with a kinematic bicycle model in road coordinates.

    ``control`` sets the acceleration (``None``: hold the speed); ``steer`` overrides the
    steering angle (``None``: the control's, or, without a control, keep the heading
    error as it is, i.e. follow the road). ``kappa`` is the road's curvature at ``ego.s``.
    """
    accel = 0.0 if control is None else control.accel
    v_end = min(max(ego.v + accel * dt, 0.0), MAX_SPEED)
    if accel < 0 and ego.v + accel * dt < 0:
        dt_move = ego.v / -accel
        ds_path = ego.v * dt_move / 2
    else:
        ds_path = (ego.v + v_end) / 2 * dt
    v_mid = ds_path / dt if dt > 0 else ego.v
    if steer is None and control is None:
        delta = math.atan(WHEELBASE * kappa)
    else:
        delta = min(max(control.steer if steer is None else steer, -MAX_STEER), MAX_STEER)
    s_dot = v_mid * math.cos(ego.psi) / max(1.0 - kappa * ego.d, 0.1)
    psi_dot = v_mid * math.tan(delta) / WHEELBASE - kappa * s_dot
    psi = ego.psi + psi_dot * dt
    d = ego.d + v_mid * math.sin(ego.psi + psi_dot * dt / 2) * dt
    return EgoState(s=ego.s + s_dot * dt, d=d, psi=psi, v=v_end, steer=delta, accel=accel)


@dataclass(frozen=True)
class SceneObject:
    """One object at one instant: an oriented 3-D box in world coordinates.

    ``center`` is the box's centre (x, y, z), ``size`` its (length, width, height) and
    ``yaw`` its heading. Signs: the box spans pole and plate; ``plate`` is the plate's
    centre height and ``gtsrb`` its class (``-1`` for other objects).
    """

    id: int
    kind: str  # car | truck | pedestrian | sign
    center: tuple[float, float, float]
    yaw: float
    size: tuple[float, float, float]
    color: tuple[int, int, int]
    s: float
    d: float
    speed: float = 0.0
    gtsrb: int = -1
    plate: float = 0.0
    plate_size: float = 0.0

    @property
    def class_id(self) -> int:
        if self.kind == "sign":
            return CLASSES.index("sign")
        if self.kind == "pedestrian":
            return CLASSES.index("pedestrian")
        return CLASSES.index("vehicle")


@dataclass(frozen=True)
class EgoPose:
    """The ego in the world: position of the ego frame's origin and heading (rad)."""

    x: float
    y: float
    yaw: float

    def to_ego(self, points: np.ndarray) -> np.ndarray:
        """World points (..., >=2) to the ego frame (x, y[, z] kept as is)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        out = np.array(points, dtype=np.float64, copy=True)
        dx, dy = points[..., 0] - self.x, points[..., 1] - self.y
        out[..., 0] = c * dx + s * dy
        out[..., 1] = -s * dx + c * dy
        return out


@dataclass(frozen=True)
class Scene:
    """Everything a sensor sees at time ``t`` (s): the road, the ego, the objects."""

    t: float
    world: World
    ego: EgoState
    pose: EgoPose
    objects: tuple[SceneObject, ...]


class World:
    """The road (sampled densely once), the scripted actors and the signs of a scenario.

    Pure: ``objects(t)`` and ``pose(s)`` depend on nothing but the arguments.
    """

    def __init__(
        self,
        *,
        road: Road,
        actors: tuple[Actor, ...] = (),
        signs: tuple[SignSpec, ...] = (),
        length: float = 2000.0,
        step: float = 0.25,
    ) -> None:
        self.road = road
        self.actors = actors
        self.signs = signs
        self.step = step
        self.s, self.x, self.y, self.heading, self.kappa = _sample(road, length, step)

    # -- the road ---------------------------------------------------------------------------
    def pose(self, s: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centreline ``(x, y, heading)`` at arc length(s) ``s`` (clamped to the sampled range)."""
        x = np.interp(s, self.s, self.x)
        y = np.interp(s, self.s, self.y)
        h = np.interp(s, self.s, self.heading)
        return x, y, h

    def point(self, s: float | np.ndarray, d: float | np.ndarray) -> np.ndarray:
        """World ``(..., 2)`` points at road coordinates ``(s, d)``."""
        x, y, h = self.pose(s)
        return np.stack([x - d * np.sin(h), y + d * np.cos(h)], axis=-1)

    def curvature(self, s: float) -> float:
        """Curvature (1/m, positive left) of the centreline at ``s``."""
        i = min(max(round(s / self.step), 0), len(self.kappa) - 1)
        return float(self.kappa[i])

    def ego_pose(self, ego: EgoState) -> EgoPose:
        (x, y), (_, _, h) = self.point(ego.s, ego.d), self.pose(ego.s)
        return EgoPose(float(x), float(y), float(h) + ego.psi)

    # -- what is on it ----------------------------------------------------------------------
    def objects(self, t: float) -> tuple[SceneObject, ...]:
        """Actors and signs at time ``t`` (s)."""
        out = []
        for a in self.actors:
            s, v = a.longitudinal(t)
            d, d_dot = a.offset(t)
            (x, y), (_, _, h) = self.point(s, d), self.pose(s)
            _length, _width, height = a.size
            yaw = float(h) + (math.atan2(d_dot, v) if v > 0.5 else 0.0)
            if a.kind == "pedestrian" and abs(d_dot) > 0.1:
                yaw = float(h) + math.copysign(math.pi / 2, d_dot)
            out.append(
                SceneObject(
                    id=a.id, kind=a.kind, center=(float(x), float(y), height / 2), yaw=yaw,
                    size=a.size, color=a.color, s=s, d=d, speed=v,
                )
            )  # fmt: skip
        for sign in self.signs:
            (x, y), (_, _, h) = self.point(sign.s, sign.d), self.pose(sign.s)
            top = sign.height + sign.size / 2
            out.append(
                SceneObject(
                    id=sign.id, kind="sign", center=(float(x), float(y), top / 2),
                    yaw=float(h), size=(0.1, sign.size, top), color=(0, 0, 200),
                    s=sign.s, d=sign.d, gtsrb=sign.gtsrb, plate=sign.height,
                    plate_size=sign.size,
                )
            )  # fmt: skip
        return tuple(out)

    def scene(self, t: float, ego: EgoState) -> Scene:
        return Scene(t=t, world=self, ego=ego, pose=self.ego_pose(ego), objects=self.objects(t))


def _sample(road: Road, length: float, step: float) -> tuple[np.ndarray, ...]:
    """Exact arc-by-arc samples of the centreline every ``step`` metres."""
    n = math.ceil(length / step) + 1
    s = np.arange(n) * step
    kappa = np.empty(n)
    x, y, h = np.empty(n), np.empty(n), np.empty(n)
    x0 = y0 = h0 = 0.0
    start = 0.0
    pieces = list(road.segments)
    pieces[-1] = (max(pieces[-1][0], length - sum(p[0] for p in pieces[:-1])), pieces[-1][1])
    for i, (seg_len, k) in enumerate(pieces):
        last = i == len(pieces) - 1
        mask = (s >= start) & ((s < start + seg_len) | last)
        u = s[mask] - start
        kappa[mask] = k
        if abs(k) < 1e-12:
            x[mask], y[mask], h[mask] = x0 + u * math.cos(h0), y0 + u * math.sin(h0), h0
        else:
            x[mask] = x0 + (np.sin(h0 + k * u) - math.sin(h0)) / k
            y[mask] = y0 - (np.cos(h0 + k * u) - math.cos(h0)) / k
            h[mask] = h0 + k * u
        if abs(k) < 1e-12:
            x0, y0 = x0 + seg_len * math.cos(h0), y0 + seg_len * math.sin(h0)
        else:
            x0 = x0 + (math.sin(h0 + k * seg_len) - math.sin(h0)) / k
            y0 = y0 - (math.cos(h0 + k * seg_len) - math.cos(h0)) / k
            h0 = h0 + k * seg_len
        start += seg_len
    return s, x, y, h, kappa


def box_corners(obj: SceneObject, *, z0: float | None = None) -> np.ndarray:
    """The 8 world corners (8, 3) of an object's box: bottom 4 then top 4 (counter-clockwise)."""
    length, width, height = obj.size
    cx, cy, cz = obj.center
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float) * [length / 2, width / 2]
    xy = local @ np.array([[c, s], [-s, c]]) + [cx, cy]
    bottom = cz - height / 2 if z0 is None else z0
    return np.concatenate(
        [np.c_[xy, np.full(4, bottom)], np.c_[xy, np.full(4, cz + height / 2)]], axis=0
    )


def distance_to_box(pose: EgoPose, obj: SceneObject) -> float:
    """Planar distance (m) from the ego frame's origin to the nearest point of ``obj``'s box."""
    cx, cy = obj.center[0] - pose.x, obj.center[1] - pose.y
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    qx, qy = -(c * cx + s * cy), -(-s * cx + c * cy)
    dx = max(abs(qx) - obj.size[0] / 2, 0.0)
    dy = max(abs(qy) - obj.size[1] / 2, 0.0)
    return math.hypot(dx, dy)


def box_in_ego(pose: EgoPose, obj: SceneObject) -> np.ndarray:
    """``(cx, cy, cz, length, width, height, yaw)`` of ``obj``'s box in the ego frame."""
    centre = pose.to_ego(np.array(obj.center))
    return np.array([*centre, *obj.size, _wrap(obj.yaw - pose.yaw)], np.float32)


def collides(ego: EgoState, obj: SceneObject) -> bool:
    """Whether the ego's footprint overlaps a road user's, in road coordinates."""
    if obj.kind == "sign":
        return False
    ds = abs((obj.s) - (ego.s - EGO_LENGTH / 2))
    dd = abs(obj.d - ego.d)
    length, width = (obj.size[1], obj.size[0]) if obj.kind == "pedestrian" else obj.size[:2]
    return ds < (length + EGO_LENGTH) / 2 and dd < (width + EGO_WIDTH) / 2


def lead_gap(ego: EgoState, objects: tuple[SceneObject, ...]) -> float:
    """Bumper-to-bumper gap (m) to the nearest road user ahead in the ego's lane (inf: none)."""
    gaps = [
        o.s - o.size[0] / 2 - ego.s
        for o in objects
        if o.kind != "sign" and abs(o.d - ego.d) < 1.75 and o.s + o.size[0] / 2 > ego.s
    ]
    return min(gaps, default=math.inf)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def with_speed(ego: EgoState, v: float) -> EgoState:
    """A copy of ``ego`` at speed ``v``."""
    return replace(ego, v=v)
