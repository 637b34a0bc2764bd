"""KITTI-style camera/lidar calibration: the ``Calibration`` matrices and their file format.

A KITTI object ``calib/<id>.txt`` holds, one per line, ``KEY: v1 v2 ...``; the
three used here take a velodyne point into the left colour camera (``image_2``):
``Tr_velo_to_cam`` (3x4, velodyne → camera), ``R0_rect`` (3x3, rectifying
rotation) and ``P2`` (3x4, rectified camera → pixels).

>>> import numpy as np
>>> calib = Calibration.simple(focal=700.0, cx=600.0, cy=180.0)
>>> uv, depth = calib.velo_to_image(np.array([[10.0, 0.0, 0.0], [-5.0, 0.0, 0.0]]))
>>> uv[0].round(1).tolist(), depth.tolist()  # straight ahead: the principal point
([600.0, 180.0], [10.0, -5.0])
>>> Calibration.from_payload(calib.as_payload()) == calib
True
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators._errors import OperatorError

#: The calibration entries, in KITTI's names, with their matrix shapes.
CALIBRATION_KEYS = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}


@dataclass(frozen=True, eq=False)
class Calibration:
    """The matrices that take a velodyne point into the left colour camera (``image_2``).

    ``P2``: 3x4 projection of rectified camera coordinates to pixels.
    ``R0_rect``: 3x3 rectifying rotation. ``Tr_velo_to_cam``: 3x4 velodyne → camera.
    Arrays are finite, float64 and read-only (copied from what is passed);
    ``OperatorError`` names the matrix otherwise. Equal when all three matrices are.
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray

    def __post_init__(self) -> None:
        for name, shape in CALIBRATION_KEYS.items():
            array = np.array(getattr(self, name), dtype=np.float64)
            if array.shape != shape or not np.isfinite(array).all():
                got = f"shape {array.shape}" if array.shape != shape else "NaN or inf values"
                raise OperatorError(
                    f"calibration matrix {name} must be a finite {shape[0]}x{shape[1]} matrix, "
                    f"got {got}"
                )
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return all(np.array_equal(getattr(self, k), getattr(other, k)) for k in CALIBRATION_KEYS)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k).tobytes() for k in CALIBRATION_KEYS))

    def __reduce__(self) -> tuple[Any, ...]:
        # through the constructor, so an unpickled calibration is validated and read-only too
        return type(self), tuple(getattr(self, k) for k in CALIBRATION_KEYS)

    @classmethod
    def simple(cls, *, focal: float, cx: float, cy: float) -> Calibration:
        """A pinhole camera at the lidar's origin, looking along the lidar's +x (tests, sims)."""
        p2 = np.array([[focal, 0, cx, 0], [0, focal, cy, 0], [0, 0, 1, 0]], np.float64)
        velo_to_cam = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], np.float64)
        return cls(p2, np.eye(3), velo_to_cam)

    @classmethod
    def from_pinhole(cls, K: np.ndarray, T_cam_lidar: np.ndarray) -> Calibration:
        """A pinhole camera with intrinsics ``K`` (3x3) and the 4x4 ``T_cam_lidar`` taking
        lidar points to camera coordinates (the driving simulator's ``K`` and ``T_cam_ego``:
        its lidar reports points in the ego frame)."""
        p2 = np.hstack([np.asarray(K, np.float64), np.zeros((3, 1))])
        return cls(p2, np.eye(3), np.asarray(T_cam_lidar, np.float64)[:3])

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Calibration | None:
        """The calibration a message carries, or ``None`` when it carries none of the keys.

        ``OperatorError`` when it carries some of them only, or a malformed matrix.
        """
        present = [k for k in CALIBRATION_KEYS if k in payload]
        if not present:
            return None
        missing = [k for k in CALIBRATION_KEYS if k not in payload]
        if missing:
            raise OperatorError(f"payload has calibration {present} but not {missing}")
        return cls(*(payload[k] for k in CALIBRATION_KEYS))

    def as_payload(self) -> dict[str, np.ndarray]:
        """The matrices as payload fields (``P2``, ``R0_rect``, ``Tr_velo_to_cam``)."""
        return {k: getattr(self, k) for k in CALIBRATION_KEYS}

    def velo_to_rect_matrix(self) -> np.ndarray:
        """The 4x4 ``[R0_rect · Tr_velo_to_cam; 0 0 0 1]`` (lidar → rectified camera)."""
        rect = np.eye(4)
        rect[:3, :3] = self.R0_rect
        return rect @ np.vstack([self.Tr_velo_to_cam, [0, 0, 0, 1]])

    def velo_to_rect(self, points: np.ndarray) -> np.ndarray:
        """Velodyne points (Nx3 or Nx4: x, y, z[, reflectance]) → Nx3 rectified camera coords."""
        xyz = np.asarray(points, dtype=np.float64)[:, :3]
        homogeneous = np.hstack([xyz, np.ones((len(xyz), 1))])
        return (homogeneous @ self.velo_to_rect_matrix().T)[:, :3]

    def rect_to_image(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectified camera coords (Nx3) → (pixel ``uv`` Nx2, depth N: the camera z in m)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        projected = np.hstack([xyz, np.ones((len(xyz), 1))]) @ self.P2.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = projected[:, :2] / projected[:, 2:3]
        return uv, xyz[:, 2].copy()

    def velo_to_image(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project velodyne points into ``image_2``: (``uv`` Nx2 pixels, ``depth`` N metres).

        Every point comes back, float64; points behind the camera have ``depth <= 0``
        (their ``uv`` is meaningless): keep ``depth > 0`` and ``uv`` inside the image.
        """
        return self.rect_to_image(self.velo_to_rect(points))


def read_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a KITTI ``calib/<id>.txt`` (``KEY: v1 v2 ...`` per line) into a ``Calibration``.

    Raises ``OperatorError`` naming the file and the key when ``P2``, ``R0_rect``
    or ``Tr_velo_to_cam`` is missing or has the wrong number of values.
    """
    path = os.fspath(path)
    values: dict[str, list[float]] = {}
    try:
        text = pathlib.Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise OperatorError(f"cannot read KITTI calibration file {path!r}: {err}") from err
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        try:
            values[key.strip()] = [float(v) for v in rest.split()] if sep else []
        except ValueError as err:
            raise OperatorError(
                f"KITTI calibration file {path!r} line {number} ({key.strip()!r}): {err}; "
                "expected 'KEY: number number ...'"
            ) from err
    missing = [k for k in CALIBRATION_KEYS if k not in values]
    if missing:
        raise OperatorError(
            f"KITTI calibration file {path!r} lacks {', '.join(missing)}: it has no "
            f"{' or '.join(map(repr, missing))} entry (found: {', '.join(values) or 'nothing'}); "
            f"a KITTI object calibration needs {', '.join(CALIBRATION_KEYS)}, each as "
            "'KEY: v1 v2 ...' on its own line"
        )
    matrices = {}
    for key, shape in CALIBRATION_KEYS.items():
        count = shape[0] * shape[1]
        if len(values[key]) != count:
            raise OperatorError(
                f"KITTI calibration file {path!r}: {key!r} has {len(values[key])} values, "
                f"expected {count} (a {shape[0]}x{shape[1]} matrix, row by row)"
            )
        matrices[key] = np.array(values[key]).reshape(shape)
    try:
        return Calibration(**matrices)
    except OperatorError as err:
        raise OperatorError(f"KITTI calibration file {path!r}: {err}") from err


def write_calibration(path: str | os.PathLike[str], calibration: Calibration) -> None:
    """Write ``calibration`` in the KITTI text format ``read_calibration`` reads."""
    lines = [
        f"{name}: " + " ".join(f"{v:.12e}" for v in getattr(calibration, name).ravel())
        for name in CALIBRATION_KEYS
    ]
    pathlib.Path(path).write_text("\n".join(lines) + "\n")
