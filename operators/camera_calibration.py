"""Intrinsic camera calibration from chessboard photos, and undistortion.

``calibrate_from_chessboards`` finds the inner corners of a chessboard in each image
(``cv2.findChessboardCorners``, refined to sub-pixel) and solves for the camera matrix and
distortion coefficients (``cv2.calibrateCamera``). ``undistort`` applies the result.

>>> cal = CameraCalibration(np.eye(3), np.zeros(5), 0.0, (4, 3))
>>> undistort(np.zeros((3, 4, 3), np.uint8), cal).shape
(3, 4, 3)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from operators._errors import OperatorError


@dataclass(frozen=True)
class CameraCalibration:
    """A calibrated camera: ``K`` (3x3), distortion ``dist`` (OpenCV order k1 k2 p1 p2 k3),
    ``rms`` reprojection error (pixels), the ``image_size`` (width, height) it holds for,
    and which images were ``used`` / ``skipped`` (no board found) when it was computed.
    """

    K: np.ndarray
    dist: np.ndarray
    rms: float
    image_size: tuple[int, int]
    used: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def calibrate_from_chessboards(
    paths: Sequence[str | os.PathLike[str]],
    *,
    pattern: tuple[int, int] = (9, 6),
    square: float = 1.0,
) -> CameraCalibration:
    """Calibrate a camera from photos of a chessboard with ``pattern`` inner corners.

    ``paths``: image files; ``square``: the board's square size (sets the unit of the
    extrinsics only). Images of another size than the most common one (e.g. the two
    1281x721 photos among Udacity's 1280x720) have their corners scaled to that size.
    Raises ``OperatorError`` naming the files when fewer than 3 boards are found.
    """
    board = np.zeros((pattern[0] * pattern[1], 3), np.float32)
    board[:, :2] = np.mgrid[0 : pattern[0], 0 : pattern[1]].T.reshape(-1, 2) * square
    found: list[tuple[str, tuple[int, int], np.ndarray]] = []
    skipped: list[str] = []
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise OperatorError(f"cannot read chessboard image {str(path)!r}")
        ok, corners = cv2.findChessboardCorners(gray, pattern, None)
        if not ok:
            skipped.append(os.path.basename(path))
            continue
        corners = cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), criteria)
        found.append((os.path.basename(path), (gray.shape[1], gray.shape[0]), corners))
    if found:
        size = Counter(s for _, s, _ in found).most_common(1)[0][0]
        skipped += [f"{n} ({s[0]}x{s[1]})" for n, s, _ in found if s != size]
        found = [item for item in found if item[1] == size]
    if len(found) < 3:
        raise OperatorError(
            f"found a {pattern[0]}x{pattern[1]} chessboard in only {len(found)} usable of "
            f"{len(paths)} images (skipped: {skipped}); check `pattern` (inner corners "
            "per row, per column) and give at least 3 photos of the whole board, one size"
        )
    image_points = [c for _, _, c in found]
    rms, K, dist, _, _ = cv2.calibrateCamera([board] * len(found), image_points, size, None, None)
    return CameraCalibration(np.asarray(K), np.asarray(dist).ravel(), float(rms), size,
                             tuple(n for n, _, _ in found), tuple(skipped))  # fmt: skip


def undistort(image: np.ndarray, calibration: CameraCalibration) -> np.ndarray:
    """``image`` with ``calibration``'s lens distortion removed (same size, same K)."""
    return cv2.undistort(image, calibration.K, calibration.dist, None, calibration.K)
