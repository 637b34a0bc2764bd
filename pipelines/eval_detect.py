"""``edgeray eval detect DIR``: precision / recall / AP@0.5 per class on a KITTI-layout folder.

Layout: ``DIR/image_2/NAME.png`` and, for each, ``DIR/label_2/NAME.txt`` in the KITTI label
format (``type truncated occluded alpha x1 y1 x2 y2 ...``; only the type and 2-D box are
read). Every image goes through ``ObjectDetector`` (the operator the pipeline uses) with
one of two detectors (``DETECTORS``):

- ``sim``: the project's own detector (``models/artifacts/sim-detector/model.onnx``), whose
  classes are the simulator's: labels ``vehicle``, ``pedestrian``, ``sign`` (the folders
  ``pipelines.detector_dataset.write_kitti`` writes);
- ``yolox``: YOLOX-nano (COCO) on real KITTI frames, with COCO ``car``, ``bus`` and
  ``truck`` counted as KITTI ``Car`` and ``person`` as ``Pedestrian``.

Scoring: a detection of a class matches the unmatched label of the same type with the
highest IoU if that IoU is >= 0.5 (a true positive), else it is a false positive, unless
at least half of its area lies in a label that is not scored (``DontCare``, and types the
detector has no class for, e.g. KITTI ``Van``, ``Truck``, ``Cyclist``): then it is
ignored, as KITTI's own evaluation does. AP@0.5 is the area under the interpolated
precision / recall curve (all points, as PASCAL VOC 2010+), over detections scoring at
least ``CURVE_MIN_SCORE``; precision and recall are also reported at the detector's
operating threshold. ``map50`` is the mean AP over the classes that have labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from models import EdgerayError
from operators import Context
from operators.detection import SIM_DETECTOR, ObjectDetector
from pipelines.data import data_path

IOU = 0.5
#: Detections below this score are not asked for (the precision / recall curve starts here).
CURVE_MIN_SCORE = 0.05


class DetectEvalError(EdgerayError):
    """A detection evaluation folder that is not laid out as ``eval detect`` expects."""


@dataclass(frozen=True)
class Detector:
    """A detector to evaluate: its ONNX file, layout and which label type each class finds."""

    model: str
    labels: Mapping[int, str]  # model class id -> KITTI label type
    num_classes: int
    input_size: int = 416

    def operator(self, score_threshold: float) -> ObjectDetector:
        return ObjectDetector(model=self.model, score_threshold=score_threshold,
                              classes=tuple(self.labels), num_classes=self.num_classes,
                              input_size=self.input_size)  # fmt: skip


def sim_detector() -> Detector:
    """The project's detector for the simulator's world (classes ``vehicle``, ``pedestrian``,
    ``sign``, named as the simulator's KITTI folders name them)."""
    return Detector(str(SIM_DETECTOR), {0: "vehicle", 1: "pedestrian", 2: "sign"}, 3)


def yolox_nano() -> Detector:
    """YOLOX-nano (shared data): COCO car / bus / truck -> ``Car``, person -> ``Pedestrian``."""
    model = data_path("detector-yolox-nano", "yolox_nano.onnx")
    return Detector(str(model), {2: "Car", 5: "Car", 7: "Car", 0: "Pedestrian"}, 80)


DETECTORS = {"sim": sim_detector, "yolox": yolox_nano}


@dataclass
class ClassScore:
    """One label type: its label count and every detection as ``(score, true positive)``."""

    labels: int = 0
    detections: list[tuple[float, bool]] = field(default_factory=list)

    def ap(self) -> float:
        """All-point interpolated average precision."""
        if not self.labels:
            return 0.0
        order = sorted(self.detections, key=lambda d: -d[0])
        tp = np.cumsum([hit for _, hit in order], dtype=np.float64)
        fp = np.cumsum([not hit for _, hit in order], dtype=np.float64)
        recall = np.concatenate([[0.0], tp / self.labels, [1.0]])
        precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1e-9), [0.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        return float(np.sum(np.diff(recall) * precision[1:]))

    def at(self, threshold: float) -> tuple[float, float, int, int]:
        """``(precision, recall, true positives, false positives)`` at a score threshold."""
        kept = [hit for score, hit in self.detections if score >= threshold]
        tp = sum(kept)
        fp = len(kept) - tp
        return (tp / len(kept) if kept else 0.0, tp / self.labels if self.labels else 0.0, tp, fp)


@dataclass(frozen=True)
class DetectEval:
    """An evaluation: per label type scores, the image count and the operating threshold."""

    classes: Mapping[str, ClassScore]
    images: int
    threshold: float

    def summary(self) -> dict:
        per = {}
        for name, s in self.classes.items():
            p, r, tp, fp = s.at(self.threshold)
            per[name] = {"labels": s.labels, "tp": tp, "fp": fp, "precision": round(p, 4),
                         "recall": round(r, 4), "ap50": round(s.ap(), 4)}  # fmt: skip
        scored = [v["ap50"] for v in per.values() if v["labels"]]
        tp = sum(v["tp"] for v in per.values())
        dets = tp + sum(v["fp"] for v in per.values())
        labels = sum(v["labels"] for v in per.values())
        return {
            "images": self.images,
            "iou": IOU,
            "score_threshold": self.threshold,
            "classes": per,
            "ap50": {k: v["ap50"] for k, v in per.items()},
            "map50": round(float(np.mean(scored)), 4) if scored else 0.0,
            "precision": round(tp / dets, 4) if dets else 0.0,
            "recall": round(tp / labels, 4) if labels else 0.0,
        }


def read_labels(path: Path) -> list[tuple[str, np.ndarray]]:
    """``(type, [x1, y1, x2, y2])`` of each line of a KITTI label file."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            box = np.array([float(v) for v in parts[4:8]], np.float64)
        except ValueError:
            box = np.zeros(0)
        if len(box) != 4:
            raise DetectEvalError(
                f"{path}:{n}: not a KITTI label line ({line.strip()!r}); expected "
                "'type truncated occluded alpha x1 y1 x2 y2 ...'"
            )
        out.append((parts[0], box))
    return out


def _iou(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of ``box`` with each of ``boxes`` and the share of ``box``'s area inside each."""
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = max(float(np.prod(box[2:] - box[:2])), 1e-9)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    return inter / (area + areas - inter), inter / area


def score_image(
    labels: list[tuple[str, np.ndarray]],
    detections: list[tuple[str, float, np.ndarray]],
    scores: dict[str, ClassScore],
) -> None:
    """Add one image's ``(type, score, box)`` detections to ``scores`` (keyed by scored type)."""
    ignore = np.array([b for t, b in labels if t not in scores]).reshape(-1, 4)
    for name, score in scores.items():
        gt = np.array([b for t, b in labels if t == name]).reshape(-1, 4)
        score.labels += len(gt)
        taken = np.zeros(len(gt), bool)
        mine = sorted((d for d in detections if d[0] == name), key=lambda d: -d[1])
        for _, confidence, box in mine:
            iou = _iou(box, gt)[0] if len(gt) else np.zeros(0)
            iou[taken] = -1.0
            if len(iou) and iou.max() >= IOU:
                taken[int(iou.argmax())] = True
                score.detections.append((confidence, True))
            elif not (len(ignore) and _iou(box, ignore)[1].max() >= 0.5):
                score.detections.append((confidence, False))


def evaluate_detections(
    directory: str | os.PathLike[str],
    *,
    detector: Detector | None = None,
    score_threshold: float = 0.3,
) -> DetectEval:
    """Run ``detector`` (default: the project's own) over ``directory`` and score it.

    Raises ``DetectEvalError`` when ``image_2/`` holds no PNG or a label is missing / unreadable.
    """
    root = Path(directory)
    images = sorted((root / "image_2").glob("*.png"))
    if not images:
        raise DetectEvalError(
            f"no PNG images in {root / 'image_2'}; expected DIR/image_2/*.png with KITTI "
            "labels of the same name in DIR/label_2/*.txt"
        )
    detector = detector or sim_detector()
    op = detector.operator(min(CURVE_MIN_SCORE, score_threshold))
    op.setup(Context(operator="eval-detect"))
    scores = {name: ClassScore() for name in dict.fromkeys(detector.labels.values())}
    for path in images:
        label_path = root / "label_2" / f"{path.stem}.txt"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or not label_path.exists():
            which = path if image is None else label_path
            raise DetectEvalError(f"cannot read {which}; each image_2/NAME.png needs a readable "
                                  "KITTI label file label_2/NAME.txt")  # fmt: skip
        boxes, confidences, classes = op.detect(image)
        found = [(detector.labels[int(c)], float(s), b.astype(np.float64))
                 for b, s, c in zip(boxes, confidences, classes, strict=True)]  # fmt: skip
        score_image(read_labels(label_path), found, scores)
    op.teardown()
    return DetectEval(scores, len(images), float(score_threshold))


def report(evaluation: DetectEval) -> str:
    """A plain-text table (one row per class, then the mean) and a last-line JSON."""
    summary = evaluation.summary()
    rows = [f"{'class':<12} {'labels':>6} {'tp':>5} {'fp':>5} {'precision':>9} {'recall':>7} "
            f"{'AP@0.5':>7}"]  # fmt: skip
    for name, c in summary["classes"].items():
        rows.append(f"{name:<12} {c['labels']:>6} {c['tp']:>5} {c['fp']:>5} "
                    f"{c['precision']:>9.3f} {c['recall']:>7.3f} {c['ap50']:>7.3f}")  # fmt: skip
    pooled = f"{summary['precision']:>9.3f} {summary['recall']:>7.3f} {summary['map50']:>7.3f}"
    rows.append(f"{'all':<12} {'':>6} {'':>5} {'':>5} {pooled}   mAP@0.5, {summary['images']} "
                f"images, P / R at score >= {evaluation.threshold:g}")  # fmt: skip
    rows.append(json.dumps(summary))
    return "\n".join(rows)


__all__ = [
    "DETECTORS",
    "ClassScore",
    "DetectEval",
    "DetectEvalError",
    "Detector",
    "evaluate_detections",
    "read_labels",
    "report",
    "score_image",
    "sim_detector",
    "yolox_nano",
]
