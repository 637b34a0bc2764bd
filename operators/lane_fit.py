"""Lane geometry kernels: bird's-eye view, colour / edge thresholds, sliding windows, fits.

Pure functions of images and numbers; ``operators.lanes.LaneDetector`` composes them.

Coordinates. The bird's-eye view (``BirdsEye``) is a top-down image of the road ahead;
``u`` grows to the right, ``v`` downwards (towards the vehicle). Each lane line is a
polynomial ``u = a * v**2 + b * v + c`` in bird's-eye pixels. Metric road coordinates
are ``F`` (metres forward of the vehicle's reference point) and ``L`` (metres to the
left): ``F = (v0 - v) * ym_per_px``, ``L = (u0 - u) * xm_per_px`` where ``(u0, v0)`` is
the reference point in bird's-eye pixels (it may lie below the bottom row).

>>> view = birdseye_from_camera(
...     np.array([[480.0, 0, 320], [0, 480, 180], [0, 0, 1]]), _simulator_T(), (640, 360))
>>> round(view.xm_per_px, 3), round(view.ym_per_px, 3), view.size
(0.025, 0.05, (400, 540))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Image-relative source trapezoid for real dash-cam frames (fractions of width, height):
#: top-left, top-right, bottom-right, bottom-left. It covers the ego lane of the
#: Udacity cameras (the usual 1280x720 course trapezoid, scaled).
DEFAULT_SRC = ((0.455, 0.64), (0.545, 0.64), (0.88, 0.95), (0.16, 0.95))
#: The usual lane width (m), US highways: scales real frames, where no geometry is known.
LANE_WIDTH_M = 3.7


@dataclass(frozen=True)
class BirdsEye:
    """A perspective transform from the camera image to a top-down view of the road.

    ``src``: four image points (x, y) of a ground trapezoid; ``dst``: where they land in
    the bird's-eye image of ``size`` (width, height); ``xm_per_px`` / ``ym_per_px``:
    metres per bird's-eye pixel across / along the road; ``origin``: the vehicle's
    reference point ``(u0, v0)`` in bird's-eye pixels (``F = 0``, ``L = 0``).
    """

    src: tuple[tuple[float, float], ...]
    dst: tuple[tuple[float, float], ...]
    size: tuple[int, int]
    xm_per_px: float
    ym_per_px: float
    origin: tuple[float, float]
    M: np.ndarray = field(init=False, repr=False, compare=False)
    Minv: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src, dst = np.float32(self.src), np.float32(self.dst)
        object.__setattr__(self, "M", cv2.getPerspectiveTransform(src, dst))
        object.__setattr__(self, "Minv", cv2.getPerspectiveTransform(dst, src))

    def warp(self, image: np.ndarray) -> np.ndarray:
        """``image`` (camera view) seen from above, ``size`` pixels."""
        return cv2.warpPerspective(image, self.M, self.size, flags=cv2.INTER_LINEAR)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Bird's-eye points (N, 2) to camera-image points (N, 2) float32."""
        if len(points) == 0:
            return np.zeros((0, 2), np.float32)
        pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.Minv).reshape(-1, 2).astype(np.float32)

    def metric(self, fit: np.ndarray) -> np.ndarray:
        """A bird's-eye fit ``u(v)`` as ``L(F)``: coefficients (highest power first), metres."""
        u0, v0 = self.origin
        v_of_f = np.poly1d([-1.0 / self.ym_per_px, v0])
        u_of_f = np.poly1d(fit)(v_of_f)
        return (self.xm_per_px * (u0 - u_of_f)).coeffs


def default_birdseye(
    width: int,
    height: int,
    *,
    src: tuple[tuple[float, float], ...] = DEFAULT_SRC,
    lane_width_m: float = LANE_WIDTH_M,
    length_m: float = 30.0,
) -> BirdsEye:
    """The image-relative view for real frames of ``width`` x ``height``.

    ``src``: the trapezoid as fractions of the image; its bottom corners are taken to lie
    on the ego lane's lines, so the lane is half the bird's-eye width and
    ``xm_per_px = lane_width_m / (width / 2)``; ``length_m``: road length the view covers
    (``ym_per_px = length_m / height``). The vehicle is at the bottom row's centre.
    """
    pts = tuple((x * width, y * height) for x, y in src)
    dst = ((0.25 * width, 0.0), (0.75 * width, 0.0), (0.75 * width, height), (0.25 * width, height))
    return BirdsEye(pts, dst, (width, height), lane_width_m / (0.5 * width), length_m / height,
                    (width / 2, float(height)))  # fmt: skip


def birdseye_from_camera(
    K: np.ndarray,
    T_cam_ego: np.ndarray,
    image_size: tuple[int, int],
    *,
    near_m: float = 3.0,
    far_m: float = 30.0,
    half_width_m: float = 5.0,
    px_per_m: tuple[float, float] = (40.0, 20.0),
) -> BirdsEye:
    """The exact view of a calibrated camera over flat ground (ego frame: x fwd, y left, z up).

    ``K``: 3x3 intrinsics; ``T_cam_ego``: 4x4 ego -> camera (x right, y down, z fwd);
    ``image_size``: (width, height), only used to check the ground is in front. The view
    covers ``near_m`` .. ``far_m`` ahead of the ego origin and ``half_width_m`` either
    side, at ``px_per_m`` (across, along) pixels per metre; the origin is the ego origin.
    """
    ground = np.array([[far_m, half_width_m], [far_m, -half_width_m],
                       [near_m, -half_width_m], [near_m, half_width_m]])  # fmt: skip
    pts = np.c_[ground, np.zeros(4), np.ones(4)] @ np.asarray(T_cam_ego, np.float64).T
    if (pts[:, 2] <= 0).any():
        raise ValueError(f"the ground {near_m}..{far_m} m ahead is behind the camera")
    uvw = pts[:, :3] @ np.asarray(K, np.float64).T
    src = tuple((float(u / w), float(v / w)) for u, v, w in uvw)
    kx, kf = px_per_m
    width, height = round(2 * half_width_m * kx), round((far_m - near_m) * kf)
    xm, ym = 1.0 / kx, 1.0 / kf
    u0, v0 = width / 2, height + near_m / ym
    dst = tuple((u0 - y / xm, v0 - x / ym) for x, y in ground)
    return BirdsEye(src, dst, (width, height), xm, ym, (u0, v0))


def _simulator_T() -> np.ndarray:
    """The simulator's default camera pose (for the doctest)."""
    c, s = math.cos(math.radians(3.0)), math.sin(math.radians(3.0))
    rot = np.array([[0, -1, 0], [-s, 0, -c], [c, 0, -s]], np.float64)
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = -rot @ np.array([-1.6, 0.0, 1.35])
    return t


@dataclass(frozen=True)
class ThresholdParams:
    """Colour and edge thresholds of ``lane_pixels`` (OpenCV HLS: H 0..180, L and S 0..255).

    ``white_l``: lightness of white paint (also at least ``white_rel`` above the road's
    median lightness, so a bright road does not pass); ``yellow_h``: hue range of yellow,
    with saturation at least ``yellow_s``; ``sobel``: range of the scaled horizontal
    gradient of lightness (0..255) that also counts, where ``L`` is above the median.
    """

    white_l: int = 190
    white_rel: int = 60
    yellow_h: tuple[int, int] = (12, 35)
    yellow_s: int = 90
    sobel: tuple[int, int] = (35, 255)


def lane_pixels(image: np.ndarray, params: ThresholdParams = ThresholdParams()) -> np.ndarray:
    """A uint8 mask (0 / 1) of likely lane-paint pixels in a BGR image.

    White (high lightness, well above the median), yellow (hue and saturation in HLS),
    or a strong horizontal lightness gradient on a bright pixel.
    """
    hls = cv2.cvtColor(image, cv2.COLOR_BGR2HLS)
    h, light, s = hls[..., 0], hls[..., 1], hls[..., 2]
    median = float(np.median(light[light.shape[0] // 2 :]))
    white = light >= max(
        min(params.white_l, median + 2 * params.white_rel), median + params.white_rel
    )
    yellow = (h >= params.yellow_h[0]) & (h <= params.yellow_h[1]) & (s >= params.yellow_s)
    yellow &= light >= median * 0.8
    gx = np.abs(cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3))
    scaled = gx * (255.0 / max(float(gx.max()), 1e-6))
    edge = (scaled >= params.sobel[0]) & (scaled <= params.sobel[1]) & (light > median + 15)
    return (white | yellow | edge).astype(np.uint8)


def thin_marks(mask: np.ndarray, view: BirdsEye, *, max_width_m: float = 0.6) -> np.ndarray:
    """A bird's-eye ``mask`` without blobs wider than ``max_width_m`` across the road
    (vehicles, bright patches): lane paint is about 0.15 m wide."""
    k = max(round(max_width_m / view.xm_per_px), 3)
    wide = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((1, k), np.uint8))
    return cv2.subtract(mask, cv2.dilate(wide, np.ones((5, k), np.uint8)))


@dataclass(frozen=True)
class LineFit:
    """One lane line in the bird's-eye view: ``fit`` (a, b, c) of ``u = a v^2 + b v + c``,
    the number of pixels it was fitted to and the fraction of the view's height they span.
    """

    fit: np.ndarray
    pixels: int
    span: float


@dataclass(frozen=True)
class WindowParams:
    """Sliding-window search: ``windows`` per line, half-width ``margin`` (fraction of the
    expected lane width), ``min_pixels`` to re-centre a window, ``min_fit_pixels`` and
    ``min_span`` (fraction of the height) to accept a line, and where a base may start
    (``base_range``: fractions of the lane width from the vehicle, each side).
    """

    windows: int = 9
    margin: float = 0.22
    min_pixels: int = 30
    min_fit_pixels: int = 120
    min_span: float = 0.25
    base_range: tuple[float, float] = (0.1, 0.95)


def sliding_windows(
    mask: np.ndarray,
    *,
    center: float,
    lane_px: float,
    params: WindowParams = WindowParams(),
) -> tuple[LineFit | None, LineFit | None]:
    """The left and right lane lines in a bird's-eye ``mask`` (0 / 1), or ``None`` each.

    ``center``: the vehicle's column; ``lane_px``: expected lane width in pixels. The
    base of each line is the histogram peak of the lower two thirds within
    ``base_range`` of the vehicle; windows then climb the image re-centring on the
    pixels they hold, and a second-order polynomial is fitted to all of them.
    """
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    hist = mask[height // 3 :].sum(axis=0).astype(np.float64)
    hist = np.convolve(hist, np.ones(9) / 9, mode="same")
    lo, hi = params.base_range
    found = []
    for side in (-1, 1):
        a, b = center + side * lo * lane_px, center + side * hi * lane_px
        a, b = int(max(min(a, b), 0)), int(min(max(a, b), width))
        if b - a < 2 or hist[a:b].max() <= 0:
            found.append(None)
            continue
        found.append(_climb(xs, ys, _nearest_peak(hist, a, b, side), height, lane_px, params))
    return found[0], found[1]


def _nearest_peak(hist: np.ndarray, a: int, b: int, side: int) -> int:
    """The strong histogram peak in ``[a, b)`` nearest the vehicle (``side`` -1: left)."""
    part = hist[a:b]
    strong = np.flatnonzero(part >= 0.3 * part.max())
    first = strong[-1] if side < 0 else strong[0]  # the strong column nearest the vehicle
    lo, hi = max(first - 12, 0), min(first + 13, len(part))
    return a + lo + int(np.argmax(part[lo:hi]))


def _climb(xs, ys, base: int, height: int, lane_px: float, params: WindowParams):
    """Windows from the bottom up, re-centred on their pixels; across gaps (dashes) the
    centre follows the straight line through the centres found so far."""
    margin = params.margin * lane_px
    win_h = height / params.windows
    x_now = float(base)
    picked, centres = [], []
    for w in range(params.windows):
        y_hi, y_lo = height - w * win_h, height - (w + 1) * win_h
        if len(centres) >= 2:
            cy, cx = np.array(centres).T
            x_now = float(np.polyval(np.polyfit(cy, cx, 1), (y_lo + y_hi) / 2))
        inside = (ys >= y_lo) & (ys < y_hi) & (np.abs(xs - x_now) < margin)
        idx = np.flatnonzero(inside)
        picked.append(idx)
        if len(idx) >= params.min_pixels:
            x_now = float(xs[idx].mean())
            centres.append((float(ys[idx].mean()), x_now))
    idx = np.concatenate(picked)
    if len(idx) < params.min_fit_pixels:
        return None
    span = float(ys[idx].max() - ys[idx].min()) / height
    if span < params.min_span:
        return None
    fit = np.polyfit(ys[idx].astype(np.float64), xs[idx].astype(np.float64), 2)
    return LineFit(fit, len(idx), span)


def fit_from_points(points: np.ndarray, view: BirdsEye) -> np.ndarray | None:
    """A straight bird's-eye fit ``(0, b, c)`` through camera-image ``points`` (N, 2) of one
    line (e.g. a Hough line's two ends), or ``None`` when they do not span the view."""
    if len(points) < 2:
        return None
    pts = cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), view.M)
    u, v = pts.reshape(-1, 2).T
    if np.ptp(v) < 1:
        return None
    return np.r_[0.0, np.polyfit(v, u, 1)]


@dataclass(frozen=True)
class LaneGeometry:
    """Where the vehicle is in its lane: ``offset_m`` (from the lane centre, positive
    left), ``heading_rad`` (vehicle heading relative to the lane, positive left),
    ``curvature_1pm`` (of the lane centre, positive curving left) and ``width_m``.
    """

    offset_m: float
    heading_rad: float
    curvature_1pm: float
    width_m: float


def lane_geometry(
    left: np.ndarray | None,
    right: np.ndarray | None,
    view: BirdsEye,
    *,
    width_m: float = LANE_WIDTH_M,
) -> LaneGeometry | None:
    """The vehicle's place in the lane from bird's-eye fits (``None`` where a line is missing).

    With one line, the centre is half of ``width_m`` (the last measured width) beside it.
    Evaluated at the view's origin (``F = 0``).
    """
    if left is None and right is None:
        return None
    ml = None if left is None else np.poly1d(view.metric(left))
    mr = None if right is None else np.poly1d(view.metric(right))
    if ml is not None and mr is not None:
        centre = (ml + mr) / 2
        width = float(ml(0.0) - mr(0.0))
    else:
        centre = ml - width_m / 2 if ml is not None else mr + width_m / 2
        width = width_m
    c0, slope = float(centre(0.0)), float(centre.deriv()(0.0))
    curv = float(centre.deriv(2)(0.0)) / (1 + slope**2) ** 1.5
    return LaneGeometry(-c0, -math.atan(slope), curv, width)


def line_points(fit: np.ndarray, view: BirdsEye, *, samples: int = 24) -> np.ndarray:
    """Camera-image points (N, 2) float32 of a bird's-eye fit over the view's height."""
    v = np.linspace(0, view.size[1] - 1, samples)
    u = np.polyval(fit, v)
    return view.to_image(np.c_[u, v])
