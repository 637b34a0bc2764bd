"""``LaneDetector``: classic lane-line finding (Canny edges, Hough segments, one line a side).

The kernel, ``find_lanes``, is a pure function of an image; the operator wraps it.

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

from dataclasses import dataclass

import cv2
import numpy as np

from operators._message import Message
from operators._operator import Field, Operator, Outputs, Port

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


class LaneDetector(Operator):
    """Finds the left and right lane lines in each camera frame.

    Inputs:
      ``frames``: payload ``{"image": uint8 HxWx3 BGR, "frame": int (optional)}``.
    Outputs:
      ``lanes``: payload ``{"left": float32 [x1, y1, x2, y2] or shape (0,),
      "right": the same, "found": how many of the two were found (0..2),
      "frame": the input's ``frame`` (else its ``seq``)}``, plus ``"image"``
      when ``keep_image``. Each line runs from the bottom row up to the horizon.
    Parameters (keyword-only):
      ``keep_image``: pass the input image on (default ``False``: keep
      messages small). ``params``: a ``LaneParams`` (blur, Canny thresholds,
      region of interest, Hough settings, minimum slope).

    Stateless: each frame is handled on its own.
    """

    inputs = (Port("frames", {"image": Field("uint8", (None, None, 3))}),)
    outputs = (
        Port("lanes", {"left": Field("float32", (None,)), "right": Field("float32", (None,))}),
    )

    def __init__(self, *, keep_image: bool = False, params: LaneParams = LaneParams()) -> None:
        self.keep_image = keep_image
        self.params = params

    def process(self, port: str, message: Message) -> Outputs:
        image = message.payload["image"]
        left, right = find_lanes(image, self.params)
        payload = {
            "left": left,
            "right": right,
            "found": int(left.size > 0) + int(right.size > 0),
            "frame": int(message.payload.get("frame", message.seq)),
        }
        if self.keep_image:
            payload["image"] = image
        yield "lanes", message.derive(payload)
