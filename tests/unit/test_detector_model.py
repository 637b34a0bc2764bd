"""The committed simulator detector (models/artifacts/sim-detector) through ObjectDetector."""

from __future__ import annotations

import numpy as np
import pytest

from models.inference import SignatureMismatch
from operators import Context, Message
from operators.detection import SIM_DETECTOR, ObjectDetector
from operators.driving import CLASSES
from pipelines.detector_dataset import sim_frames

VEHICLE, PEDESTRIAN = CLASSES.index("vehicle"), CLASSES.index("pedestrian")
#: The scripted lead car and crossing pedestrian both have actor id 1 in their scenarios.
LEAD_ID = PEDESTRIAN_ID = 1

pytestmark = pytest.mark.usefixtures("one_opencv_thread")


@pytest.fixture(scope="module")
def detector():
    op = ObjectDetector(model=SIM_DETECTOR, num_classes=3, classes=None, intra_op_threads=1)
    op.setup(Context(operator="sim-detector"))
    return op


def iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    return inter / (float(np.prod(a[2:] - a[:2])) + float(np.prod(b[2:] - b[:2])) - inter)


def found_share(detector, scenario: str, object_id: int, cls: int) -> tuple[float, int]:
    """Share of held-out frames (seed 7, unseen) where ``object_id`` is matched at IoU 0.5."""
    hits = total = 0
    for f in sim_frames(scenarios=(scenario,), seeds=(7,), held_out=True, camera_hz=1.0):
        wanted = (f.object_ids == object_id) & ~f.dont_care
        if not wanted.any():
            continue
        truth = f.boxes[np.flatnonzero(wanted)[0]]
        boxes, _, classes = detector.detect(f.image)
        total += 1
        hits += any(iou(b, truth) >= 0.5 for b in boxes[classes == cls])
    return (hits / total if total else 0.0), total


def test_the_committed_model_is_small_and_has_a_manifest():
    manifest = (SIM_DETECTOR.parent / "MANIFEST.md").read_text()

    assert SIM_DETECTOR.stat().st_size < 5 * 2**20
    assert "mAP@0.5" in manifest and "held-out" in manifest


def test_finds_the_lead_vehicle_on_held_out_frames(detector):
    share, frames = found_share(detector, "car_following", LEAD_ID, VEHICLE)

    assert frames >= 10
    assert share >= 0.9


def test_finds_the_crossing_pedestrian_on_held_out_frames(detector):
    share, frames = found_share(detector, "pedestrian_crossing", PEDESTRIAN_ID, PEDESTRIAN)

    assert frames >= 3
    assert share >= 0.9


def test_process_emits_detections_with_the_simulator_class_ids(detector):
    f = next(sim_frames(scenarios=("car_following",), seeds=(7,), held_out=True, camera_hz=1.0))

    [(port, out)] = detector.process("camera", Message("sim", 0, 0, {"image": f.image}))

    assert port == "detections"
    assert out.payload["image_size"].tolist() == [360, 640]
    assert set(out.payload["classes"].tolist()) <= {0, 1, 2}
    assert VEHICLE in out.payload["classes"].tolist()


def test_the_default_yolox_signature_refuses_it():
    op = ObjectDetector(model=SIM_DETECTOR)  # num_classes=80: expects [1, N, 85]

    wanted = r"'output' float32\[1, 3549, 8\], expected an output 'output' of shape \[1, \?, 85\]"
    with pytest.raises(SignatureMismatch, match=wanted):
        op.setup(Context(operator="detector"))
