"""``DrivingSimulator``: a scripted driving scene as a source of camera, lidar and ego streams.

Polling contract: the simulator keeps its own clock. Each ``poll`` advances simulated
time by one step of ``1 / poll_hz`` seconds, whatever ``now`` the runtime passes, and
returns every sensor sample due in that step, in event-time order; sensor ``k`` of a
sensor at ``rate`` Hz is taken at ``event_ts = round(k * 1e9 / rate)`` ns. Declare the
source in the pipeline with ``rate_hz=poll_hz`` to run in real time (any other rate
runs faster or slower than real time; the messages are the same). Polling at the
camera rate or faster keeps each poll to about one camera frame. Once simulated time
reaches the scenario's end, ``poll`` returns ``None``.

>>> from operators import Context
>>> sim = DrivingSimulator("lead_emergency_brake", poll_hz=10.0)
>>> sim.setup(Context())
>>> [(port, m.event_ts) for port, m in sim.poll(0)][:4]
[('ego', 0), ('lidar', 0), ('camera', 0), ('ego', 20000000)]
>>> sorted(port for port, _ in sim.poll(0))
['camera', 'camera', 'camera', 'ego', 'ego', 'ego', 'ego', 'ego', 'lidar']
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Context, Field, Outputs, Port, Source
from operators.driving.camera import PinholeCamera, render
from operators.driving.lidar import Lidar, scan
from operators.driving.scenarios import Scenario, scenario
from operators.driving.world import (
    WHEELBASE,
    Control,
    EgoState,
    World,
    box_in_ego,
    collides,
    distance_to_box,
    lead_gap,
    step_ego,
)

CAMERA_SCHEMA = {
    "image": Field("uint8", (None, None, 3)),
    "K": Field("float64", (3, 3)),
    "T_cam_ego": Field("float64", (4, 4)),
}
LIDAR_SCHEMA = {"points": Field("float32", (None, 4))}
#: Sensors in the order their samples are emitted when due at the same instant.
SENSORS = ("ego", "lidar", "camera")
_MAX_DT_NS = 10_000_000  # ego kinematics integrate on a fixed grid of 10 ms


class DrivingSimulator(Source):
    """A scripted drive (``operators.driving.scenarios``) seen by a camera, a lidar and GPS-IMU.

    Inputs:
      ``control`` (feedback): payload with any of ``throttle`` and ``brake`` (in [0, 1])
      and ``steer`` (front-wheel angle, rad). Until a longitudinal command arrives the
      ego holds its speed; until a ``steer`` arrives it follows its lane (weaving
      slightly, as the scenario says). A command holds until the next one and acts
      from the current simulated time on.
    Outputs (``seq`` counts all of them together; ``frame`` counts per sensor):
      ``camera``: ``{"image": uint8 HxWx3 BGR, "K": 3x3, "T_cam_ego": 4x4, "frame"}``;
      truth: 2-D boxes, classes, sign classes, distances, visibility, lane polylines
      in the image, the ego's lateral offset (see ``camera.render``).
      ``lidar``: ``{"points": float32 Nx4 (x, y, z, intensity) in the ego frame,
      "frame"}``; truth: ``point_object`` (object id per point, -1 ground),
      ``object_ids``, ``kinds``, ``boxes3d`` (cx, cy, cz, l, w, h, yaw in the ego
      frame), ``distances``.
      ``ego``: ``{"speed" m/s, "yaw_rate" rad/s, "x", "y" m (world), "heading" rad,
      "frame"}`` with sensor noise; truth: the exact values plus ``s``,
      ``lateral_offset``, ``heading_error``, ``gap`` (m to the road user ahead in the
      lane, inf if none) and ``collision``.
    Parameters:
      ``scenario``: a name in ``SCENARIOS`` or a ``Scenario``; ``seed`` and
      ``held_out`` pick the variant of a named one and seed the sensor noise.
      ``poll_hz``: simulated seconds per poll (see the polling contract above).
      ``camera_hz`` / ``lidar_hz`` / ``ego_hz``: sensor rates.
      ``camera`` / ``lidar``: sensor models (default 640x360 camera, 32-beam lidar).
      ``noise``: add sensor noise (image noise, lidar range noise, GPS-IMU noise).
      ``source_id``: the messages' ``source`` (``""``: the runtime stamps it).

    Deterministic: the same arguments give identical messages; noise is drawn from
    generators seeded by ``(seed, sensor, frame)``, so ``snapshot()`` (simulated time,
    ego state, last command, frame counters) is all a restored copy needs to carry on
    identically.
    """

    inputs = (Port("control"),)
    outputs = (Port("camera", CAMERA_SCHEMA), Port("lidar", LIDAR_SCHEMA), Port("ego"))

    def __init__(
        self,
        scenario: str | Scenario = "car_following",
        *,
        seed: int = 0,
        held_out: bool = False,
        poll_hz: float = 30.0,
        camera_hz: float = 30.0,
        lidar_hz: float = 10.0,
        ego_hz: float = 50.0,
        camera: PinholeCamera | None = None,
        lidar: Lidar | None = None,
        noise: bool = True,
        source_id: str = "",
    ) -> None:
        rates = {"poll_hz": poll_hz, "camera_hz": camera_hz, "lidar_hz": lidar_hz,
                 "ego_hz": ego_hz}  # fmt: skip
        bad = {k: v for k, v in rates.items() if not v > 0}
        if bad:
            raise OperatorError(f"rates must be positive (Hz), got {bad}")
        self.scenario = scenario if isinstance(scenario, Scenario) else _named(scenario, seed,
                                                                              held_out)  # fmt: skip
        self.seed = seed
        self.poll_hz = float(poll_hz)
        self.rates = {"ego": float(ego_hz), "lidar": float(lidar_hz), "camera": float(camera_hz)}
        self.camera = camera or PinholeCamera()
        self.lidar = lidar or Lidar()
        self.noise = noise
        self.source_id = source_id
        self.duration_ns = round(self.scenario.duration_s * 1e9)
        # state (what snapshot() carries)
        self.polls = 0
        self.seq = 0
        self.frames = {name: 0 for name in SENSORS}
        self.ego_ns = 0
        self.ego = self._weave(self.scenario.ego, 0.0)
        self.yaw_rate = 0.0
        self.command: Control | None = None
        self.longitudinal = False
        self.lateral = False
        self._world: World | None = None
        self._operator = "driving-simulator"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_world": None}  # rebuilt from the scenario on demand

    @property
    def world(self) -> World:
        if self._world is None:
            self._world = self.scenario.world()
        return self._world

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        self._operator = ctx.operator
        _ = self.world

    def snapshot(self) -> dict[str, Any]:
        return {
            "polls": self.polls, "seq": self.seq, "frames": dict(self.frames),
            "ego_ns": self.ego_ns, "ego": self.ego, "yaw_rate": self.yaw_rate,
            "command": self.command, "longitudinal": self.longitudinal,
            "lateral": self.lateral,
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.polls, self.seq = int(state["polls"]), int(state["seq"])
        self.frames = {k: int(v) for k, v in state["frames"].items()}
        self.ego_ns, self.ego = int(state["ego_ns"]), state["ego"]
        self.yaw_rate = float(state["yaw_rate"])
        self.command = state["command"]
        self.longitudinal, self.lateral = bool(state["longitudinal"]), bool(state["lateral"])

    # -- feedback -------------------------------------------------------------------------
    def process(self, port: str, message: Message) -> Outputs:
        if port != "control":
            raise OperatorError(f"no input port {port!r}; the only one is 'control'",
                                operator=self._operator)  # fmt: skip
        p = message.payload
        known = {"throttle", "brake", "steer"} & set(p)
        if not known:
            raise OperatorError(
                f"control message {message.key} has none of throttle / brake / steer "
                f"(payload keys: {sorted(p)}); send e.g. {{'throttle': 0.2, 'brake': 0.0, "
                "'steer': 0.01}",
                operator=self._operator,
            )
        old = self.command or Control()
        self.command = Control(
            throttle=float(p.get("throttle", old.throttle if "brake" not in p else 0.0)),
            brake=float(p.get("brake", old.brake if "throttle" not in p else 0.0)),
            steer=float(p.get("steer", old.steer)),
        )
        self.longitudinal |= bool({"throttle", "brake"} & known)
        self.lateral |= "steer" in known
        return ()

    # -- producing ------------------------------------------------------------------------
    def poll(self, now: int) -> Outputs | None:
        start = _tick(self.polls, self.poll_hz)
        if start >= self.duration_ns:
            return None
        end = min(_tick(self.polls + 1, self.poll_hz), self.duration_ns)
        due = []
        for rank, name in enumerate(SENSORS):
            k = self.frames[name]
            while (ts := _tick(k, self.rates[name])) < end:
                due.append((ts, rank, name, k))
                k += 1
        out = []
        for ts, _, name, k in sorted(due):
            out.append((name, self._sample(name, k, ts)))
            self.frames[name] = k + 1
        self._advance(end)
        self.polls += 1
        return out

    def _sample(self, name: str, k: int, ts: int) -> Message:
        ego, yaw_rate = self._ego_at(ts)
        scene = self.world.scene(ts / 1e9, ego)
        rng = np.random.default_rng([self.seed, SENSORS.index(name), k])
        if name == "camera":
            light = self.scenario.lighting
            frame = render(
                self.camera, scene, brightness=light.brightness, contrast=light.contrast,
                noise=light.noise if self.noise else 0.0, rng=rng,
            )  # fmt: skip
            payload = {"image": frame.image, "K": np.array(self.camera.K),
                       "T_cam_ego": np.array(self.camera.T_cam_ego), "frame": k}  # fmt: skip
            truth = frame.truth
        elif name == "lidar":
            lidar = self.lidar if self.noise else replace(self.lidar, range_noise=0.0, dropout=0.0)
            points, ids = scan(lidar, scene, rng=rng)
            objs = [o for o in scene.objects if (ids == o.id).any()]
            payload = {"points": points, "frame": k}
            truth = {
                "point_object": ids,
                "object_ids": np.array([o.id for o in objs], np.int32),
                "kinds": np.array([o.kind for o in objs], dtype="<U10"),
                "boxes3d": np.array([box_in_ego(scene.pose, o) for o in objs],
                                    np.float32).reshape(-1, 7),
                "distances": np.array([distance_to_box(scene.pose, o) for o in objs], np.float32),
            }  # fmt: skip
        else:
            pose = scene.pose
            exact = {"speed": ego.v, "yaw_rate": yaw_rate, "x": pose.x, "y": pose.y,
                     "heading": pose.yaw}  # fmt: skip
            sigma = {"speed": 0.05, "yaw_rate": 0.002, "x": 0.3, "y": 0.3, "heading": 0.002}
            noisy = rng.normal(0.0, 1.0, len(exact)) if self.noise else np.zeros(len(exact))
            payload = {key: float(v + sigma[key] * e)
                       for (key, v), e in zip(exact.items(), noisy, strict=True)}  # fmt: skip
            payload["frame"] = k
            truth = {**exact, "s": ego.s, "lateral_offset": ego.d, "heading_error": ego.psi,
                     "accel": ego.accel, "gap": lead_gap(ego, scene.objects),
                     "collision": any(collides(ego, o) for o in scene.objects)}  # fmt: skip
        message = Message(self.source_id, self.seq, ts, payload, truth=truth)
        self.seq += 1
        return message

    # -- ego kinematics -------------------------------------------------------------------
    def _advance(self, until_ns: int) -> None:
        """Integrate the ego on a fixed 10 ms grid up to ``until_ns`` (rounded down to it).

        A fixed grid makes the trajectory independent of how polls cut simulated time.
        """
        while self.ego_ns + _MAX_DT_NS <= until_ns:
            self.ego, self.yaw_rate = self._step(self.ego, self.ego_ns, _MAX_DT_NS)
            self.ego_ns += _MAX_DT_NS

    def _ego_at(self, ts: int) -> tuple[EgoState, float]:
        """The ego and its yaw rate at ``ts`` (between grid points: stepped, not kept)."""
        self._advance(ts)
        if ts == self.ego_ns:
            return self.ego, self.yaw_rate
        return self._step(self.ego, self.ego_ns, ts - self.ego_ns)

    def _step(self, ego: EgoState, t_ns: int, step_ns: int) -> tuple[EgoState, float]:
        world = self.world
        dt = step_ns / 1e9
        kappa = world.curvature(ego.s)
        heading = world.ego_pose(ego).yaw
        if self.lateral and self.command is not None:
            steer = self.command.steer
        else:
            steer = math.atan(WHEELBASE * kappa)
        control = self.command if self.longitudinal else None
        after = step_ego(ego, dt=dt, kappa=kappa, control=control, steer=steer)
        if not self.lateral:
            after = self._weave(after, (t_ns + step_ns) / 1e9)
        return after, (world.ego_pose(after).yaw - heading) / dt

    def _weave(self, ego: EgoState, t: float) -> EgoState:
        """The ego at the lateral offset the scenario scripts while it is not steered."""
        amp, period = self.scenario.weave
        w = 2 * math.pi / period
        d = self.scenario.ego.d + amp * math.sin(w * t)
        psi = math.atan2(amp * w * math.cos(w * t), ego.v) if ego.v > 0.1 else 0.0
        return replace(ego, d=d, psi=psi)


def _tick(k: int, hz: float) -> int:
    """Time (ns) of the ``k``-th sample at ``hz``."""
    return round(k * 1e9 / hz)


def _named(name: str, seed: int, held_out: bool) -> Scenario:
    return scenario(name, seed=seed, held_out=held_out)
