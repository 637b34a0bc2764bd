"""LaneDetector: lines on the real Udacity frames and over the clip through the local runner."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from operators import Message
from operators.lanes import LaneDetector, LaneParams, find_lanes
from operators.parquet_sink import read_parquet_dir
from pipelines import lanes as lanes_pipeline
from pipelines.testing import ListSource, Pipeline, run_local

P1 = ("lanes-udacity", "p1")
TEST_IMAGES = [
    "solidWhiteCurve.jpg",
    "solidWhiteRight.jpg",
    "solidYellowCurve.jpg",
    "solidYellowCurve2.jpg",
    "solidYellowLeft.jpg",
    "whiteCarLaneSwitch.jpg",
]


def detect(image: np.ndarray, **options) -> dict:
    [(port, out)] = LaneDetector(**options).process(
        "frames", Message("cam", 3, 0, {"image": image})
    )
    assert port == "lanes"
    return dict(out.payload)


def slope(line: np.ndarray) -> float:
    x1, y1, x2, y2 = line
    return (y2 - y1) / (x2 - x1)


@pytest.mark.parametrize("name", TEST_IMAGES)
def test_finds_both_lines_on_the_udacity_test_images(requires_data, name):
    image = cv2.imread(str(requires_data(*P1, "test_images", name)))
    height, width = image.shape[:2]

    lanes = detect(image)

    assert (width, height) == (960, 540)
    assert lanes["found"] == 2
    left, right = lanes["left"], lanes["right"]
    assert left.dtype == right.dtype == np.float32
    assert left.shape == right.shape == (4,)
    assert slope(left) < 0 < slope(right)  # image coordinates: y grows downwards
    for line in (left, right):
        x1, y1, x2, y2 = line
        assert 0 <= x1 <= width and 0 <= x2 <= width
        assert y1 == height  # starts at the bottom row
        assert y2 == pytest.approx(0.6 * height)  # and reaches ~60% of the height
    assert left[0] < width / 2 < right[0]
    assert left[2] < right[2]  # the lines do not cross below the horizon


def test_blank_image_finds_nothing():
    lanes = detect(np.zeros((540, 960, 3), np.uint8))

    assert lanes["found"] == 0
    assert lanes["left"].shape == lanes["right"].shape == (0,)
    assert lanes["left"].dtype == np.float32


def test_one_line_is_reported_alone():
    road = np.zeros((540, 960, 3), np.uint8)
    cv2.line(road, (850, 540), (520, 330), (255, 255, 255), 8)

    lanes = detect(road)

    assert (lanes["found"], lanes["left"].shape, lanes["right"].shape) == (1, (0,), (4,))


def test_image_is_left_out_unless_kept():
    image = np.zeros((60, 80, 3), np.uint8)

    dropped, kept = detect(image), detect(image, keep_image=True)

    assert set(dropped) == {"left", "right", "found", "frame"}
    assert kept["image"] is image
    assert dropped["frame"] == 3  # no "frame" in the input: its seq


def test_params_are_used():
    road = np.zeros((540, 960, 3), np.uint8)
    cv2.line(road, (150, 540), (450, 330), (255, 255, 255), 8)

    left, _ = find_lanes(road, LaneParams(horizon=0.7))

    assert left[3] == pytest.approx(0.7 * 540)


def test_a_frame_that_is_not_uint8_bgr_is_dead_lettered():
    p = Pipeline("bad")
    p.source("src", ListSource([{"image": np.zeros((8, 8, 3), np.float32)}]))
    p.operator("lanes", LaneDetector())
    p.connect("src", "lanes.frames")

    run = run_local(p)

    assert run.summary.dead_lettered == {"lanes": 1}
    assert "payload field 'image' is float32[8, 8, 3], expected uint8" in run.dead_letters[0].cause


@pytest.mark.parametrize("max_frames", [None, 40])
def test_lanes_pipeline_over_the_clip_records_every_frame(requires_data, tmp_path, max_frames):
    video = requires_data(*P1, "test_videos", "solidWhiteRight.mp4")
    capture = cv2.VideoCapture(str(video))
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    expected = frame_count if max_frames is None else max_frames
    pipeline = lanes_pipeline.build(video, tmp_path / "lanes", max_frames)

    run = run_local(pipeline)
    recorded = read_parquet_dir(tmp_path / "lanes")

    assert frame_count == 221
    assert run.summary.sources == {"camera": expected}
    assert run.summary.sinks == {"recorder": expected}
    assert run.summary.dead_lettered == {}
    assert sorted(m.payload["frame"] for m in recorded) == list(range(expected))
    assert all("image" not in m.payload for m in recorded)
    assert {m.source for m in recorded} == {"camera@local"}
    both = sum(m.payload["found"] == 2 for m in recorded)
    assert both >= 0.9 * expected
