"""LaneDetector: lines on the real Udacity frames and over the clip through the local runner."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from operators import Message
from operators.lanes import LaneDetector, LaneParams, find_lanes
from operators.parquet_sink import read_parquet_dir
from pipelines import lanes as lanes_pipeline
from pipelines.testing import ListSink, ListSource, Pipeline, run_local

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


# -- lane geometry: bird's-eye fits, offset, curvature, smoothing, calibration -------------
ADVANCED = ("lanes-udacity", "advanced")
ADVANCED_IMAGES = ["straight_lines1.jpg", "straight_lines2.jpg"] + [
    f"test{i}.jpg" for i in range(1, 7)
]


def _sim_offsets(scenario: str) -> tuple[np.ndarray, np.ndarray, list]:
    from operators.driving import DrivingSimulator

    p = Pipeline("sim-lanes")
    p.source("sim", DrivingSimulator(scenario, lidar_hz=1e-3, ego_hz=1e-3), rate_hz=30.0)
    p.operator("lanes", LaneDetector(geometry=True))
    p.sink("out", ListSink())
    p.connect("sim.camera", "lanes.frames")
    p.connect("lanes.lanes", "out.in")
    out = run_local(p).sink("out")
    found = np.array([m.payload["offset_m"] for m in out])
    truth = np.array([m.truth["ego_offset"] for m in out])
    return found, truth, out


def test_offset_on_the_simulator_matches_the_truth():
    errors = []
    for scenario in ("lane_curve", "car_following"):
        found, truth, out = _sim_offsets(scenario)
        err = np.abs(found - truth)
        conf = np.mean([m.payload["confidence"] for m in out])
        print(f"{scenario}: {len(err)} frames, median |offset error| {np.nanmedian(err):.3f} m, "
              f"p90 {np.nanpercentile(err, 90):.3f} m, mean confidence {conf:.2f}")  # fmt: skip
        assert np.isfinite(found).all()
        errors.append(err)
    median = float(np.median(np.concatenate(errors)))
    print(f"median |offset error| over both scenarios: {median:.3f} m")
    assert median <= 0.15  # measured ~0.09 m; the target is 0.2 m


def _geometry(image: np.ndarray) -> dict:
    return detect(image, geometry=True)


@pytest.mark.parametrize(
    ("folder", "name"),
    [(P1, n) for n in TEST_IMAGES] + [(ADVANCED, n) for n in ADVANCED_IMAGES],
)
def test_both_fitted_lines_on_every_real_frame(requires_data, folder, name):
    image = cv2.imread(str(requires_data(*folder, "test_images", name)))

    lanes = _geometry(image)

    assert lanes["left_fit"].shape == lanes["right_fit"].shape == (3,)
    assert lanes["left_points"].shape[1] == 2 and lanes["left_points"].dtype == np.float32
    assert 2.7 < lanes["lane_width_m"] < 4.3  # scaled by the usual 3.7 m
    assert abs(lanes["offset_m"]) < 0.6  # the cars drive near their lane's centre
    assert abs(lanes["curvature_1pm"]) < 0.01  # highway: radius > 100 m
    assert lanes["confidence"] > 0.5
    bottom = image.shape[0] - 1
    left_x = lanes["left_points"][np.argmax(lanes["left_points"][:, 1]), 0]
    right_x = lanes["right_points"][np.argmax(lanes["right_points"][:, 1]), 0]
    assert left_x < image.shape[1] / 2 < right_x, bottom


def test_contact_sheet_of_every_real_frame(requires_data, tmp_path):
    from operators.lanes import contact_sheet

    paths = [requires_data(*P1, "test_images", n) for n in TEST_IMAGES]
    paths += [requires_data(*ADVANCED, "test_images", n) for n in ADVANCED_IMAGES]
    images = [cv2.imread(str(p)) for p in paths]
    results = [_geometry(im) for im in images]

    sheet = contact_sheet(images, results, columns=4, tile_width=240)
    assert cv2.imwrite(str(tmp_path / "lanes.png"), sheet)

    assert sheet.shape == (4 * 135, 4 * 240, 3)  # 14 frames, 16:9 tiles, 4 per row
    assert sheet.dtype == np.uint8


def test_geometry_of_a_synthetic_straight_lane():
    road = np.zeros((720, 1280, 3), np.uint8)
    cv2.line(road, (205, 684), (582, 461), (255, 255, 255), 10)
    cv2.line(road, (1126, 684), (698, 461), (255, 255, 255), 10)

    lanes = _geometry(road)

    assert lanes["found"] == 2
    assert abs(lanes["offset_m"]) < 0.15
    assert abs(lanes["heading_rad"]) < 0.02
    assert abs(lanes["curvature_1pm"]) < 1e-3
    assert lanes["lane_width_m"] == pytest.approx(3.7, abs=0.4)


def test_no_lines_gives_nan_geometry_and_zero_confidence():
    lanes = _geometry(np.zeros((360, 640, 3), np.uint8))

    assert np.isnan(lanes["offset_m"]) and np.isnan(lanes["curvature_1pm"])
    assert lanes["confidence"] == 0.0
    assert lanes["left_fit"].shape == (0,) and lanes["left_points"].shape == (0, 2)


def test_smoothing_state_survives_snapshot_and_restore(requires_data):
    image = cv2.imread(str(requires_data(*P1, "test_images", "solidWhiteRight.jpg")))
    blank = np.zeros_like(image)
    a = LaneDetector(geometry=True)
    list(a.process("frames", Message("cam", 0, 0, {"image": image})))

    b = LaneDetector(geometry=True)
    b.restore(a.snapshot())
    [(_, from_a)] = a.process("frames", Message("cam", 1, 1, {"image": blank}))
    [(_, from_b)] = b.process("frames", Message("cam", 1, 1, {"image": blank}))

    assert from_a.payload["offset_m"] == from_b.payload["offset_m"]
    assert np.isfinite(from_b.payload["offset_m"])  # a missed frame keeps the last lane
    assert 0 < from_b.payload["confidence"] < 1  # with less confidence
    assert a.snapshot() == b.snapshot()


def test_lines_are_carried_over_only_max_misses_frames(requires_data):
    from operators.lanes import GeometryParams

    image = cv2.imread(str(requires_data(*P1, "test_images", "solidWhiteRight.jpg")))
    det = LaneDetector(geometry=True, geometry_params=GeometryParams(max_misses=2))
    frames = [image] + [np.zeros_like(image)] * 3

    offsets = []
    for i, im in enumerate(frames):
        [(_, out)] = det.process("frames", Message("cam", i, i, {"image": im}))
        offsets.append(out.payload["offset_m"])

    assert np.isfinite(offsets[:3]).all() and np.isnan(offsets[3])


def test_calibration_from_the_udacity_chessboards(requires_data):
    from operators.lanes import calibrate_from_chessboards, undistort

    folder = requires_data(*ADVANCED, "camera_cal")
    paths = sorted(folder.glob("*.jpg"))

    cal = calibrate_from_chessboards(paths, pattern=(9, 6))
    print(f"reprojection error {cal.rms:.3f} px from {len(cal.used)} boards; skipped {cal.skipped}")

    assert len(paths) == 20
    assert cal.rms < 1.0
    assert cal.image_size == (1280, 720)
    assert {"calibration7.jpg (1281x721)", "calibration15.jpg (1281x721)"} <= set(cal.skipped)
    assert len(cal.used) >= 12
    assert cal.dist[0] < 0  # barrel distortion
    image = cv2.imread(str(requires_data(*ADVANCED, "test_images", "test1.jpg")))
    assert undistort(image, cal).shape == image.shape
    lanes = detect(image, geometry=True, calibration=cal)
    assert lanes["left_fit"].shape == lanes["right_fit"].shape == (3,)


def test_calibration_without_boards_says_so(tmp_path):
    from operators import OperatorError
    from operators.lanes import calibrate_from_chessboards

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((60, 80), np.uint8))

    with pytest.raises(OperatorError, match=r"found a 9x6 chessboard in only 0 usable of 1"):
        calibrate_from_chessboards([blank])


def test_contact_sheet_of_every_real_udacity_frame(requires_data):
    from pipelines.lane_overlays import overlays

    sheet, both, total = overlays(tile_width=64)
    assert (both, total) == (14, 14)
    assert sheet.shape == (4 * 36, 4 * 64, 3)  # 14 tiles of 1280x720 scaled, 4 columns
