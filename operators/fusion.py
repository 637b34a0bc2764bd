"""``SensorFusion``: camera detections + lidar scans → objects with a distance.

Kernels (pure functions): ``project_points`` maps velodyne points into the
image with a KITTI-style calibration (``operators.calibration.Calibration``:
``P2 · R0_rect · Tr_velo_to_cam``), keeping the points in front of the camera;
``box_distances`` gives each box the median depth of the projected points inside it.

>>> import numpy as np
>>> calib = Calibration.simple(focal=700.0, cx=600.0, cy=180.0)
>>> points = np.array([[10.0, 0.0, 0.0, 0.5], [-5.0, 0.0, 0.0, 0.5]], np.float32)  # ahead, behind
>>> uv, depth = project_points(points, calib)
>>> uv.round(1).tolist(), depth.round(1).tolist()
([[600.0, 180.0]], [10.0])
>>> box_distances(uv, depth, np.array([[590, 170, 610, 190], [0, 0, 5, 5]], np.float32))
(array([10., nan], dtype=float32), array([1, 0], dtype=int32))
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from operators._errors import MalformedMessage, OperatorError
from operators._message import Message
from operators._operator import Context, Field, Metrics, Operator, Outputs, Port, Resources
from operators.calibration import CALIBRATION_KEYS, Calibration

#: Points closer than this to the camera plane (m) are not projected.
MIN_DEPTH_M = 0.5


# -- kernels --------------------------------------------------------------------------------------
def finite_points(points: np.ndarray) -> tuple[np.ndarray, int]:
    """``(points, dropped)``: the rows of an Nx4 scan whose values are all finite."""
    ok = np.isfinite(points).all(axis=1)
    return (points if ok.all() else points[ok]), int(len(points) - ok.sum())


def project_points(points: np.ndarray, calib: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """``(uv float32 Mx2, depth float32 M)`` of the velodyne points in front of the camera.

    ``points`` is Nx4 (x, y, z, reflectance) in the lidar frame; depth is the
    rectified camera's z (metres along the optical axis).
    """
    uv, depth = calib.velo_to_image(points)
    front = depth > MIN_DEPTH_M
    return uv[front].astype(np.float32), depth[front].astype(np.float32)


def box_distances(
    uv: np.ndarray,
    depth: np.ndarray,
    boxes: np.ndarray,
    *,
    shrink: float = 0.2,
    min_share: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """``(distance_m float32 N, points_in_box int32 N)`` of projected points and xyxy boxes.

    A box's distance is the median depth of the nearest depth cluster that
    holds at least ``min_share`` of the points (and 3) in the box's core: the
    box narrowed by ``shrink`` of its width on each side and half that of its
    height (all of the box when the core holds no point). The core and the
    cluster keep background seen past a pedestrian's legs and a pole in front
    of a cyclist from deciding. ``points_in_box`` counts the whole box; a box
    with no point gets ``NaN``.
    """
    distance = np.full(len(boxes), np.nan, np.float32)
    counts = np.zeros(len(boxes), np.int32)
    u, v = uv[:, 0], uv[:, 1]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        inside = (u >= x1) & (u <= x2) & (v >= y1) & (v <= y2)
        counts[i] = int(inside.sum())
        if not counts[i]:
            continue
        dx, dy = shrink * (x2 - x1), shrink * (y2 - y1) / 2
        core = inside & (u >= x1 + dx) & (u <= x2 - dx) & (v >= y1 + dy) & (v <= y2 - dy)
        distance[i] = _nearest_cluster_median(depth[core if core.any() else inside], min_share)
    return distance, counts


def _nearest_cluster_median(depths: np.ndarray, min_share: float) -> float:
    """The median of the nearest cluster of depths (gaps > max(0.5 m, 3 %) split them)."""
    d = np.sort(depths)
    gaps = np.diff(d) > np.maximum(0.5, 0.03 * d[:-1])
    starts = np.r_[0, np.flatnonzero(gaps) + 1]
    ends = np.r_[starts[1:], len(d)]
    need = min(len(d), max(3, min_share * len(d)))
    for start, end in zip(starts, ends, strict=True):
        if end - start >= need:
            return float(np.median(d[start:end]))
    return float(np.median(d))


# -- the operator ---------------------------------------------------------------------------------
class SensorFusion(Operator):
    """Attaches a lidar distance to each detected object of a camera frame.

    Inputs:
      ``camera``: the detector's output for a frame: payload ``{"boxes":
      float32 Nx4 xyxy, "scores": float32 N, "classes": int32 N}`` and the
      frame's calibration ``P2`` (3x4), ``R0_rect`` (3x3), ``Tr_velo_to_cam``
      (3x4) (``ObjectDetector`` carries them from the frame), unless the
      ``calibration`` parameter gives one. Neither: dead-lettered.
      ``lidar``: payload ``{"points": float32 Nx4 (x, y, z, reflectance) in
      the velodyne frame}``. Rows with NaN or inf are dropped and counted
      (``dropped_points``, metric ``fusion_lidar_points_dropped``).
    Outputs:
      ``objects``: the camera message's identity and times with payload
      ``{"boxes", "scores", "classes" as received, "distance_m": float32 N
      (depth in metres along the camera axis: median of the nearest cluster
      of lidar points in the box, see ``box_distances``; NaN when none),
      "points_in_box": int32 N, "fused": 1 or 0, "skew_ns": camera minus
      lidar event time (0 when not fused)}``; when fused, its lineage
      lists the lidar message (``Message.derive(merged=...)``).
    Parameters (keyword-only):
      ``max_skew_ns``: the most a lidar scan's event time may differ from the
      frame's to be its partner (default 50 ms: half a 10 Hz scan period).
      ``max_pending``: camera messages buffered while waiting for the lidar
      (default 3). ``lidar_buffer``: most recent scans kept (default 4).
      ``calibration``: a ``Calibration`` for frames that carry none.

    Alignment, by event time: a camera message waits until the lidar stream
    has reached its event time (a scan at or after it has arrived), then
    takes the nearest buffered scan within ``max_skew_ns``. Messages may
    arrive out of order on either input; scans are kept sorted. When more
    than ``max_pending`` camera messages wait (the lidar is late or silent),
    the oldest is evicted: fused with the nearest scan within the skew if
    there is one, otherwise **emitted with distances NaN and ``fused=0``**.
    A frame the lidar has passed without any scan within the skew is emitted
    the same way. Every unfused frame is counted (``unfused``, metric
    ``fusion_unfused``); none is dropped. Frames still waiting when a stream
    ends stay in the operator's state (``snapshot()``).

    >>> import numpy as np
    >>> from operators import Message
    >>> fusion = SensorFusion(calibration=Calibration.simple(focal=700.0, cx=600.0, cy=180.0))
    >>> dets = {"boxes": np.array([[590, 170, 610, 190]], np.float32),
    ...         "scores": np.array([0.9], np.float32), "classes": np.array([2], np.int32)}
    >>> list(fusion.process("camera", Message("cam", 0, 1_000_000, dets)))  # waits for lidar
    []
    >>> scan = {"points": np.array([[12.0, 0.0, 0.0, 0.3]], np.float32)}
    >>> [(port, obj)] = fusion.process("lidar", Message("velo", 0, 5_000_000, scan))
    >>> port, obj.payload["distance_m"], obj.payload["fused"], obj.meta.lineage[0].source
    ('objects', array([12.], dtype=float32), 1, 'velo')
    """

    inputs = (
        Port(
            "camera",
            {
                "boxes": Field("float32", (None, 4)),
                "scores": Field("float32", (None,)),
                "classes": Field("int32", (None,)),
            },
        ),
        Port("lidar", {"points": Field("float32", (None, 4))}),
    )
    outputs = (
        Port(
            "objects",
            {
                "boxes": Field("float32", (None, 4)),
                "scores": Field("float32", (None,)),
                "classes": Field("int32", (None,)),
                "distance_m": Field("float32", (None,)),
                "points_in_box": Field("int32", (None,)),
            },
        ),
    )
    resources = Resources(num_cpus=0.5)

    def __init__(
        self,
        *,
        max_skew_ns: int = 50_000_000,
        max_pending: int = 3,
        lidar_buffer: int = 4,
        calibration: Calibration | None = None,
    ) -> None:
        if max_skew_ns < 0 or max_pending < 1 or lidar_buffer < 1:
            raise ValueError(
                f"max_skew_ns >= 0, max_pending >= 1 and lidar_buffer >= 1 expected, got "
                f"{max_skew_ns}, {max_pending}, {lidar_buffer}"
            )
        self.max_skew_ns = int(max_skew_ns)
        self.max_pending = int(max_pending)
        self.lidar_buffer = int(lidar_buffer)
        self.calibration = calibration
        self._pending: list[Message] = []  # camera side, sorted by event time
        self._scans: list[Message] = []  # lidar side (finite points only), sorted by event time
        self._lidar_reached: int | None = None  # the latest lidar event time seen
        self.unfused = 0
        self.dropped_points = 0
        self._metrics: Metrics | None = None
        self._name = type(self).__name__

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_metrics": None}

    def setup(self, ctx: Context) -> None:
        self._metrics = ctx.metrics
        self._name = ctx.operator

    # -- messages -----------------------------------------------------------------------------
    def process(self, port: str, message: Message) -> Outputs:
        if port == "lidar":
            self._add_scan(message)
        else:
            self._calibration_of(message)  # dead-letter a frame we could never fuse, now
            _insort(self._pending, message)
        return self._release()

    def _add_scan(self, message: Message) -> None:
        points, dropped = finite_points(message.payload["points"])
        if dropped:
            self.dropped_points += dropped
            self._count("fusion_lidar_points_dropped", dropped)
            message = message.derive({**message.payload, "points": points})
        _insort(self._scans, message)
        del self._scans[: -self.lidar_buffer]
        reached = self._lidar_reached
        ts = message.event_ts
        self._lidar_reached = ts if reached is None else max(reached, ts)

    def _release(self) -> list[tuple[str, Message]]:
        out = []
        reached = self._lidar_reached
        while self._pending and reached is not None and reached >= self._pending[0].event_ts:
            out.append(self._emit(self._pending.pop(0)))
        while len(self._pending) > self.max_pending:  # the lidar is late or silent
            out.append(self._emit(self._pending.pop(0)))
        return out

    def _partner(self, event_ts: int) -> Message | None:
        best = min(self._scans, key=lambda s: abs(s.event_ts - event_ts), default=None)
        if best is None or abs(best.event_ts - event_ts) > self.max_skew_ns:
            return None
        return best

    def _emit(self, frame: Message) -> tuple[str, Message]:
        boxes = np.asarray(frame.payload["boxes"], np.float32)
        payload = {
            "boxes": boxes,
            "scores": frame.payload["scores"],
            "classes": frame.payload["classes"],
        }
        if "frame" in frame.payload:
            payload["frame"] = frame.payload["frame"]
        scan = self._partner(frame.event_ts)
        if scan is None:
            self.unfused += 1
            self._count("fusion_unfused")
            payload |= {
                "distance_m": np.full(len(boxes), np.nan, np.float32),
                "points_in_box": np.zeros(len(boxes), np.int32),
                "fused": 0,
                "skew_ns": 0,
            }
            return "objects", frame.derive(payload)
        uv, depth = project_points(scan.payload["points"], self._calibration_of(frame))
        distance, counts = box_distances(uv, depth, boxes)
        payload |= {
            "distance_m": distance,
            "points_in_box": counts,
            "fused": 1,
            "skew_ns": int(frame.event_ts - scan.event_ts),
        }
        return "objects", frame.derive(payload, merged=(scan,))

    def _calibration_of(self, frame: Message) -> Calibration:
        try:
            carried = Calibration.from_payload(frame.payload)
        except OperatorError as err:
            problem = f"camera message {frame.key}: {err}"
            raise MalformedMessage(problem, operator=self._name) from err
        if carried is not None:
            return carried
        if self.calibration is None:
            raise MalformedMessage(
                f"camera message {frame.key} carries no calibration "
                f"({', '.join(CALIBRATION_KEYS)}) and the operator has none; let the detector "
                "carry the frame's calibration or pass SensorFusion(calibration=Calibration(...))",
                operator=self._name,
            )
        return self.calibration

    def _count(self, name: str, value: float = 1.0) -> None:
        if self._metrics is not None:
            self._metrics.count(name, value)

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "pending": tuple(self._pending),
            "scans": tuple(self._scans),
            "lidar_reached": self._lidar_reached,
            "unfused": self.unfused,
            "dropped_points": self.dropped_points,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._pending = list(state["pending"])
        self._scans = list(state["scans"])
        self._lidar_reached = state["lidar_reached"]
        self.unfused = state["unfused"]
        self.dropped_points = state["dropped_points"]


def _insort(messages: list[Message], message: Message) -> None:
    bisect.insort(messages, message, key=lambda m: (m.event_ts, m.source, m.seq, m.part))
