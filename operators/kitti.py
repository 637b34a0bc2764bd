"""KITTI-style data: labels, frame files and ``KittiSource`` (camera image + velodyne scan).

A KITTI object-benchmark directory holds, per frame id (``000000``, ...):
``image_2/<id>.png`` (left colour camera), ``velodyne/<id>.bin`` (float32
``x, y, z, reflectance`` per point), ``calib/<id>.txt`` (``P2``, ``R0_rect``,
``Tr_velo_to_cam`` among others) and, optionally, ``label_2/<id>.txt``
(``type truncated occluded alpha x1 y1 x2 y2 h w l X Y Z rotation_y``).
The calibration (``Calibration``, ``read_calibration``) is in ``operators.calibration``.

>>> import tempfile
>>> import numpy as np
>>> from operators import Context
>>> from operators.calibration import Calibration, read_calibration
>>> root = tempfile.mkdtemp()
>>> calib = Calibration(
...     P2=np.array([[700.0, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]]),
...     R0_rect=np.eye(3),
...     Tr_velo_to_cam=np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]),
... )
>>> ped = KittiObject("Pedestrian", 0.0, 0, 0.0, (580.0, 100.0, 620.0, 260.0),
...                   (1.8, 0.5, 1.0), (0.0, 1.6, 10.0), 0.0)
>>> write_kitti_frame(root, "000000", image=np.zeros((360, 1200, 3), np.uint8),
...                   points=np.array([[10.0, 0.0, 0.0, 0.5]], np.float32),
...                   calibration=calib, labels=[ped])
>>> source = KittiSource(root)
>>> source.setup(Context(operator="kitti", node="car-1"))
>>> [(port, m.source, m.event_ts, sorted(m.payload)) for port, m in source.poll(0)]
...     # doctest: +NORMALIZE_WHITESPACE
[('camera', 'kitti@car-1/camera', 0, ['P2', 'R0_rect', 'Tr_velo_to_cam', 'frame', 'image']),
 ('lidar', 'kitti@car-1/lidar', 0, ['frame', 'points'])]
>>> source.poll(0) is None
True
>>> uv, depth = read_calibration(f"{root}/calib/000000.txt").velo_to_image(
...     np.array([[10.0, 0.0, 0.0]]))
>>> uv.round(1).tolist(), depth.tolist()        # straight ahead: the principal point
([[600.0, 180.0]], [10.0])
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Context, Field, Outputs, Port, Source
from operators.calibration import Calibration, read_calibration, write_calibration

#: Bytes per velodyne point: four float32 (x, y, z, reflectance).
POINT_BYTES = 16
#: KITTI label rows that mark regions to ignore; ``read_labels`` leaves them out.
IGNORED_TYPES = ("DontCare",)

CAMERA_SCHEMA = {
    "image": Field("uint8", (None, None, 3)),
    "P2": Field("float64", (3, 4)),
    "R0_rect": Field("float64", (3, 3)),
    "Tr_velo_to_cam": Field("float64", (3, 4)),
}
LIDAR_SCHEMA = {"points": Field("float32", (None, 4))}


# -- labels ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KittiObject:
    """One labelled object: class, 2-D box in pixels, 3-D box in rectified camera coords.

    ``box`` is ``(x1, y1, x2, y2)``; ``dimensions`` ``(h, w, l)`` in metres;
    ``location`` ``(X, Y, Z)`` is the bottom centre of the 3-D box (Z: depth ahead).
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    box: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float

    def line(self) -> str:
        """The object as a KITTI label line."""
        numbers = [*self.box, *self.dimensions, *self.location, self.rotation_y]
        head = f"{self.type} {self.truncated:.2f} {self.occluded} {self.alpha:.2f}"
        return head + "".join(f" {v:.2f}" for v in numbers)


def read_labels(path: str | os.PathLike[str]) -> list[KittiObject]:
    """Read a KITTI ``label_2/<id>.txt``; ``DontCare`` rows are left out.

    Raises ``OperatorError`` naming the file and line when a row has fewer than
    15 fields or a field that is not a number.
    """
    path = os.fspath(path)
    try:
        text = pathlib.Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise OperatorError(f"cannot read KITTI label file {path!r}: {err}") from err
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] in IGNORED_TYPES:
            continue
        if len(fields) < 15:
            raise OperatorError(
                f"KITTI label file {path!r} line {number} has {len(fields)} fields, expected 15: "
                "type truncated occluded alpha x1 y1 x2 y2 h w l X Y Z rotation_y"
            )
        try:
            v = [float(x) for x in fields[1:15]]
        except ValueError as err:
            raise OperatorError(f"KITTI label file {path!r} line {number}: {err}") from err
        objects.append(
            KittiObject(fields[0], v[0], int(v[1]), v[2], tuple(v[3:7]), tuple(v[7:10]),
                        tuple(v[10:13]), v[13])
        )  # fmt: skip
    return objects


def labels_truth(objects: Sequence[KittiObject]) -> dict[str, Any]:
    """Labels as ``Message.truth`` fields: ``classes`` (list of str), ``boxes`` Kx4,
    ``dimensions`` Kx3, ``locations`` Kx3, ``rotation_y``, ``truncated`` (float32) and
    ``occluded`` (int8)."""
    return {
        "classes": [o.type for o in objects],
        "boxes": np.array([o.box for o in objects], np.float32).reshape(-1, 4),
        "dimensions": np.array([o.dimensions for o in objects], np.float32).reshape(-1, 3),
        "locations": np.array([o.location for o in objects], np.float32).reshape(-1, 3),
        "rotation_y": np.array([o.rotation_y for o in objects], np.float32),
        "truncated": np.array([o.truncated for o in objects], np.float32),
        "occluded": np.array([o.occluded for o in objects], np.int8),
    }


# -- files of one frame -----------------------------------------------------------------------
def read_velodyne(path: str | os.PathLike[str]) -> np.ndarray:
    """A velodyne scan as float32 Nx4; ``OperatorError`` naming the file when it is truncated."""
    path = os.fspath(path)
    try:
        raw = pathlib.Path(path).read_bytes()
    except OSError as err:
        raise OperatorError(f"cannot read velodyne scan {path!r}: {err}") from err
    if len(raw) % POINT_BYTES:
        raise OperatorError(
            f"velodyne scan {path!r} is {len(raw)} bytes, not a multiple of {POINT_BYTES} "
            f"(4 float32 per point: x, y, z, reflectance); the file is truncated or not a "
            f"KITTI .bin scan ({len(raw) % POINT_BYTES} bytes left over)"
        )
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(-1, 4)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image as uint8 HxWx3 BGR; ``OperatorError`` naming the file when it cannot be read."""
    path = os.fspath(path)
    image = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
    if image is None:
        why = "does not exist" if not os.path.exists(path) else "could not be decoded"
        raise OperatorError(
            f"camera image {path!r} {why} (cv2.imread returned None); "
            "expected a PNG (or another image format OpenCV reads)"
        )
    return image


def write_kitti_frame(
    directory: str | os.PathLike[str],
    frame_id: str,
    *,
    image: np.ndarray,
    points: np.ndarray,
    calibration: Calibration,
    labels: Iterable[KittiObject] | None = None,
) -> None:
    """Write one frame in the KITTI layout (e.g. simulator output for KITTI-layout tools)."""
    root = pathlib.Path(directory)
    for sub in ("image_2", "velodyne", "calib") + (("label_2",) if labels is not None else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(root / "image_2" / f"{frame_id}.png"), image):
        raise OperatorError(f"could not write {root / 'image_2' / f'{frame_id}.png'}")
    (root / "velodyne" / f"{frame_id}.bin").write_bytes(
        np.ascontiguousarray(points, dtype="<f4").reshape(-1, 4).tobytes()
    )
    write_calibration(root / "calib" / f"{frame_id}.txt", calibration)
    if labels is not None:
        text = "".join(o.line() + "\n" for o in labels)
        (root / "label_2" / f"{frame_id}.txt").write_text(text)


# -- the source -------------------------------------------------------------------------------
class KittiSource(Source):
    """Reads a KITTI-style directory frame by frame: one ``camera`` and one ``lidar`` per poll.

    Inputs: none.
    Outputs:
      ``camera``: payload ``{"image": uint8 HxWx3 BGR, "P2": 3x4, "R0_rect": 3x3,
      "Tr_velo_to_cam": 3x4 (float64), "frame": int}``.
      ``lidar``: payload ``{"points": float32 Nx4 (x, y, z, reflectance), "frame": int}``.
      Both messages of a frame share ``seq`` (the frame's index) and ``event_ts``
      (``start_ns + index * period_ns``: 10 Hz by default); their sources are
      ``<source_id>/camera`` and ``<source_id>/lidar``, so their keys differ.
      When ``label_2/<id>.txt`` exists, both carry the labels in ``truth``
      (``labels_truth``: classes, boxes, dimensions, locations, ...; DontCare left out).
    Parameters:
      ``directory``: the dataset root (holding ``image_2/``, ``velodyne/``, ``calib/``
      and optionally ``label_2/``); listed in ``setup`` on the node where it runs.
      ``period_ns``, ``start_ns`` (keyword-only): event-time spacing and origin.
      ``max_frames`` (keyword-only): stop after this many frames (``None``: all).
      ``source_id`` (keyword-only): the prefix of the sources (``""``:
      ``<operator>@<node>``).

    Frames are the ``image_2/*.png`` names in sorted order. A frame whose image
    cannot be decoded, whose scan is truncated (size not a multiple of 16 bytes)
    or whose calibration lacks a key makes ``poll`` raise an ``OperatorError``
    naming the file; the runtime dead-letters it with that cause and the next
    poll reads the next frame. ``snapshot()`` is the position (next frame index).
    """

    outputs = (Port("camera", CAMERA_SCHEMA), Port("lidar", LIDAR_SCHEMA))

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        period_ns: int = 100_000_000,
        start_ns: int = 0,
        max_frames: int | None = None,
        source_id: str = "",
    ) -> None:
        if period_ns <= 0:
            raise OperatorError(f"period_ns={period_ns}; use a positive number of nanoseconds")
        if max_frames is not None and max_frames < 0:
            raise OperatorError(f"max_frames={max_frames}; use None or a count of 0 or more")
        self.directory = os.fspath(directory)
        self.period_ns = period_ns
        self.start_ns = start_ns
        self.max_frames = max_frames
        self.source_id = source_id
        self.position = 0  # index of the next frame to read
        self.frame_ids: list[str] = []  # listed in setup
        self._prefix = source_id or "kitti"

    def setup(self, ctx: Context) -> None:
        self._prefix = self.source_id or f"{ctx.operator}@{ctx.node}"
        images = pathlib.Path(self.directory) / "image_2"
        if not images.is_dir():
            raise OperatorError(
                f"{self.directory!r} has no image_2/ directory (working directory "
                f"{os.getcwd()!r}); pass a KITTI-style root holding image_2/, velodyne/ and "
                "calib/ (optionally label_2/)",
                operator=ctx.operator,
            )
        self.frame_ids = sorted(p.stem for p in images.glob("*.png"))

    def snapshot(self) -> int:
        return self.position

    def restore(self, state: int) -> None:
        self.position = int(state)

    def poll(self, now: int) -> Outputs | None:
        limit = len(self.frame_ids)
        if self.max_frames is not None:
            limit = min(limit, self.max_frames)
        if self.position >= limit:
            return None
        index = self.position
        self.position += 1  # a failing frame is dead-lettered; the next poll moves on
        frame_id = self.frame_ids[index]
        root = pathlib.Path(self.directory)
        image = read_image(root / "image_2" / f"{frame_id}.png")
        points = read_velodyne(root / "velodyne" / f"{frame_id}.bin")
        calibration = read_calibration(root / "calib" / f"{frame_id}.txt")
        label_path = root / "label_2" / f"{frame_id}.txt"
        truth = labels_truth(read_labels(label_path)) if label_path.exists() else None
        event_ts = self.start_ns + index * self.period_ns
        camera = {"image": image, **calibration.as_payload(), "frame": index}
        lidar = {"points": points, "frame": index}
        return [
            ("camera", Message(f"{self._prefix}/camera", index, event_ts, camera, truth=truth)),
            ("lidar", Message(f"{self._prefix}/lidar", index, event_ts, lidar, truth=_copy(truth))),
        ]


def _copy(truth: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if truth is None else dict(truth)
