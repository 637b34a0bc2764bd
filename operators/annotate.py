"""What a vehicle saw and did, drawn on its camera frames: ``Annotator`` and ``AnnotatedVideo``.

``draw_frame`` is the pure kernel: boxes with class and fused distance, the lane overlay
(``operators.lanes.draw_lanes``), recognised signs and the current command with its reason.
``Annotator`` keeps the newest message of each overlay input (by event time, so a late
overlay never replaces a newer one) and draws them on every camera frame it gets.
``AnnotatedVideo`` is a ``FileSink`` that writes the annotated frames as numbered MP4 clips
(``<operator>-<replica>-<NNNNNN>.mp4``) and, beside them, one PNG strip of every
``strip_every``-th frame (``<operator>-<replica>-strip.png``, rewritten at each flush).

>>> import numpy as np
>>> from operators import Message
>>> frame = Message("cam", 0, 10, {"image": np.zeros((90, 160, 3), np.uint8)})
>>> objs = {"boxes": np.array([[10, 10, 50, 60]], np.float32), "classes": np.array([0], np.int32),
...         "scores": np.array([0.9], np.float32), "distance_m": np.array([12.5], np.float32)}
>>> ann = Annotator(class_names=("vehicle",))
>>> ann.process("objects", Message("cam", 0, 5, objs))
()
>>> [(port, out)] = ann.process("camera", frame)
>>> port, out.payload["image"].shape, bool(out.payload["image"].any())
('annotated', (90, 160, 3), True)
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from operators._errors import OperatorError
from operators._files import FileSink
from operators._message import Message
from operators._operator import Field, Operator, Outputs, Port, Resources
from operators.lanes import draw_lanes

#: The overlay inputs, drawn in this order.
OVERLAYS = ("lanes", "objects", "signs", "control")
_BOX = (0, 215, 255)  # amber
_SIGN = (255, 120, 0)  # blue
_TEXT_BG = (0, 0, 0)


def draw_frame(
    image: np.ndarray,
    *,
    objects: Mapping[str, Any] | None = None,
    lanes: Mapping[str, Any] | None = None,
    signs: Mapping[str, Any] | None = None,
    control: Mapping[str, Any] | None = None,
    class_names: Sequence[str] = (),
) -> np.ndarray:
    """A copy of BGR ``image`` with whichever overlays are given drawn on it.

    ``objects``: ``boxes`` (xyxy) and ``classes``, optionally ``scores`` and ``distance_m``
    (``SensorFusion`` / ``ObjectDetector`` payloads). ``lanes``: a ``LaneDetector`` payload.
    ``signs``: ``boxes`` and ``classes`` (GTSRB ids), optionally ``names``. ``control``: a
    ``Controller`` payload (``throttle``, ``brake``, ``steer``, ``reason``).
    """
    out = draw_lanes(image, lanes) if lanes is not None else image.copy()
    scale = max(out.shape[1] / 640.0, 0.4)
    if objects is not None:
        boxes = np.asarray(objects.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
        classes = np.asarray(objects.get("classes", np.zeros(len(boxes))), np.int64)
        dist = np.asarray(objects.get("distance_m", np.full(len(boxes), np.nan)), np.float32)
        for box, cls, d in zip(boxes, classes, dist, strict=True):
            name = class_names[cls] if 0 <= cls < len(class_names) else str(int(cls))
            label = f"{name} {d:.0f} m" if np.isfinite(d) else name
            _box(out, box, label, _BOX, scale)
    if signs is not None:
        boxes = np.asarray(signs.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
        classes = [int(c) for c in np.asarray(signs.get("classes", ()))]
        names = [str(n) for n in signs.get("names", [f"sign {c}" for c in classes])]
        for box, name in zip(boxes, names, strict=False):
            _box(out, box, name, _SIGN, scale)
    if control is not None:
        text = (
            f"throttle {float(control.get('throttle', 0.0)):.2f}  "
            f"brake {float(control.get('brake', 0.0)):.2f}  "
            f"steer {float(control.get('steer', 0.0)):+.3f}  {control.get('reason', '')}"
        )
        _label(out, text, (4, out.shape[0] - 6), (255, 255, 255), scale)
    return out


def _box(img: np.ndarray, box: np.ndarray, label: str, color, scale: float) -> None:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    cv2.rectangle(img, (x0, y0), (x1, y1), color, max(round(2 * scale), 1))
    _label(img, label, (x0, max(y0 - 3, 10)), color, scale)


def _label(img: np.ndarray, text: str, org: tuple[int, int], color, scale: float) -> None:
    size = 0.45 * scale
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    x, y = org
    cv2.rectangle(img, (x, y - h - 2), (x + w + 2, y + base), _TEXT_BG, -1)
    cv2.putText(img, text, (x + 1, y), cv2.FONT_HERSHEY_SIMPLEX, size, color, 1, cv2.LINE_AA)


class Annotator(Operator):
    """Draws the newest objects, lanes, signs and command on each camera frame.

    Inputs: ``camera`` (``{"image": uint8 HxWx3}``, one output per frame) and the
    overlays ``objects``, ``lanes``, ``signs``, ``control`` (any may stay unconnected).
    Output ``annotated``: ``{"image": the drawn copy, "frame": the camera's frame number}``.
    Parameters: ``class_names`` for object classes; ``max_age_ms``: an overlay older
    than this (event time, against the frame) is not drawn, so a stalled detector
    never leaves stale boxes on the video.
    """

    inputs = (Port("camera", {"image": Field("uint8", (None, None, 3))}), *OVERLAYS)
    outputs = (Port("annotated", {"image": Field("uint8", (None, None, 3))}),)
    resources = Resources(num_cpus=0.2)

    def __init__(self, *, class_names: Sequence[str] = (), max_age_ms: float = 500.0) -> None:
        self.class_names = tuple(class_names)
        self.max_age_ns = round(max_age_ms * 1e6)
        self._latest: dict[str, Message] = {}

    def process(self, port: str, message: Message) -> Outputs:
        if port in OVERLAYS:
            old = self._latest.get(port)
            if old is None or message.event_ts >= old.event_ts:
                self._latest[port] = message
            return ()
        if port != "camera":
            raise OperatorError(f"no input port {port!r}; use camera or one of {OVERLAYS}")
        now = message.event_ts
        fresh = {
            name: m.payload
            for name, m in self._latest.items()
            if now - m.event_ts <= self.max_age_ns
        }
        image = draw_frame(message.payload["image"], class_names=self.class_names, **fresh)
        payload = {"image": image, "frame": message.payload.get("frame", message.seq)}
        return [("annotated", message.derive(payload))]


class AnnotatedVideo(FileSink):
    """Writes annotated frames as MP4 clips of ``clip_frames`` frames at ``fps``, plus a strip.

    The strip holds every ``strip_every``-th frame (at most ``strip_frames``, the newest
    kept), ``tile_width`` pixels wide, ``columns`` per row.
    """

    inputs = (Port("annotated", {"image": Field("uint8", (None, None, 3))}),)
    resources = Resources(num_cpus=0.2)
    what = "video directory"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fps: float = 30.0,
        clip_frames: int = 90,
        strip_every: int = 30,
        strip_frames: int = 12,
        tile_width: int = 320,
        columns: int = 4,
    ) -> None:
        if clip_frames < 1 or strip_every < 1 or strip_frames < 1 or fps <= 0:
            raise ValueError(
                "clip_frames, strip_every and strip_frames must be >= 1 and fps > 0, got "
                f"{clip_frames}, {strip_every}, {strip_frames}, {fps}"
            )
        self._init_files(directory, batch_rows=clip_frames)
        self.fps = float(fps)
        self.strip_every = int(strip_every)
        self.strip_frames = int(strip_frames)
        self.tile_width = int(tile_width)
        self.columns = int(columns)
        self.frames = 0
        self._tiles: list[np.ndarray] = []

    def process(self, port: str, message: Message) -> Outputs:
        image = np.asarray(message.payload["image"])
        if self.frames % self.strip_every == 0:
            h, w = image.shape[:2]
            tile = cv2.resize(image, (self.tile_width, max(round(h * self.tile_width / w), 1)))
            self._tiles = [*self._tiles, tile][-self.strip_frames :]
        self.frames += 1
        self._add(image)
        return ()

    def _suffix(self) -> str:
        return ".mp4"

    def _write(self, batch: list[np.ndarray]) -> None:
        h, w = batch[0].shape[:2]
        path = self._next_file()
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise OperatorError(
                f"cannot write video {path}: this OpenCV build has no mp4v encoder; install "
                "opencv-python-headless from PyPI (its wheels bundle FFmpeg) or check that "
                "the directory is writable"
            )
        try:
            for frame in batch:
                writer.write(frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h)))
        finally:
            writer.release()
        self.files.append(str(path))
        self._write_strip()

    def _write_strip(self) -> None:
        if not self._tiles:
            return
        th = self._tiles[0].shape[0]
        tiles = [
            t if t.shape[0] == th else cv2.resize(t, (self.tile_width, th)) for t in self._tiles
        ]
        blank = np.zeros_like(tiles[0])
        tiles += [blank] * (-len(tiles) % self.columns)
        rows = [np.hstack(tiles[i : i + self.columns]) for i in range(0, len(tiles), self.columns)]
        path = pathlib.Path(self.directory) / f"{self.prefix}-strip.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        cv2.imwrite(str(tmp), np.vstack(rows))
        os.replace(tmp, path)

    def snapshot(self) -> dict[str, int]:
        return {**super().snapshot(), "frames": self.frames}

    def restore(self, state: dict[str, int]) -> None:
        super().restore(state)
        self.frames = int(state.get("frames", 0))
