"""A pinhole front camera that renders a ``Scene`` with OpenCV drawing, and its ground truth.

The camera looks forward from the windscreen, pitched slightly down. ``K`` is the
intrinsic matrix and ``T_cam_ego`` (4x4) takes ego-frame points (x forward, y left,
z up) to camera coordinates (x right, y down, z forward), so a pixel is
``K @ (T_cam_ego @ p)[:3]`` divided by its depth.

Rendering is painter's order: sky and ground, the road surface, lane markings (and
stop lines), then objects far to near (shaded 3-D boxes with windows and lights for
vehicles, a body and head for pedestrians, a pole and a plate drawn by GTSRB class
for signs); then lighting (gain and offset) and sensor noise.

>>> cam = PinholeCamera()
>>> cam.K.tolist()[0]
[480.0, 0.0, 320.0]
>>> u, v, z = cam.project_ego(np.array([[20.0, 0.0, 0.0]]))[0]
>>> round(float(u)), round(float(v)) > cam.horizon_v
(320, True)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from operators.driving.world import (
    DASH_ON,
    DASH_PERIOD,
    EgoPose,
    Scene,
    SceneObject,
    box_corners,
    distance_to_box,
)

_NEAR = 1.0  # m: nothing nearer the camera than this is drawn
_SHIFT = 4  # sub-pixel bits for OpenCV polygons
_ROAD = (92, 92, 92)
_MARK = {"white": (225, 225, 225), "yellow": (40, 195, 230)}
#: Lane polyline truth: boundary points this far (m) along the road ahead of the camera.
LANE_AHEAD = tuple(float(x) for x in np.arange(4.0, 62.0, 2.0))


@dataclass(frozen=True)
class PinholeCamera:
    """Image size, focal length and where the camera sits on the ego (``position``, ``pitch``)."""

    width: int = 640
    height: int = 360
    focal: float = 480.0
    position: tuple[float, float, float] = (-1.6, 0.0, 1.35)
    pitch: float = math.radians(3.0)
    K: np.ndarray = field(init=False, repr=False, compare=False)
    T_cam_ego: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = np.array(
            [[self.focal, 0, self.width / 2], [0, self.focal, self.height / 2], [0, 0, 1]],
            np.float64,
        )
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        rot = np.array([[0, -1, 0], [-s, 0, -c], [c, 0, -s]], np.float64)
        t = np.eye(4)
        t[:3, :3] = rot
        t[:3, 3] = -rot @ np.asarray(self.position)
        k.flags.writeable = False
        t.flags.writeable = False
        object.__setattr__(self, "K", k)
        object.__setattr__(self, "T_cam_ego", t)

    @property
    def horizon_v(self) -> float:
        """Image row of the horizon."""
        return self.height / 2 - self.focal * math.tan(self.pitch)

    def to_camera(self, ego_points: np.ndarray) -> np.ndarray:
        """Ego-frame points (N, 3) to camera coordinates (N, 3)."""
        return ego_points @ self.T_cam_ego[:3, :3].T + self.T_cam_ego[:3, 3]

    def project_ego(self, ego_points: np.ndarray) -> np.ndarray:
        """Ego-frame points (N, 3) to ``(u, v, depth)`` (N, 3); depth <= 0 is behind."""
        cam = self.to_camera(ego_points)
        z = cam[:, 2]
        zs = np.where(np.abs(z) < 1e-6, 1e-6, z)
        u = self.focal * cam[:, 0] / zs + self.width / 2
        v = self.focal * cam[:, 1] / zs + self.height / 2
        return np.stack([u, v, z], axis=1)

    def project_world(self, pose: EgoPose, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) to ``(u, v, depth)``."""
        return self.project_ego(pose.to_ego(points))


@dataclass(frozen=True)
class Rendered:
    """A rendered frame and its ground truth (see ``render``)."""

    image: np.ndarray
    truth: dict


def render(
    camera: PinholeCamera,
    scene: Scene,
    *,
    brightness: float = 0.0,
    contrast: float = 1.0,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Rendered:
    """Draw ``scene`` as the camera sees it (uint8 HxWx3 BGR) and compute its ground truth.

    Truth: ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` clipped to the image,
    ``classes`` (index into ``world.CLASSES``), ``kinds``, ``object_ids``,
    ``sign_classes`` (GTSRB id, -1 for non-signs), ``distances`` (m, ego front bumper
    to the nearest point of the box), ``visible`` (fraction of the object's
    silhouette not hidden by nearer objects); ``lanes`` (L, P, 2) float32 image points
    of each lane boundary at ``LANE_AHEAD`` metres ahead (NaN where not in view) with
    ``lane_painted`` (L, P: a dash or solid line is painted there), ``lane_kinds``,
    ``lane_offsets`` (m, boundary from the ego lane's centre); ``ego_offset`` (m, ego
    from its lane's centre, positive left), ``heading_error`` (rad), ``curvature`` (1/m).
    """
    img = _background(camera.height, camera.width, round(camera.horizon_v)).copy()
    _draw_road(img, camera, scene)
    objects, masks = _draw_objects(img, camera, scene)
    if contrast != 1.0 or brightness != 0.0:
        img = cv2.convertScaleAbs(img, alpha=contrast, beta=brightness)
    if noise > 0 and rng is not None:
        pos, neg = _noise_tiles(camera.height, camera.width, round(noise * 4) / 4)
        dy, dx = (int(x) for x in rng.integers(0, 32, 2))
        h, w = camera.height, camera.width
        cv2.add(img, pos[dy : dy + h, dx : dx + w], dst=img)
        cv2.subtract(img, neg[dy : dy + h, dx : dx + w], dst=img)
    return Rendered(img, {**_object_truth(objects, masks, camera), **_lane_truth(camera, scene)})


# -- background and road -------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _background(height: int, width: int, horizon: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    h = max(min(horizon, height), 1)
    t = np.linspace(0.0, 1.0, h)[:, None]
    sky = (1 - t) * np.array([200, 150, 110]) + t * np.array([235, 215, 195])
    img[:h] = sky[:, None, :].astype(np.uint8)
    img[h:] = (70, 120, 95)
    tree = max(h - max(height // 40, 3), 0)
    img[tree:h] = (60, 90, 60)
    img.flags.writeable = False
    return img


@functools.lru_cache(maxsize=8)
def _noise_tiles(height: int, width: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    n = np.random.default_rng(12345).normal(0.0, sigma, (height + 32, width + 32, 3))
    pos = np.clip(n, 0, 255).astype(np.uint8)
    neg = np.clip(-n, 0, 255).astype(np.uint8)
    return pos, neg


def _ahead(scene: Scene, camera: PinholeCamera) -> np.ndarray:
    """Arc lengths to sample: dense near the camera, coarser far away."""
    s_cam = scene.ego.s + camera.position[0]
    offsets = np.concatenate([np.arange(0.0, 30.0, 1.0), np.arange(30.0, 160.0, 4.0)])
    return s_cam + offsets


def _project_road(
    camera: PinholeCamera, scene: Scene, s: np.ndarray, d: float | np.ndarray
) -> np.ndarray:
    xy = scene.world.point(s, d)
    pts = np.concatenate([xy, np.zeros((*xy.shape[:-1], 1))], axis=-1)
    return camera.project_world(scene.pose, pts.reshape(-1, 3)).reshape(*xy.shape[:-1], 3)


def _fixed(uv: np.ndarray) -> np.ndarray:
    return np.clip(np.round(uv * (1 << _SHIFT)), -(1 << 26), 1 << 26).astype(np.int32)


def _strip(camera: PinholeCamera, scene: Scene, s: np.ndarray, d0: float, d1: float):
    """A road-fixed polygon between lateral offsets ``d0`` and ``d1`` over arc lengths ``s``."""
    a, b = _project_road(camera, scene, s, d0), _project_road(camera, scene, s, d1)
    ok = (a[:, 2] > _NEAR) & (b[:, 2] > _NEAR)
    if ok.sum() < 2:
        return None
    first = int(np.argmax(ok))
    last = first + int(np.argmin(ok[first:])) if not ok[first:].all() else len(ok)
    a, b = a[first:last], b[first:last]
    if len(a) < 2:
        return None
    return _fixed(np.concatenate([a[:, :2], b[::-1, :2]]))


def _draw_road(img: np.ndarray, camera: PinholeCamera, scene: Scene) -> None:
    road = scene.world.road
    s = _ahead(scene, camera)
    poly = _strip(camera, scene, s, road.left_edge, road.right_edge)
    if poly is not None:
        cv2.fillPoly(img, [poly], _ROAD, lineType=cv2.LINE_8, shift=_SHIFT)
    by_color: dict[str, list[np.ndarray]] = {"white": [], "yellow": []}
    for b in road.boundaries:
        d0, d1 = b.d - b.width / 2, b.d + b.width / 2
        if b.style == "solid":
            polys = [_strip(camera, scene, s, d0, d1)]
        else:
            polys = [_strip(camera, scene, np.linspace(a, a + DASH_ON, 3), d0, d1)
                     for a in _dashes(s[0], s[-1])]  # fmt: skip
        by_color[b.color] += [p for p in polys if p is not None]
    for sign in scene.world.signs:
        if sign.stop_line and s[0] < sign.s < s[-1]:
            line = _strip(camera, scene, np.array([sign.s - 0.5, sign.s]), -1.75, 1.75)
            if line is not None:
                by_color["white"].append(line)
    for color, polys in by_color.items():
        if polys:
            cv2.fillPoly(img, polys, _MARK[color], lineType=cv2.LINE_8, shift=_SHIFT)


def _dashes(s0: float, s1: float) -> list[float]:
    k0 = math.floor((s0 - DASH_ON) / DASH_PERIOD) + 1
    return [k * DASH_PERIOD for k in range(k0, math.floor(s1 / DASH_PERIOD) + 1)]


def painted(style: str, s: np.ndarray) -> np.ndarray:
    """Whether a boundary of ``style`` is painted at arc lengths ``s``."""
    if style == "solid":
        return np.ones(np.shape(s), bool)
    return np.mod(s, DASH_PERIOD) < DASH_ON


# -- objects -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Drawn:
    obj: SceneObject
    box: tuple[float, float, float, float]
    silhouette: np.ndarray  # fixed-point polygon, or (cx, cy, r) for a sign plate
    distance: float


def _draw_objects(img: np.ndarray, camera: PinholeCamera, scene: Scene):
    dist = {o.id: distance_to_box(scene.pose, o) for o in scene.objects}
    order = sorted(scene.objects, key=lambda o: -dist[o.id])
    drawn: list[_Drawn] = []
    mask = np.zeros(img.shape[:2], np.uint8)
    for obj in order:
        if dist[obj.id] > 150.0:
            continue
        if obj.kind == "sign":
            item = _draw_sign(img, camera, scene.pose, obj, dist[obj.id])
        else:
            item = _draw_box_object(img, camera, scene.pose, obj, dist[obj.id])
        if item is None:
            continue
        _fill_silhouette(mask, item, len(drawn) + 1)
        drawn.append(item)
    return drawn, mask


def _fill_silhouette(mask: np.ndarray, item: _Drawn, value: int, offset=(0, 0)) -> None:
    if item.obj.kind == "sign":
        cx, cy, r = item.silhouette
        cx, cy = cx - (offset[0] << _SHIFT), cy - (offset[1] << _SHIFT)
        cv2.circle(mask, (cx, cy), r, value, -1, shift=_SHIFT)
    else:
        shift = np.array(offset, np.int32) * (1 << _SHIFT)
        cv2.fillConvexPoly(mask, item.silhouette - shift, value, shift=_SHIFT)


def _clip_box(camera: PinholeCamera, x0, y0, x1, y1):
    box = (max(x0, 0.0), max(y0, 0.0), min(x1, camera.width), min(y1, camera.height))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box


def _shade(color, k: float) -> tuple[int, int, int]:
    return tuple(int(min(max(c * k, 0), 255)) for c in color)


# Faces of a box as corner indices (bottom i, j; top j+4, i+4) and their shading.
_SIDES = ((0, 1), (1, 2), (2, 3), (3, 0))  # left, rear, right, front
_SIDE_SHADE = (0.85, 0.7, 0.85, 0.8)


def _draw_box_object(img, camera: PinholeCamera, pose: EgoPose, obj: SceneObject, dist):
    corners = box_corners(obj)
    uvz = camera.project_world(pose, corners)
    if (uvz[:, 2] < _NEAR).any():
        return None
    box = _clip_box(camera, uvz[:, 0].min(), uvz[:, 1].min(), uvz[:, 0].max(), uvz[:, 1].max())
    if box is None:
        return None
    cam = camera.to_camera(pose.to_ego(corners))
    centre = cam.mean(axis=0)
    fixed = _fixed(uvz[:, :2])
    hull = cv2.convexHull(fixed)
    ped = obj.kind == "pedestrian"
    if not ped:  # shadow under the vehicle
        cv2.fillConvexPoly(img, fixed[:4], (35, 35, 35), shift=_SHIFT)
    faces = [((i, j, j + 4, i + 4), shade, n) for n, ((i, j), shade) in
             enumerate(zip(_SIDES, _SIDE_SHADE, strict=True))]  # fmt: skip
    for (i, j, k, m), shade, n in faces:
        fc = cam[[i, j, k, m]].mean(axis=0)
        if np.dot(fc - centre, fc) >= 0:  # faces away from the camera
            continue
        quad = fixed[[i, j, k, m]]
        cv2.fillConvexPoly(img, quad, _shade(obj.color, shade), shift=_SHIFT)
        if ped:
            legs = _subquad(uvz, (i, j, k, m), 0.1, 0.9, 0.0, 0.45)
            cv2.fillConvexPoly(img, legs, (50, 45, 40), shift=_SHIFT)
            continue
        glass = (0.15, 0.85, 0.55, 0.9) if n in (1, 3) else (0.25, 0.85, 0.55, 0.9)
        cv2.fillConvexPoly(img, _subquad(uvz, (i, j, k, m), *glass), (60, 50, 45), shift=_SHIFT)
        if n == 1:  # rear: tail lights
            for u0 in (0.05, 0.8):
                lamp = _subquad(uvz, (i, j, k, m), u0, u0 + 0.15, 0.35, 0.47)
                cv2.fillConvexPoly(img, lamp, (30, 30, 210), shift=_SHIFT)
    top = np.dot(cam[4:].mean(axis=0) - centre, cam[4:].mean(axis=0)) < 0
    if top and not ped:
        cv2.fillConvexPoly(img, fixed[4:], _shade(obj.color, 1.05), shift=_SHIFT)
    if ped:  # head
        head = np.array([obj.center[0], obj.center[1], obj.size[2] + 0.1])[None]
        u, v, z = camera.project_world(pose, head)[0]
        r = max(camera.focal * 0.12 / z, 1.0)
        cv2.circle(img, tuple(_fixed(np.array([u, v]))), int(r * (1 << _SHIFT)), (110, 150, 200),
                   -1, shift=_SHIFT)  # fmt: skip
        box = _clip_box(camera, box[0], min(box[1], v - r), box[2], box[3]) or box
    return _Drawn(obj, box, hull.reshape(-1, 2), dist)


def _subquad(uvz: np.ndarray, idx, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """Fixed-point corners of the part ``[u0, u1] x [v0, v1]`` of a face (bilinear in image)."""
    i, j, k, m = (uvz[n, :2] for n in idx)

    def at(u: float, v: float) -> np.ndarray:
        bottom, top = i + (j - i) * u, m + (k - m) * u
        return bottom + (top - bottom) * v

    return _fixed(np.array([at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)]))


# -- signs ---------------------------------------------------------------------------------
_RED, _WHITE, _BLACK = (30, 30, 200), (245, 245, 245), (20, 20, 20)
_BLUE, _YELLOW, _GREY = (170, 80, 20), (30, 200, 235), (110, 110, 110)
_SPEEDS = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}
_WARNINGS = (11, *range(18, 32))  # red-rimmed triangles pointing up, a pictogram inside
_ENDS = (6, 32, 41, 42)  # white discs, grey rim, diagonal stripes


def _draw_sign(img, camera: PinholeCamera, pose: EgoPose, obj: SceneObject, dist):
    x, y = obj.center[:2]
    pts = np.array([[x, y, 0.0], [x, y, obj.plate]])
    (u0, v0, z0), (u, v, z) = camera.project_world(pose, pts)
    if z < _NEAR + 1.0 or z0 < _NEAR:
        return None
    r = camera.focal * obj.plate_size / 2 / z
    box = _clip_box(camera, u - r, v - r, u + r, v + r)
    if box is None or r < 1.5:
        return None
    pole = max(round(camera.focal * 0.07 / z), 1)
    cv2.line(img, (round(u0), round(v0)), (round(u), round(v)), (120, 120, 125), pole)
    draw_plate(img, obj.gtsrb, u, v, r)
    c = _fixed(np.array([u, v]))
    return _Drawn(obj, box, np.array([c[0], c[1], int(r * (1 << _SHIFT))]), dist)


def draw_plate(img: np.ndarray, cls: int, u: float, v: float, r: float) -> None:
    """Draw GTSRB class ``cls`` as a plate of radius ``r`` pixels centred at ``(u, v)``.

    Every one of the 43 classes has its own look (shape, colours and a simple pictogram),
    so a classifier trained on these renderings can tell them apart.
    """
    centre = tuple(_fixed(np.array([u, v])))
    rf = int(r * (1 << _SHIFT))
    pen = _Pen(img, u, v, r)
    if cls == 14:  # stop: red octagon, STOP
        ang = np.radians(22.5 + 45 * np.arange(8))
        oct_ = _fixed(np.c_[u + r * np.cos(ang), v + r * np.sin(ang)])
        cv2.fillConvexPoly(img, oct_, _RED, shift=_SHIFT)
        _text(img, "STOP", u, v, r * 1.5, _WHITE)
    elif cls == 13 or cls in _WARNINGS:  # triangles: yield points down, warnings up
        down = cls == 13
        ang = np.radians([90, 210, 330]) if down else np.radians([270, 30, 150])
        tri = np.c_[u + r * np.cos(ang), v + r * np.sin(ang)]
        cv2.fillConvexPoly(img, _fixed(tri), _RED, shift=_SHIFT)
        inner = (tri - [u, v]) * (0.6 if down else 0.72) + [u, v]
        cv2.fillConvexPoly(img, _fixed(inner), _WHITE, shift=_SHIFT)
        if not down:  # the pictogram, scaled into the white triangle
            _Pen(img, u, v - 0.05 * r, 0.75 * r).draw(_WARNING_GLYPHS[cls])
    elif cls == 12:  # priority road: yellow diamond
        ang = np.radians([0, 90, 180, 270])
        dia = np.c_[u + r * np.cos(ang), v + r * np.sin(ang)]
        cv2.fillConvexPoly(img, _fixed(dia), _WHITE, shift=_SHIFT)
        cv2.fillConvexPoly(img, _fixed((dia - [u, v]) * 0.65 + [u, v]), _YELLOW, shift=_SHIFT)
    elif cls == 17:  # no entry: red disc, white bar
        cv2.circle(img, centre, rf, _RED, -1, shift=_SHIFT)
        pen.box(-0.7, -0.18, 0.7, 0.18, _WHITE)
    elif 33 <= cls <= 40:  # mandatory: blue disc, white arrows
        cv2.circle(img, centre, rf, _BLUE, -1, shift=_SHIFT)
        pen.draw(_MANDATORY_GLYPHS[cls])
    elif cls in _ENDS:  # end of a limit: white disc, grey rim, stripes
        cv2.circle(img, centre, rf, _GREY, -1, shift=_SHIFT)
        cv2.circle(img, centre, int(rf * 0.9), _WHITE, -1, shift=_SHIFT)
        pen.draw(_END_GLYPHS[cls])
    else:  # prohibitions and speed limits: white disc, red ring, a number or pictogram
        cv2.circle(img, centre, rf, _RED, -1, shift=_SHIFT)
        cv2.circle(img, centre, int(rf * 0.78), _WHITE, -1, shift=_SHIFT)
        if cls in _SPEEDS:
            _text(img, _SPEEDS[cls], u, v, r * 1.25, _BLACK)
        else:
            pen.draw(_PROHIBITION_GLYPHS[cls])


class _Pen:
    """Draws in plate units: ``(x, y)`` in [-1, 1] from the plate's centre, widths times ``r``."""

    def __init__(self, img: np.ndarray, u: float, v: float, r: float) -> None:
        self.img, self.u, self.v, self.r = img, u, v, r

    def _pts(self, pts) -> np.ndarray:
        return _fixed(np.asarray(pts, np.float64) * self.r + [self.u, self.v])

    def _width(self, w: float) -> int:
        return max(round(w * self.r), 1)

    def line(self, pts, w: float, color=_BLACK) -> None:
        cv2.polylines(self.img, [self._pts(pts)], False, color, self._width(w), cv2.LINE_AA,
                      shift=_SHIFT)  # fmt: skip

    def arrow(self, a, b, w: float, color=_WHITE) -> None:
        (x0, y0), (x1, y1) = self._pts([a, b])
        cv2.arrowedLine(self.img, (int(x0), int(y0)), (int(x1), int(y1)), color, self._width(w),
                        cv2.LINE_AA, shift=_SHIFT, tipLength=0.45)  # fmt: skip

    def box(self, x0: float, y0: float, x1: float, y1: float, color=_BLACK) -> None:
        cv2.fillConvexPoly(self.img, self._pts([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), color,
                           shift=_SHIFT)  # fmt: skip

    def dot(self, x: float, y: float, radius: float, color=_BLACK) -> None:
        ((cx, cy),) = self._pts([[x, y]])
        cv2.circle(self.img, (int(cx), int(cy)), int(radius * self.r * (1 << _SHIFT)), color, -1,
                   cv2.LINE_AA, shift=_SHIFT)  # fmt: skip

    def text(self, text: str, width: float, color) -> None:
        _text(self.img, text, self.u, self.v, width * self.r, color)

    def draw(self, glyph: tuple) -> None:
        """Draw each stroke ``(method, *arguments)`` of ``glyph``."""
        for name, *args in glyph:
            getattr(self, name)(*args)


# A glyph is a tuple of strokes, each ``(pen method, *arguments)``, drawn in order.
def _car(x: float, y: float, size: float, color=_BLACK) -> tuple:
    return (("box", x - 0.5 * size, y - 0.25 * size, x + 0.5 * size, y + 0.35 * size, color),)


def _truck(x: float, y: float, size: float, color=_BLACK) -> tuple:
    return (
        ("box", x - 0.6 * size, y - 0.45 * size, x + 0.25 * size, y + 0.35 * size, color),
        ("box", x + 0.3 * size, y - 0.15 * size, x + 0.6 * size, y + 0.35 * size, color),
    )


def _person(x: float, y: float, size: float) -> tuple:
    legs = [[x - 0.3 * size, y + 0.7 * size], [x, y + 0.2 * size], [x + 0.3 * size, y + 0.7 * size]]
    return (
        ("dot", x, y - 0.55 * size, 0.18 * size),
        ("line", [[x, y - 0.35 * size], [x, y + 0.2 * size]], 0.2 * size),
        ("line", legs, 0.15 * size),
    )


_DARK = (60, 60, 60)
_STRIPE = (("line", [[-0.6, 0.6], [0.6, -0.6]], 0.08, _DARK),)

#: Warning pictograms, black inside the white triangle (x about -0.35..0.35, y -0.25..0.45).
_WARNING_GLYPHS: dict[int, tuple] = {
    11: (("line", [[0, -0.2], [0, 0.45]], 0.14), ("line", [[-0.25, 0.1], [0.25, 0.1]], 0.1)),
    18: (("line", [[0, -0.15], [0, 0.22]], 0.12), ("dot", 0, 0.36, 0.07)),
    19: (("line", [[0.1, 0.45], [0.1, 0.1], [-0.05, -0.1], [-0.2, -0.15]], 0.1),),
    20: (("line", [[-0.1, 0.45], [-0.1, 0.1], [0.05, -0.1], [0.2, -0.15]], 0.1),),
    21: (("line", [[-0.05, 0.45], [0.12, 0.25], [-0.12, 0.05], [0.05, -0.18]], 0.09),),
    22: (("line", [[-0.35, 0.38], [-0.2, 0.2], [-0.05, 0.38], [0.1, 0.2], [0.25, 0.38]], 0.08),),
    23: (
        *_car(0, 0.0, 0.3),
        ("line", [[-0.25, 0.38], [-0.1, 0.2]], 0.06),
        ("line", [[0.25, 0.38], [0.1, 0.2]], 0.06),
    ),
    24: (
        ("line", [[-0.12, 0.45], [-0.12, -0.15]], 0.07),
        ("line", [[0.2, 0.45], [0.2, 0.15], [0.05, -0.05], [0.05, -0.15]], 0.07),
    ),
    25: (
        ("dot", -0.02, -0.08, 0.06),
        ("line", [[-0.05, 0.02], [0.05, 0.28], [-0.1, 0.42]], 0.08),
        ("line", [[0.1, 0.1], [0.25, 0.4]], 0.05),
        ("box", 0.12, 0.36, 0.33, 0.44),
    ),
    26: (
        ("box", -0.11, -0.18, 0.11, 0.44),
        ("dot", 0, -0.09, 0.07, _RED),
        ("dot", 0, 0.12, 0.07, _YELLOW),
        ("dot", 0, 0.33, 0.07, (40, 170, 40)),
    ),
    27: _person(0, 0.1, 0.5),
    28: (*_person(-0.12, 0.15, 0.45), *_person(0.14, 0.2, 0.35)),
    29: (
        ("dot", -0.17, 0.3, 0.11),
        ("dot", 0.17, 0.3, 0.11),
        ("dot", -0.17, 0.3, 0.06, _WHITE),
        ("dot", 0.17, 0.3, 0.06, _WHITE),
        ("line", [[-0.17, 0.3], [0, 0.1], [0.17, 0.3]], 0.05),
    ),
    30: (
        ("line", [[0, -0.1], [0, 0.42]], 0.06),
        ("line", [[-0.23, 0.02], [0.23, 0.3]], 0.06),
        ("line", [[-0.23, 0.3], [0.23, 0.02]], 0.06),
    ),
    31: (
        ("line", [[-0.25, 0.2], [0.15, 0.05], [0.25, -0.1]], 0.12),
        ("line", [[-0.2, 0.2], [-0.28, 0.42]], 0.05),
        ("line", [[0.1, 0.1], [0.2, 0.42]], 0.05),
    ),
}

#: Mandatory directions, white arrows on the blue disc.
_MANDATORY_GLYPHS: dict[int, tuple] = {
    33: (
        ("line", [[-0.25, 0.55], [-0.25, -0.1]], 0.16, _WHITE),
        ("arrow", [-0.3, -0.1], [0.55, -0.1], 0.16),
    ),
    34: (
        ("line", [[0.25, 0.55], [0.25, -0.1]], 0.16, _WHITE),
        ("arrow", [0.3, -0.1], [-0.55, -0.1], 0.16),
    ),
    35: (("arrow", [0, 0.6], [0, -0.6], 0.18),),
    36: (("arrow", [-0.15, 0.6], [-0.15, -0.6], 0.14), ("arrow", [-0.15, 0.1], [0.55, 0.1], 0.12)),
    37: (("arrow", [0.15, 0.6], [0.15, -0.6], 0.14), ("arrow", [0.15, 0.1], [-0.55, 0.1], 0.12)),
    38: (("arrow", [-0.4, -0.4], [0.45, 0.45], 0.18),),
    39: (("arrow", [0.4, -0.4], [-0.45, 0.45], 0.18),),
    40: (
        ("arrow", [0.45, 0.2], [0.05, 0.5], 0.12),
        ("arrow", [-0.05, 0.45], [-0.4, -0.15], 0.12),
        ("arrow", [-0.3, -0.35], [0.4, -0.3], 0.12),
    ),
}

#: Ends of limits, grey on the white disc, crossed by stripes (6 also writes a grey 80).
_END_GLYPHS: dict[int, tuple] = {
    6: (("text", "80", 1.1, _GREY), *_STRIPE),
    32: tuple(
        ("line", [[-0.7 + k, 0.5 + k], [0.5 + k, -0.7 + k]], 0.07, _DARK) for k in (-0.1, 0.05, 0.2)
    ),
    41: (*_car(-0.28, 0.0, 0.38, _GREY), *_car(0.28, 0.0, 0.38, _DARK), *_STRIPE),
    42: (*_truck(-0.25, 0.0, 0.45, _GREY), *_car(0.32, 0.05, 0.3, _DARK), *_STRIPE),
}

#: Prohibitions inside the red ring (15, "no vehicles", stays empty).
_PROHIBITION_GLYPHS: dict[int, tuple] = {
    9: (*_car(-0.25, 0.0, 0.38), *_car(0.25, 0.0, 0.38, _RED)),
    10: (*_truck(-0.22, 0.0, 0.45), *_car(0.3, 0.05, 0.3, _RED)),
    15: (),
    16: _truck(0.0, 0.05, 0.7),
}


def _text(img: np.ndarray, text: str, u: float, v: float, width: float, color) -> None:
    """``text`` centred at ``(u, v)``, scaled to about ``width`` pixels wide."""
    if width < 6:
        return
    base, _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
    scale = width / base[0]
    thick = max(round(scale * 2), 1)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    org = (round(u - tw / 2), round(v + th / 2))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


# -- ground truth --------------------------------------------------------------------------
def _object_truth(drawn: list[_Drawn], mask: np.ndarray, camera: PinholeCamera) -> dict:
    counts = np.bincount(mask.ravel(), minlength=len(drawn) + 1)
    visible = []
    for n, item in enumerate(drawn, start=1):
        x0, y0 = int(item.box[0]), int(item.box[1])
        x1, y1 = math.ceil(item.box[2]), math.ceil(item.box[3])
        alone = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        _fill_silhouette(alone, item, 1, offset=(x0, y0))
        total = int(np.count_nonzero(alone))
        visible.append(min(counts[n] / total, 1.0) if total else 0.0)
    return {
        "boxes": np.array([d.box for d in drawn], np.float32).reshape(-1, 4),
        "classes": np.array([d.obj.class_id for d in drawn], np.int32),
        "kinds": np.array([d.obj.kind for d in drawn], dtype="<U10"),
        "object_ids": np.array([d.obj.id for d in drawn], np.int32),
        "sign_classes": np.array([d.obj.gtsrb for d in drawn], np.int32),
        "distances": np.array([d.distance for d in drawn], np.float32),
        "visible": np.array(visible, np.float32),
    }


def _lane_truth(camera: PinholeCamera, scene: Scene) -> dict:
    road = scene.world.road
    s = scene.ego.s + camera.position[0] + np.array(LANE_AHEAD)
    lanes, flags = [], []
    for b in road.boundaries:
        uvz = _project_road(camera, scene, s, b.d)
        inside = (
            (uvz[:, 2] > _NEAR) & (uvz[:, 0] >= 0) & (uvz[:, 0] < camera.width)
            & (uvz[:, 1] >= 0) & (uvz[:, 1] < camera.height)
        )  # fmt: skip
        uv = np.where(inside[:, None], uvz[:, :2], np.nan)
        lanes.append(uv)
        flags.append(painted(b.style, s) & inside)
    ego = scene.ego
    return {
        "lanes": np.array(lanes, np.float32).reshape(-1, len(s), 2),
        "lane_painted": np.array(flags, bool).reshape(-1, len(s)),
        "lane_kinds": np.array([b.kind for b in road.boundaries], dtype="<U12"),
        "lane_offsets": np.array([b.d - ego.d for b in road.boundaries], np.float32),
        "ego_offset": float(ego.d),
        "heading_error": float(ego.psi),
        "curvature": scene.world.curvature(ego.s),
    }
