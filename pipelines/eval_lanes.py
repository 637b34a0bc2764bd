"""``edgeray eval lanes DIR``: pixel-level lane precision / recall / F1 on a labelled folder.

Layout (TuSimple-style): ``DIR/image/*.png`` and, for each, a binary lane mask of the same
name in ``DIR/gt_binary_image/`` (non-zero on lane lines); optionally ``DIR/camera.json``
with ``K`` (3x3) and ``T_cam_ego`` (4x4), handed to the detector as the simulator does.

Each image goes through ``LaneDetector(geometry=True)`` on its own (no smoothing across
images). Its fitted lines (``left_points`` / ``right_points``) are drawn 1 px wide. A
detected pixel is a true positive when a mask pixel lies within ``tolerance_px``
(Euclidean), a mask pixel is recalled when a detected pixel lies within ``tolerance_px``;
precision and recall are summed over all pixels of all images, F1 from those.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models import EdgerayError
from operators import Message
from operators.lanes import LaneDetector

DEFAULT_TOLERANCE_PX = 5.0


class LaneEvalError(EdgerayError):
    """A lane evaluation folder that is not laid out as ``eval lanes`` expects."""


@dataclass(frozen=True)
class ImageScore:
    """Pixel counts for one image: detected, detected near the mask, mask, mask recalled."""

    name: str
    detected: int
    detected_hit: int
    mask: int
    mask_hit: int
    lines: int


@dataclass(frozen=True)
class LaneEval:
    """An evaluation: per-image scores, the tolerance and the pooled figures."""

    images: tuple[ImageScore, ...]
    tolerance_px: float

    @property
    def precision(self) -> float:
        d = sum(s.detected for s in self.images)
        return sum(s.detected_hit for s in self.images) / d if d else 0.0

    @property
    def recall(self) -> float:
        m = sum(s.mask for s in self.images)
        return sum(s.mask_hit for s in self.images) / m if m else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> dict:
        return {
            "images": len(self.images),
            "tolerance_px": self.tolerance_px,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "both_lines": sum(s.lines == 2 for s in self.images),
        }


def score_image(
    detected: np.ndarray, mask: np.ndarray, *, tolerance_px: float, name: str = "", lines: int = 0
) -> ImageScore:
    """Pixel counts of a binary ``detected`` raster against a binary ``mask`` (same shape)."""
    det, gt = detected > 0, mask > 0
    to_gt = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, 5)
    to_det = cv2.distanceTransform((~det).astype(np.uint8), cv2.DIST_L2, 5)
    return ImageScore(name, int(det.sum()), int((det & (to_gt <= tolerance_px)).sum()),
                      int(gt.sum()), int((gt & (to_det <= tolerance_px)).sum()), lines)  # fmt: skip


def rasterise(result: dict, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (0 / 255) raster of a ``LaneDetector`` result's fitted lines, 1 px wide."""
    out = np.zeros(shape, np.uint8)
    for side in ("left", "right"):
        pts = np.asarray(result.get(f"{side}_points", np.zeros((0, 2))))
        if len(pts) >= 2:
            cv2.polylines(out, [np.round(pts).astype(np.int32)], False, 255, 1)
    return out


def evaluate_lanes(
    directory: str | os.PathLike[str], *, tolerance_px: float = DEFAULT_TOLERANCE_PX
) -> LaneEval:
    """Run the lane detector over ``directory`` (layout above) and score it.

    Raises ``LaneEvalError`` when ``image/`` holds no PNG or a mask is missing / unreadable.
    """
    root = Path(directory)
    images = sorted((root / "image").glob("*.png"))
    if not images:
        raise LaneEvalError(f"no PNG images in {root / 'image'}; expected DIR/image/*.png with "
                            "masks of the same name in DIR/gt_binary_image/")  # fmt: skip
    camera = {}
    if (root / "camera.json").exists():
        raw = json.loads((root / "camera.json").read_text())
        missing = {"K", "T_cam_ego"} - set(raw)
        if missing:
            raise LaneEvalError(f"{root / 'camera.json'} lacks {sorted(missing)}; it needs "
                                "'K' (3x3) and 'T_cam_ego' (4x4) as nested lists")  # fmt: skip
        camera = {k: np.asarray(raw[k], np.float64) for k in ("K", "T_cam_ego")}
    scores = []
    for seq, path in enumerate(images):
        gt_path = root / "gt_binary_image" / path.name
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE) if gt_path.exists() else None
        if image is None or mask is None:
            which = path if image is None else gt_path
            raise LaneEvalError(f"cannot read {which}; each image/NAME.png needs a readable "
                                "binary mask gt_binary_image/NAME.png")  # fmt: skip
        if mask.shape != image.shape[:2]:
            raise LaneEvalError(f"{gt_path} is {mask.shape[1]}x{mask.shape[0]}, its image "
                                f"{image.shape[1]}x{image.shape[0]}: they must match")  # fmt: skip
        message = Message("eval", seq, 0, {"image": image, **camera})
        [(_, out)] = LaneDetector(geometry=True).process("frames", message)
        result = out.payload
        lines = sum(len(result[f"{s}_fit"]) > 0 for s in ("left", "right"))
        scores.append(score_image(rasterise(result, mask.shape), mask, tolerance_px=tolerance_px,
                                  name=path.name, lines=lines))  # fmt: skip
    return LaneEval(tuple(scores), float(tolerance_px))


def report(evaluation: LaneEval) -> str:
    """A plain-text table (one row per image, then the totals) and a last-line JSON."""
    rows = [f"{'image':<36} {'lines':>5} {'precision':>9} {'recall':>7}"]
    for s in evaluation.images:
        p = s.detected_hit / s.detected if s.detected else 0.0
        r = s.mask_hit / s.mask if s.mask else 0.0
        rows.append(f"{s.name:<36} {s.lines:>5} {p:>9.3f} {r:>7.3f}")
    summary = evaluation.summary()
    rows.append(f"{'all (pixels pooled)':<36} {'':>5} {summary['precision']:>9.3f} "
                f"{summary['recall']:>7.3f}   F1 {summary['f1']:.3f} "
                f"(tolerance {evaluation.tolerance_px:g} px)")  # fmt: skip
    rows.append(json.dumps(summary))
    return "\n".join(rows)


__all__ = ["ImageScore", "LaneEval", "LaneEvalError", "evaluate_lanes", "report", "score_image"]
