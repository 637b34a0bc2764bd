"""``LaneDetector``: lane lines (Canny + Hough) and, on request, the lane's geometry.

The kernels are pure functions: ``find_lanes`` (Canny edges, Hough segments, one line a
side) here, and the bird's-eye kernels in ``operators.lane_fit`` (perspective transform,
HLS colour + edge thresholds, sliding windows, polynomial fits, offset and curvature).
``LaneDetector`` composes them and smooths the fits over frames; ``draw_lanes`` and
``contact_sheet`` draw its results. Chessboard calibration (for ``undistort``) is in
``operators.camera_calibration`` and re-exported here.

>>> import cv2, numpy as np
>>> from operators import Message
>>> road = np.zeros((540, 960, 3), np.uint8)
>>> _ = cv2.line(road, (150, 540), (450, 330), (255, 255, 255), 8)
>>> _ = cv2.line(road, (850, 540), (520, 330), (255, 255, 255), 8)
>>> [(port, lanes)] = LaneDetector().process("frames", Message("cam", 0, 0, {"image": road}))
>>> port, lanes.payload["found"], lanes.payload["frame"], lanes.payload["left"].dtype
('lanes', 2, 0, dtype('float32'))
>>> left, right = lanes.payload["left"], lanes.payload["right"]
>>> bool(abs(left[0] - 150) < 5 and left[1] == 540 and abs(right[0] - 850) < 5)  # bottom ends
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from operators._message import Message
from operators._operator import Field, Operator, Outputs, Port
from operators.camera_calibration import (
    CameraCalibration,
    calibrate_from_chessboards,
    undistort,
)
from operators.lane_fit import (
    DEFAULT_SRC,
    LANE_WIDTH_M,
    BirdsEye,
    ThresholdParams,
    WindowParams,
    birdseye_from_camera,
    default_birdseye,
    fit_from_points,
    lane_geometry,
    lane_pixels,
    line_points,
    sliding_windows,
    thin_marks,
)

__all__ = [
    "CameraCalibration",
    "LaneDetector",
    "LaneParams",
    "calibrate_from_chessboards",
    "contact_sheet",
    "draw_lanes",
    "find_lanes",
    "undistort",
]

NO_LINE = np.zeros(0, np.float32)


@dataclass(frozen=True)
class LaneParams:
    """The knobs of ``find_lanes``; fractions are of the image's width or height.

    ``horizon``: height (fraction from the top) where the region of interest
    ends and lines are extrapolated to. ``roi_bottom`` / ``roi_top``: widths of
    the trapezoid's bottom and top edges, centred. ``min_slope``: segments
    flatter than this (|dy/dx|) are ignored.
    """

    blur: int = 5
    canny_low: int = 50
    canny_high: int = 150
    horizon: float = 0.6
    roi_bottom: float = 0.9
    roi_top: float = 0.1
    hough_threshold: int = 15
    min_line_length: int = 20
    max_line_gap: int = 20
    min_slope: float = 0.5


def find_lanes(image: np.ndarray, params: LaneParams = LaneParams()) -> tuple[np.ndarray, ...]:
    """The left and right lane lines of a BGR road image, each ``[x1, y1, x2, y2]`` float32.

    ``(x1, y1)`` is on the bottom row, ``(x2, y2)`` at the horizon. A side with
    no line is an empty array. Left lines slope down to the left (negative
    dy/dx in image coordinates), right lines positive.
    """
    height, width = image.shape[:2]
    edges = _edges(image, params)
    segments = cv2.HoughLinesP(
        edges,
        rho=2,
        theta=np.pi / 180,
        threshold=params.hough_threshold,
        minLineLength=params.min_line_length,
        maxLineGap=params.max_line_gap,
    )
    if segments is None:
        return NO_LINE, NO_LINE
    x1, y1, x2, y2 = segments.reshape(-1, 4).astype(np.float64).T
    dx, dy = x2 - x1, y2 - y1
    steep = np.abs(dy) > params.min_slope * np.abs(dx)
    slope_sign = np.sign(dy) * np.sign(dx)
    middle = width / 2
    left = steep & (slope_sign < 0) & (np.maximum(x1, x2) < middle * 1.1)
    right = steep & (slope_sign > 0) & (np.minimum(x1, x2) > middle * 0.9)
    top_y = params.horizon * height
    return tuple(
        _fit(x1[side], y1[side], x2[side], y2[side], bottom=height, top=top_y)
        for side in (left, right)
    )


def _edges(image: np.ndarray, params: LaneParams) -> np.ndarray:
    """Canny edges of the blurred grayscale image, inside the trapezoid of interest."""
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray, (params.blur, params.blur), 0)
    edges = cv2.Canny(gray, params.canny_low, params.canny_high)
    top = params.horizon * height
    half_bottom, half_top = params.roi_bottom * width / 2, params.roi_top * width / 2
    corners = [
        (width / 2 - half_bottom, height),
        (width / 2 - half_top, top),
        (width / 2 + half_top, top),
        (width / 2 + half_bottom, height),
    ]
    mask = np.zeros_like(edges)
    cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 255)
    return cv2.bitwise_and(edges, mask)


def _fit(x1, y1, x2, y2, *, bottom: float, top: float) -> np.ndarray:
    """One line through the segments (x as a function of y, weighted by length)."""
    if len(x1) == 0:
        return NO_LINE
    xs, ys = np.concatenate([x1, x2]), np.concatenate([y1, y2])
    weight = np.sqrt(np.tile(np.hypot(x2 - x1, y2 - y1), 2))
    a, b = np.polyfit(ys, xs, 1, w=weight)
    return np.array([a * bottom + b, bottom, a * top + b, top], np.float32)


@dataclass(frozen=True)
class GeometryParams:
    """The knobs of the lane geometry (``LaneDetector(geometry=True)``).

    ``src``: the bird's-eye source trapezoid as fractions of the image (top-left,
    top-right, bottom-right, bottom-left) for frames without camera geometry;
    ``lane_width_m``: the lane width that scales those frames (and the first guess
    elsewhere); ``length_m``: road length their view covers. Frames whose payload
    carries ``K`` and ``T_cam_ego`` get the exact view of ``near_m`` .. ``far_m`` ahead,
    ``half_width_m`` either side. ``smoothing``: weight of a new fit against the
    previous one (1: none); ``max_misses``: frames a line is carried over when not seen.
    ``thresholds`` / ``windows``: see ``operators.lane_fit``.
    """

    src: tuple[tuple[float, float], ...] = DEFAULT_SRC
    lane_width_m: float = LANE_WIDTH_M
    length_m: float = 30.0
    near_m: float = 3.0
    far_m: float = 30.0
    half_width_m: float = 5.0
    smoothing: float = 0.5
    max_misses: int = 5
    thresholds: ThresholdParams = field(default_factory=ThresholdParams)
    windows: WindowParams = field(default_factory=WindowParams)


SIDES = ("left", "right")
_NO_FIT = np.zeros(0, np.float64)
_NO_POINTS = np.zeros((0, 2), np.float32)


class LaneDetector(Operator):
    """Finds the left and right lane lines in each camera frame and, on request, the lane.

    Inputs:
      ``frames``: payload ``{"image": uint8 HxWx3 BGR, "frame": int (optional),
      "K": 3x3 and "T_cam_ego": 4x4 (optional, as the driving simulator sends them)}``.
    Outputs:
      ``lanes``: payload ``{"left": float32 [x1, y1, x2, y2] or shape (0,),
      "right": the same, "found": how many of the two were found (0..2),
      "frame": the input's ``frame`` (else its ``seq``)}``, plus ``"image"``
      when ``keep_image``. Each line runs from the bottom row up to the horizon.
      With ``geometry=True`` also: ``left_fit`` / ``right_fit`` (float64 ``[a, b, c]``
      of ``u = a v^2 + b v + c`` in the bird's-eye view, or shape (0,)),
      ``left_points`` / ``right_points`` (float32 (N, 2) image points of those fits, or
      (0, 2)), ``offset_m`` (vehicle from the lane centre, positive left),
      ``heading_rad`` (vehicle heading relative to the lane, positive left),
      ``curvature_1pm`` (lane centre, positive curving left), ``lane_width_m``
      (NaN for these four when no line has been seen), ``confidence`` (0..1) and the
      view's scale ``xm_per_px`` / ``ym_per_px``.
    Parameters (keyword-only):
      ``keep_image``: pass the input image on (default ``False``: keep
      messages small). ``params``: a ``LaneParams`` (blur, Canny thresholds,
      region of interest, Hough settings, minimum slope). ``geometry``: add the lane
      geometry (default ``False``). ``geometry_params``: a ``GeometryParams``.
      ``calibration``: a ``CameraCalibration`` to undistort frames with first.

    The bird's-eye view comes from ``K`` / ``T_cam_ego`` when the payload has them
    (metres per pixel from the camera geometry), else from ``geometry_params.src``
    scaled by the usual 3.7 m lane width. Lines come from sliding windows over HLS
    white / yellow and edge pixels, else from the Hough line. State (with
    ``geometry``): the smoothed fits per source, carried by ``snapshot`` / ``restore``.
    """

    inputs = (Port("frames", {"image": Field("uint8", (None, None, 3))}),)
    outputs = (
        Port("lanes", {"left": Field("float32", (None,)), "right": Field("float32", (None,))}),
    )

    def __init__(
        self,
        *,
        keep_image: bool = False,
        params: LaneParams = LaneParams(),
        geometry: bool = False,
        geometry_params: GeometryParams = GeometryParams(),
        calibration: CameraCalibration | None = None,
    ) -> None:
        self.keep_image = keep_image
        self.params = params
        self.geometry = geometry
        self.geometry_params = geometry_params
        self.calibration = calibration
        self._tracks: dict[str, dict[str, Any]] = {}
        self._views: dict[tuple, BirdsEye] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"tracks": {k: _copy_track(t) for k, t in self._tracks.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self._tracks = {k: _copy_track(t) for k, t in state["tracks"].items()}

    def process(self, port: str, message: Message) -> Outputs:
        image = message.payload["image"]
        if self.calibration is not None:
            image = undistort(image, self.calibration)
        left, right = find_lanes(image, self.params)
        payload = {
            "left": left,
            "right": right,
            "found": int(left.size > 0) + int(right.size > 0),
            "frame": int(message.payload.get("frame", message.seq)),
        }
        if self.geometry:
            payload.update(self._lane(message.source, image, message.payload, left, right))
        if self.keep_image:
            payload["image"] = message.payload["image"]
        yield "lanes", message.derive(payload)

    # -- geometry ----------------------------------------------------------------------
    def _view(self, image: np.ndarray, payload: Mapping[str, Any]) -> BirdsEye:
        height, width = image.shape[:2]
        g = self.geometry_params
        if "K" in payload and "T_cam_ego" in payload:
            K, T = np.asarray(payload["K"], np.float64), np.asarray(payload["T_cam_ego"])
            key = ("camera", width, height, K.tobytes(), np.asarray(T, np.float64).tobytes())
            if key not in self._views:
                self._views[key] = birdseye_from_camera(
                    K, T, (width, height), near_m=g.near_m, far_m=g.far_m,
                    half_width_m=g.half_width_m)  # fmt: skip
        else:
            key = ("relative", width, height)
            if key not in self._views:
                self._views[key] = default_birdseye(
                    width, height, src=g.src, lane_width_m=g.lane_width_m, length_m=g.length_m
                )
        return self._views[key]

    def _lane(self, source, image, payload, left, right) -> dict[str, Any]:
        g = self.geometry_params
        view = self._view(image, payload)
        key = [list(p) for p in view.src] + [list(view.size)]
        track = self._tracks.get(source)
        if track is None or track["view"] != key:
            track = {"view": key, "width_m": g.lane_width_m,
                     **{s: None for s in SIDES}, **{f"{s}_conf": 0.0 for s in SIDES},
                     **{f"{s}_misses": 0 for s in SIDES}}  # fmt: skip
            self._tracks[source] = track
        new = detect_lines(image, view, (left, right), width_m=track["width_m"], params=g)
        for side, (fit, conf) in zip(SIDES, new, strict=True):
            prior = track[side]
            if fit is not None:
                mixed = (
                    fit
                    if prior is None
                    else g.smoothing * fit + (1 - g.smoothing) * np.asarray(prior)
                )
                track[side], track[f"{side}_misses"] = [float(x) for x in mixed], 0
                track[f"{side}_conf"] = (
                    conf if prior is None else 0.5 * (conf + track[f"{side}_conf"])
                )
            elif prior is not None and track[f"{side}_misses"] < g.max_misses:
                track[f"{side}_misses"] += 1
                track[f"{side}_conf"] *= 0.5
            else:
                track[side], track[f"{side}_conf"] = None, 0.0
        fits = [None if track[s] is None else np.asarray(track[s]) for s in SIDES]
        lane = lane_geometry(fits[0], fits[1], view, width_m=track["width_m"])
        if lane is not None and all(f is not None for f in fits):
            width = 0.8 * track["width_m"] + 0.2 * lane.width_m
            track["width_m"] = float(np.clip(width, 0.6 * g.lane_width_m, 1.5 * g.lane_width_m))
        nan = math.nan
        out: dict[str, Any] = {
            "offset_m": nan if lane is None else lane.offset_m,
            "heading_rad": nan if lane is None else lane.heading_rad,
            "curvature_1pm": nan if lane is None else lane.curvature_1pm,
            "lane_width_m": nan if lane is None else lane.width_m,
            "confidence": float(np.mean([track[f"{s}_conf"] for s in SIDES])),
            "xm_per_px": view.xm_per_px,
            "ym_per_px": view.ym_per_px,
        }
        for side, fit in zip(SIDES, fits, strict=True):
            out[f"{side}_fit"] = _NO_FIT if fit is None else fit.astype(np.float64)
            out[f"{side}_points"] = _NO_POINTS if fit is None else line_points(fit, view)
        return out


def _copy_track(track: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in track.items()}


def detect_lines(
    image: np.ndarray,
    view: BirdsEye,
    hough: tuple[np.ndarray, np.ndarray],
    *,
    width_m: float = LANE_WIDTH_M,
    params: GeometryParams = GeometryParams(),
) -> list[tuple[np.ndarray | None, float]]:
    """The left and right lines of one frame as bird's-eye fits with a confidence each.

    ``image``: BGR; ``view``: the bird's-eye view; ``hough``: ``find_lanes``'s lines, used
    for a side the sliding windows miss (confidence 0.3); ``width_m``: expected lane
    width. Returns ``[(fit or None, confidence 0..1)]`` for left, right; when both are
    found but the lane is implausibly narrow or wide, the less confident one is dropped.
    """
    bev = thin_marks(view.warp(lane_pixels(image, params.thresholds)), view)
    lane_px = width_m / view.xm_per_px
    found = sliding_windows(bev, center=view.origin[0], lane_px=lane_px, params=params.windows)
    out: list[tuple[np.ndarray | None, float]] = []
    for line, segment in zip(found, hough, strict=True):
        if line is not None:
            quality = min(1.0, line.pixels / (4 * params.windows.min_fit_pixels))
            out.append((line.fit, quality * min(1.0, line.span / 0.6)))
        elif segment.size:
            out.append((fit_from_points(segment.reshape(2, 2), view), 0.3))
        else:
            out.append((None, 0.0))
    (lf, lc), (rf, rc) = out
    if lf is not None and rf is not None:
        lane = lane_geometry(lf, rf, view)
        nominal = params.lane_width_m
        if lane is None or not 0.6 * nominal < lane.width_m < 1.5 * nominal:
            out[0 if lc < rc else 1] = (None, 0.0)
    return out


# -- drawing -----------------------------------------------------------------------------
def draw_lanes(image: np.ndarray, result: Mapping[str, Any]) -> np.ndarray:
    """A copy of BGR ``image`` with ``result`` (a ``LaneDetector`` payload) drawn on it.

    The lane between the fitted lines is shaded green, the fitted lines drawn in red
    (left) and blue (right), the Hough lines thin yellow, and the figures written at
    the top left.
    """
    out = image.copy()
    pl, pr = (np.asarray(result.get(f"{s}_points", _NO_POINTS)) for s in SIDES)
    if len(pl) and len(pr):
        shade = out.copy()
        cv2.fillPoly(shade, [np.round(np.r_[pl, pr[::-1]]).astype(np.int32)], (0, 200, 0))
        out = cv2.addWeighted(shade, 0.3, out, 0.7, 0)
    for pts, color in ((pl, (0, 0, 255)), (pr, (255, 0, 0))):
        if len(pts):
            cv2.polylines(out, [np.round(pts).astype(np.int32)], False, color, 4)
    for seg in (result.get("left", NO_LINE), result.get("right", NO_LINE)):
        if np.size(seg) == 4:
            x1, y1, x2, y2 = (round(float(v)) for v in seg)
            cv2.line(out, (x1, y1), (x2, y2), (0, 255, 255), 1)
    if "offset_m" in result:
        text = (f"off {result['offset_m']:+.2f} m  curv {result['curvature_1pm']:+.4f}/m  "
                f"conf {result['confidence']:.2f}")  # fmt: skip
        scale = out.shape[1] / 900
        cv2.putText(out, text, (10, int(30 * scale) + 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), max(1, round(2 * scale)), cv2.LINE_AA)  # fmt: skip
    return out


def contact_sheet(
    images: Sequence[np.ndarray],
    results: Sequence[Mapping[str, Any]],
    *,
    columns: int = 4,
    tile_width: int = 320,
) -> np.ndarray:
    """One BGR image of ``draw_lanes`` overlays, ``columns`` per row, each ``tile_width``
    wide (heights follow the aspect of the first image; blank tiles fill the last row).
    """
    if len(images) != len(results) or not images:
        raise ValueError(f"need as many results as images, got {len(images)} / {len(results)}")
    h0, w0 = images[0].shape[:2]
    tile_h = round(tile_width * h0 / w0)
    tiles = [cv2.resize(draw_lanes(im, r), (tile_width, tile_h), interpolation=cv2.INTER_AREA)
             for im, r in zip(images, results, strict=True)]  # fmt: skip
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)
