"""``eval detect``: matching and AP on a KITTI folder with known answers, then real detectors."""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from pipelines.detector_dataset import sim_frames, write_kitti
from pipelines.eval_detect import (
    DetectEvalError,
    Detector,
    evaluate_detections,
    report,
    yolox_nano,
)

PERSON, CAR = 0, 2
UNKNOWN_3D = "-1 -1 -1 -1000 -1000 -1000 -10"

#: Two images. Car labels A, B (image 0) and C (image 1); a DontCare and a Van (not scored).
LABELS = {
    "000000": [("Car", [10, 10, 50, 50]), ("Car", [100, 10, 150, 60]),
               ("DontCare", [200, 100, 230, 120]), ("Van", [10, 100, 60, 150])],
    "000001": [("Pedestrian", [20, 20, 40, 80]), ("Car", [100, 100, 160, 140])],
}  # fmt: skip
#: What the scripted detector reports per image: (COCO class, score, box).
DETECTIONS = {
    "000000": [(CAR, 0.9, [11, 11, 50, 50]),  # A: true positive
               (CAR, 0.8, [300, 10, 340, 50]),  # nothing there: false positive
               (CAR, 0.7, [102, 12, 150, 62]),  # B: true positive
               (CAR, 0.6, [205, 102, 225, 118]),  # inside the DontCare: ignored
               (CAR, 0.5, [12, 102, 60, 150])],  # on the Van: ignored
    "000001": [(PERSON, 0.95, [20, 22, 40, 80]),  # the pedestrian: true positive
               (CAR, 0.65, [105, 100, 160, 140]),  # C: true positive
               (CAR, 0.64, [100, 104, 158, 140])],  # C again: a duplicate, false positive
}  # fmt: skip
#: Cars by score: T F T T F over 3 labels -> interpolated AP = 1/3 * 1 + 2/3 * 0.75.
CAR_AP = 1 / 3 + 2 / 3 * 0.75


@dataclass
class _Scripted:
    """Stands in for ObjectDetector: returns DETECTIONS in image order."""

    order: list

    def setup(self, ctx) -> None:
        pass

    def teardown(self) -> None:
        pass

    def detect(self, image):
        rows = DETECTIONS[self.order.pop(0)]
        return (np.array([r[2] for r in rows], np.float32), np.array([r[1] for r in rows]),
                np.array([r[0] for r in rows]))  # fmt: skip


@dataclass(frozen=True)
class ScriptedDetector(Detector):
    def operator(self, score_threshold: float):
        return _Scripted(sorted(DETECTIONS))


SCRIPTED = ScriptedDetector("scripted", {CAR: "Car", PERSON: "Pedestrian"}, 80)


@pytest.fixture
def known(tmp_path):
    (tmp_path / "image_2").mkdir()
    (tmp_path / "label_2").mkdir()
    for name, labels in LABELS.items():
        cv2.imwrite(str(tmp_path / "image_2" / f"{name}.png"), np.zeros((200, 400, 3), np.uint8))
        lines = [f"{t} 0.00 0 -10 {' '.join(map(str, b))} {UNKNOWN_3D}\n" for t, b in labels]
        (tmp_path / "label_2" / f"{name}.txt").write_text("".join(lines))
    return tmp_path


def test_known_answers(known):
    summary = evaluate_detections(known, detector=SCRIPTED, score_threshold=0.3).summary()

    car, person = summary["classes"]["Car"], summary["classes"]["Pedestrian"]
    assert (car["labels"], car["tp"], car["fp"]) == (3, 3, 2)
    assert (car["precision"], car["recall"]) == (0.6, 1.0)
    assert car["ap50"] == pytest.approx(CAR_AP, abs=1e-4)
    assert (person["labels"], person["tp"], person["fp"], person["ap50"]) == (1, 1, 0, 1.0)
    assert summary["map50"] == pytest.approx((CAR_AP + 1.0) / 2, abs=1e-4)
    assert (summary["precision"], summary["recall"]) == (round(4 / 6, 4), 1.0)


def test_precision_and_recall_follow_the_score_threshold(known):
    summary = evaluate_detections(known, detector=SCRIPTED, score_threshold=0.75).summary()

    car = summary["classes"]["Car"]
    assert (car["tp"], car["fp"], car["recall"]) == (1, 1, round(1 / 3, 4))
    assert car["ap50"] == pytest.approx(CAR_AP, abs=1e-4)  # AP does not depend on it


def test_report_ends_with_a_json_summary(known):
    lines = report(evaluate_detections(known, detector=SCRIPTED)).splitlines()

    summary = json.loads(lines[-1])
    assert set(summary["ap50"]) == {"Car", "Pedestrian"} and "map50" in summary
    assert lines[1].startswith("Car")


def test_bad_folders_say_what_is_expected(tmp_path, known):
    with pytest.raises(DetectEvalError, match=r"no PNG images in .*image_2"):
        evaluate_detections(tmp_path / "missing", detector=SCRIPTED)
    (known / "label_2" / "000001.txt").unlink()
    with pytest.raises(DetectEvalError, match=r"000001.txt; each image_2/NAME.png needs"):
        evaluate_detections(known, detector=SCRIPTED)
    (known / "label_2" / "000001.txt").write_text("Car 0 0 -10 1 2 x 4\n")
    with pytest.raises(DetectEvalError, match=r"000001.txt:1: not a KITTI label line"):
        evaluate_detections(known, detector=SCRIPTED)


@pytest.mark.usefixtures("one_opencv_thread")
def test_own_detector_on_a_held_out_simulator_folder(tmp_path):
    # seed 3 of every scenario, held out: neither trained on nor in the MANIFEST's figures
    root = write_kitti(tmp_path / "sim", sim_frames(seeds=(3,), held_out=True, camera_hz=0.5))

    summary = evaluate_detections(root).summary()
    print(summary)

    assert summary["images"] == len(list((root / "image_2").glob("*.png"))) >= 40
    assert all(c["labels"] > 0 for c in summary["classes"].values())
    assert summary["map50"] >= 0.8  # measured 0.999 (50 frames)


@pytest.mark.usefixtures("one_opencv_thread")
def test_yolox_on_the_real_kitti_frames(requires_data):
    kitti = requires_data("kitti-sample")
    requires_data("detector-yolox-nano", "yolox_nano.onnx")

    summary = evaluate_detections(kitti, detector=yolox_nano()).summary()

    assert summary["images"] == 3
    # 2 Car labels; the Van, Truck, Cyclist, Misc and DontCare labels are not scored
    assert summary["classes"]["Car"]["labels"] == 2
    assert summary["classes"]["Pedestrian"] == {
        "labels": 1, "tp": 1, "fp": 0, "precision": 1.0, "recall": 1.0, "ap50": 1.0,
    }  # fmt: skip
