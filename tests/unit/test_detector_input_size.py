"""A YOLOX-layout detector on a ``(height, width)`` input, and ``models.free_input``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import NotAnOnnxModel
from models.free_input import free_image_sides
from operators import Context, Message
from operators.detection import (
    SIM_DETECTOR,
    SIM_DETECTOR_HW,
    ObjectDetector,
    decode,
    input_for,
    letterbox,
)
from operators.driving import DrivingSimulator


def test_input_for_keeps_the_square_models_scale_and_rounds_up_to_the_stride():
    assert input_for((360, 640)) == (256, 416)  # 416x234 of picture, 22 rows of padding
    assert input_for((480, 640)) == (320, 416)
    assert input_for((640, 360)) == (416, 256)
    assert input_for((416, 416)) == (416, 416)


def test_letterbox_and_decode_on_a_wide_input():
    blob, r = letterbox(np.zeros((360, 640, 3), np.uint8), (256, 416))
    assert blob.shape == (1, 3, 256, 416) and r == pytest.approx(0.65)
    assert blob[0, 0, 233, 0] == 0.0 and blob[0, 0, 234, 0] == 114.0  # picture, then padding
    out = np.zeros((1, 52 * 32 + 26 * 16 + 13 * 8, 8), np.float32)
    out[0, 53, :2] = 0.5  # stride 8, second row, second column of a 52-wide grid
    boxes, _ = decode(out, (256, 416))
    assert boxes[53, :2].tolist() == [8.0, 8.0]  # ((0.5 + 1) * 8 - 4) for both x and y
    with pytest.raises(ValueError, match=r"multiples of the largest stride 32"):
        letterbox(np.zeros((360, 640, 3), np.uint8), (250, 416))
    with pytest.raises(ValueError, match=r"rows, expected 2184 for a 256x416"):
        decode(np.zeros((1, 3549, 8), np.float32), (256, 416))


def test_the_square_model_refuses_a_wide_input_and_the_freed_one_takes_it():
    from models import SignatureMismatch

    square = ObjectDetector(model=SIM_DETECTOR, num_classes=3, classes=None, input_size=(256, 416))
    with pytest.raises(SignatureMismatch, match="images"):
        square.setup(Context(operator="detect"))
    ObjectDetector(model=SIM_DETECTOR_HW, num_classes=3, classes=None).setup(Context())  # 416


def test_wide_input_finds_what_the_square_input_finds_on_simulator_frames():
    sim = DrivingSimulator("car_following", seed=0, held_out=True, poll_hz=5.0, camera_hz=5.0)
    sim.setup(Context(operator="sim"))
    frames = [m for _ in range(6) for port, m in sim.poll(0) if port == "camera"]
    common = {"num_classes": 3, "classes": None}
    square = ObjectDetector(model=SIM_DETECTOR, **common)
    wide = ObjectDetector(model=SIM_DETECTOR_HW, input_size=input_for((360, 640)), **common)
    for op in (square, wide):
        op.setup(Context(operator="detect"))

    def found(op: ObjectDetector, frame: Message) -> list[tuple[int, np.ndarray]]:
        [(_, det)] = op.process("camera", frame)
        return list(zip(det.payload["classes"].tolist(), det.payload["boxes"], strict=True))

    matched = total = 0
    for frame in frames:
        want, got = found(square, frame), found(wide, frame)
        total += len(want)
        for cls, box in want:  # the same object, the same class, within a few pixels
            matched += any(c == cls and np.abs(b - box).max() < 4.0 for c, b in got)
    assert total > 0 and matched >= 0.9 * total, (matched, total)


def test_free_image_sides_names_the_sides_and_refuses_a_non_image_input(tmp_path):
    freed = onnx.load(str(free_image_sides(SIM_DETECTOR, tmp_path / "m.onnx")))
    dims = freed.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 3, "height", "width"]

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    flat = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])],
                                              "flat", [x], [y]))  # fmt: skip
    onnx.save(flat, str(tmp_path / "flat.onnx"))
    with pytest.raises(NotAnOnnxModel, match=r"has 2 dims, expected \[N, C, H, W\]"):
        free_image_sides(tmp_path / "flat.onnx", tmp_path / "out.onnx")
