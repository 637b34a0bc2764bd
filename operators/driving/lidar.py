"""A spinning lidar: rays cast against the ground plane and the objects' boxes of a ``Scene``.

Points are returned in the *ego* frame (x forward, y left, z up, origin at the front
bumper on the ground) as float32 ``(x, y, z, intensity)``, with the id of the object
each point hit (``-1``: the ground). Intensity is a reflectivity in [0, 1]: asphalt
low, lane paint and vehicles higher, signs (retro-reflective) highest.

>>> from operators.driving.scenarios import scenario
>>> sc = scenario("car_following")
>>> world = sc.world()
>>> points, ids = scan(Lidar(), world.scene(0.0, sc.ego), rng=np.random.default_rng(0))
>>> points.dtype, points.shape[1], bool((ids >= 0).any())
(dtype('float32'), 4, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from operators.driving.camera import painted
from operators.driving.world import Scene, SceneObject

_REFLECT = {"car": 0.5, "truck": 0.45, "pedestrian": 0.3, "sign": 0.95}


@dataclass(frozen=True)
class Lidar:
    """Mounting ``position`` (ego frame), beams (elevation range, degrees), azimuth step."""

    position: tuple[float, float, float] = (-1.2, 0.0, 1.9)
    beams: int = 32
    elevation: tuple[float, float] = (-22.0, 4.0)
    azimuth_step: float = 0.5
    max_range: float = 100.0
    range_noise: float = 0.02
    dropout: float = 0.01
    directions: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        el = np.radians(np.linspace(*self.elevation, self.beams))
        az = np.radians(np.arange(0.0, 360.0, self.azimuth_step))
        el, az = np.meshgrid(el, az, indexing="ij")
        d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
        d = d.reshape(-1, 3)
        d.flags.writeable = False
        object.__setattr__(self, "directions", d)


def scan(lidar: Lidar, scene: Scene, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One sweep: ``(points (N, 4) float32, object ids (N,) int32)`` in the ego frame."""
    o = np.asarray(lidar.position, np.float64)
    d = lidar.directions
    n = len(d)
    t = np.full(n, np.inf)
    hit = np.full(n, -1, np.int32)
    down = d[:, 2] < -1e-9
    t[down] = -o[2] / d[down, 2]
    kind = np.zeros(n, np.int8)  # 0 ground, else index + 1 into the objects
    objects = [ob for ob in scene.objects if _near(scene, ob, lidar.max_range + 10)]
    for k, ob in enumerate(objects):
        for centre, half, yaw in _boxes(scene, ob):
            tb = _slab(o, d, centre, half, yaw)
            closer = tb < t
            t[closer] = tb[closer]
            hit[closer] = ob.id
            kind[closer] = k + 1
    keep = t < lidar.max_range
    keep &= rng.random(n) >= lidar.dropout
    t, d, hit, kind = t[keep], d[keep], hit[keep], kind[keep]
    r = t + rng.normal(0.0, lidar.range_noise, len(t))
    xyz = o + d * r[:, None]
    intensity = _ground_intensity(scene, xyz)
    refl = np.array([0.0] + [_REFLECT.get(ob.kind, 0.4) for ob in objects])
    intensity = np.where(kind > 0, refl[kind], intensity)
    intensity = np.clip(intensity + rng.normal(0.0, 0.02, len(t)), 0.0, 1.0)
    points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
    return points, hit


def _near(scene: Scene, ob: SceneObject, reach: float) -> bool:
    return math.hypot(ob.center[0] - scene.pose.x, ob.center[1] - scene.pose.y) < reach


def _boxes(scene: Scene, ob: SceneObject):
    """The boxes a lidar sees of one object, in the ego frame: ``(centre, half sizes, yaw)``."""
    pose = scene.pose
    centre = pose.to_ego(np.array(ob.center))
    yaw = ob.yaw - pose.yaw
    if ob.kind != "sign":
        yield centre, np.array(ob.size) / 2, yaw
        return
    plate = ob.plate_size
    yield np.array([*centre[:2], ob.plate]), np.array([0.03, plate / 2, plate / 2]), yaw
    pole = ob.plate - plate / 2
    yield np.array([*centre[:2], pole / 2]), np.array([0.04, 0.04, pole / 2]), yaw


def _slab(o: np.ndarray, d: np.ndarray, centre: np.ndarray, half: np.ndarray, yaw: float):
    """Ray parameter of the first hit of rays ``o + t d`` with an oriented box (inf: none)."""
    c, s = math.cos(yaw), math.sin(yaw)
    rel = o - centre
    ol = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
    dl = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t1 = (-half - ol) * inv
        t2 = (half - ol) * inv
    tmin = np.minimum(t1, t2).max(axis=1)
    tmax = np.maximum(t1, t2).min(axis=1)
    ok = (tmax >= tmin) & (tmin > 0)
    return np.where(ok, tmin, np.inf)


def _ground_intensity(scene: Scene, xyz: np.ndarray) -> np.ndarray:
    """Asphalt, lane paint or verge, from each ground point's approximate road coordinates."""
    ego = scene.ego
    kappa = scene.world.curvature(ego.s)
    x, y = xyz[:, 0], xyz[:, 1]
    d = ego.d + y + ego.psi * x - kappa * x * x / 2
    s = ego.s + x
    road = scene.world.road
    out = np.where((d < road.left_edge) & (d > road.right_edge), 0.1, 0.25)
    for b in road.boundaries:
        on = (np.abs(d - b.d) < b.width / 2) & painted(b.style, s)
        out = np.where(on, 0.6, out)
    return out
