"""``VideoSource``: frames from a video file, a camera device or a stream, via OpenCV.

>>> import tempfile, pathlib
>>> import cv2, numpy as np
>>> from operators import Context
>>> path = str(pathlib.Path(tempfile.mkdtemp()) / "clip.avi")
>>> writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
>>> for i in range(3):
...     _ = writer.write(np.full((24, 32, 3), 80 * i, np.uint8))
>>> writer.release()
>>> source = VideoSource(path)
>>> source.setup(Context())
>>> [(m.seq, m.event_ts, m.payload["frame"], m.payload["image"].shape)
...  for _ in range(3) for port, m in source.poll(0)]
[(0, 0, 0, (24, 32, 3)), (1, 100000000, 1, (24, 32, 3)), (2, 200000000, 2, (24, 32, 3))]
>>> source.poll(0) is None
True
>>> source.teardown()
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Context, Field, Outputs, Port, Source

#: The payload of every frame: the BGR image and its index in the file.
FRAME_SCHEMA = {"image": Field("uint8", (None, None, 3))}


class VideoSource(Source):
    """Reads frames through ``cv2.VideoCapture``, one frame per ``poll``.

    Inputs: none.
    Outputs:
      ``frames``: payload ``{"image": uint8 HxWx3 BGR array, "frame": int}``;
      ``seq`` counts frames from 0 (it equals ``frame`` unless ``loop`` restarts
      the file); ``event_ts`` comes from the capture position
      (``CAP_PROP_POS_MSEC``), else ``frame / fps``, else the poll time.
    Parameters:
      ``target``: a video file path, a camera device index (``0``) or a stream
      URL (``rtsp://...``). Opened in ``setup``, so the operator stays picklable
      and the path is resolved on the node where it runs.
      ``max_frames``: stop after this many frames (``None``: the whole file).
      ``loop``: start the file over at its end (a file never ends then, unless
      ``max_frames`` is set); event time keeps increasing across laps.
      ``source_id``: the messages' ``source`` (``""``: the runtime stamps
      ``<operator>@<node>``).

    Picklable at any time: a pickled copy leaves the open capture behind.
    ``snapshot()`` is the position in the file (and the frames emitted);
    ``restore`` seeks there. A camera or stream cannot seek: it resumes live.
    A read that fails ends the stream (``poll`` returns ``None``).
    """

    outputs = (Port("frames", FRAME_SCHEMA),)

    def __init__(
        self,
        target: str | os.PathLike[str] | int,
        *,
        max_frames: int | None = None,
        loop: bool = False,
        source_id: str = "",
    ) -> None:
        if max_frames is not None and max_frames < 0:
            raise OperatorError(f"max_frames={max_frames}; use None or a count of 0 or more")
        self.target = target if isinstance(target, int) else os.fspath(target)
        self.max_frames = max_frames
        self.loop = loop
        self.source_id = source_id
        self.frame = 0  # index in the file of the next frame to read
        self.emitted = 0  # frames emitted so far: the next seq
        self.lap_offset_ns = 0  # event time added to the file's own on later laps
        self.last_event_ns = -1
        self._capture: Any = None
        self._fps = 0.0
        self._operator = "video"

    @property
    def seekable(self) -> bool:
        """True for a file, whose frames can be sought; False for a camera or a stream."""
        return isinstance(self.target, str) and "://" not in self.target

    def __getstate__(self) -> dict[str, Any]:
        # An open capture cannot be pickled; a copy reopens it in its own setup().
        return {**self.__dict__, "_capture": None}

    # -- lifecycle ----------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        self._operator = ctx.operator
        self._capture = self._open()
        self._fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if self.frame and self.seekable:
            self._seek(self.frame)

    def teardown(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def snapshot(self) -> dict[str, int]:
        return {
            "frame": self.frame,
            "emitted": self.emitted,
            "lap_offset_ns": self.lap_offset_ns,
            "last_event_ns": self.last_event_ns,
        }

    def restore(self, state: dict[str, int]) -> None:
        self.frame = int(state["frame"])
        self.emitted = int(state["emitted"])
        self.lap_offset_ns = int(state.get("lap_offset_ns", 0))
        self.last_event_ns = int(state.get("last_event_ns", -1))
        if self._capture is not None and self.seekable:
            self._seek(self.frame)

    # -- producing ----------------------------------------------------------------------
    def poll(self, now: int) -> Outputs | None:
        if self._capture is None:
            raise OperatorError(
                "poll() before setup(ctx): the capture is opened in setup", operator=self._operator
            )
        if self.max_frames is not None and self.emitted >= self.max_frames:
            return None
        ok, image = self._capture.read()
        if not ok and self.loop and self.seekable and self.frame > 0:
            self.lap_offset_ns = self.last_event_ns + self._period_ns()
            self._seek(0)
            ok, image = self._capture.read()
        if not ok:
            return None
        event_ts = self._event_ts(now)
        message = Message(
            source=self.source_id,
            seq=self.emitted,
            event_ts=event_ts,
            payload={"image": _as_bgr(image), "frame": self.frame},
        )
        self.frame += 1
        self.emitted += 1
        self.last_event_ns = event_ts
        return [("frames", message)]

    # -- internals ----------------------------------------------------------------------
    def _open(self) -> Any:
        target = self.target
        if self.seekable and not os.path.exists(target):
            raise OperatorError(
                f"video file {target!r} does not exist (working directory {os.getcwd()!r}); "
                "pass an existing file path (absolute, or relative to where the operator runs), "
                "a camera index such as 0, or a stream URL such as 'rtsp://host/stream'",
                operator=self._operator,
            )
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            what = "video file" if self.seekable else "camera" if isinstance(target, int) else "URL"
            raise OperatorError(
                f"{what} {target!r} could not be opened by OpenCV's VideoCapture; check that it "
                "is a video OpenCV can decode (e.g. .mp4 or .avi; try "
                f"cv2.VideoCapture({target!r}).isOpened()), that the camera is connected, "
                "or that the stream is reachable",
                operator=self._operator,
            )
        return capture

    def _seek(self, frame: int) -> None:
        """Position the capture so the next read returns ``frame`` (exactly)."""
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        if int(self._capture.get(cv2.CAP_PROP_POS_FRAMES)) != frame:
            # The backend could not seek exactly: reopen and skip forward.
            self._capture.release()
            self._capture = self._open()
            for _ in range(frame):
                if not self._capture.grab():
                    break
        self.frame = frame

    def _period_ns(self) -> int:
        return round(1e9 / self._fps) if self._fps > 0 else 1

    def _event_ts(self, now: int) -> int:
        msec = float(self._capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        if msec > 0 or (self.frame == 0 and self._fps > 0):
            own = round(msec * 1e6)
        elif self._fps > 0:
            own = round(self.frame * 1e9 / self._fps)
        else:
            return max(now, self.last_event_ns + 1)
        return max(self.lap_offset_ns + own, self.last_event_ns + 1)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Frames as uint8 HxWx3 (a grayscale or BGRA capture is converted)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image
