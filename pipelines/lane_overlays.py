"""Lane overlays on every real Udacity frame, as one PNG contact sheet (README's figure).

``python -m pipelines.lane_overlays [OUT.png]`` runs ``LaneDetector(geometry=True)`` on the
6 frames of ``lanes-udacity/p1`` and the 8 of ``lanes-udacity/advanced`` (those undistorted
with the calibration from that camera's 20 chessboard photos) and writes
``docs/lanes-udacity.png`` by default: the lane shaded between the fitted lines, the
offset, curvature and confidence written on each tile.
"""

from __future__ import annotations

import pathlib
import sys

import cv2

from operators import Message
from operators.lanes import LaneDetector, calibrate_from_chessboards, contact_sheet
from pipelines.data import PROJECT_ROOT, data_path

DEFAULT_OUT = PROJECT_ROOT / "docs" / "lanes-udacity.png"


def overlays(tile_width: int = 256) -> tuple:
    """The contact sheet (BGR) and how many frames had both lines."""
    images, results = [], []
    udacity = data_path("lanes-udacity")
    calibration = calibrate_from_chessboards(
        sorted((udacity / "advanced" / "camera_cal").glob("*.jpg"))
    )
    for folder, calib in (("p1", None), ("advanced", calibration)):
        detector = LaneDetector(geometry=True, calibration=calib)
        for i, path in enumerate(sorted((udacity / folder / "test_images").glob("*.jpg"))):
            image = cv2.imread(str(path))
            # each photo is its own stream: no smoothing across unrelated frames
            message = Message(f"{folder}/{path.name}", i, i, {"image": image})
            [(_, lanes)] = detector.process("frames", message)
            images.append(image)
            results.append(lanes.payload)
    both = sum(1 for r in results if r["found"] == 2)
    sized = [cv2.resize(im, (1280, 720)) if im.shape[1] != 1280 else im for im in images]
    scale = [1280 / im.shape[1] for im in images]
    scaled = [_scaled(r, s) for r, s in zip(results, scale, strict=True)]
    return contact_sheet(sized, scaled, columns=4, tile_width=tile_width), both, len(images)


def _scaled(result: dict, s: float) -> dict:
    """``result`` with its image points scaled by ``s`` (frames of two sizes on one sheet)."""
    out = dict(result)
    for key, value in result.items():
        if key.endswith("_points") or key in ("left", "right"):
            out[key] = value * s
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    out = pathlib.Path(args[0]) if args else DEFAULT_OUT
    sheet, both, total = overlays()
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"both lane lines on {both} of {total} frames; sheet written to {out}")


if __name__ == "__main__":
    main()
