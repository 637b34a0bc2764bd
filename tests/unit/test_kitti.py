"""KITTI: calibration and labels, KittiSource on the real sample and on synthetic frames, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from operators import Context, OperatorError
from operators.calibration import Calibration, read_calibration
from operators.kitti import KittiObject, KittiSource, read_labels, write_kitti_frame
from pipelines.testing import ListSink, Pipeline, run_local

CALIB = Calibration(
    P2=np.array([[700.0, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]]),
    R0_rect=np.eye(3),
    Tr_velo_to_cam=np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]),
)
CAR = KittiObject("Car", 0.0, 0, 0.0, (500.0, 150.0, 700.0, 250.0), (1.5, 1.6, 4.0),
                  (0.0, 1.7, 12.0), 0.0)  # fmt: skip


def synthetic(root, frames: int = 3) -> None:
    """``frames`` small KITTI frames: a 20x40 image, 5 points, one Car label (+ a DontCare)."""
    for i in range(frames):
        points = np.arange(20, dtype=np.float32).reshape(5, 4) + i
        write_kitti_frame(root, f"{i:06d}", image=np.full((20, 40, 3), 10 * i, np.uint8),
                          points=points, calibration=CALIB, labels=[CAR])  # fmt: skip
        with open(root / "label_2" / f"{i:06d}.txt", "a") as f:
            f.write("DontCare -1 -1 -10 1 2 3 4 -1 -1 -1 -1000 -1000 -1000 -10\n")


def started(source: KittiSource) -> KittiSource:
    source.setup(Context(operator="kitti", node="car-1"))
    return source


def inside(uv: np.ndarray, depth: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    u, v = uv[:, 0], uv[:, 1]
    return (depth > 0) & (u >= x1) & (u <= x2) & (v >= y1) & (v <= y2)


# -- the real sample ----------------------------------------------------------------------------
@pytest.fixture
def kitti(requires_data):
    return requires_data("kitti-sample")


def test_real_frames_have_camera_lidar_and_truth_at_10_hz(kitti):
    # prepare
    source = started(KittiSource(kitti))

    # execute
    polls = [source.poll(0) for _ in range(4)]

    # assert
    assert polls[3] is None
    assert [[p for p, _ in out] for out in polls[:3]] == [["camera", "lidar"]] * 3
    cameras = [out[0][1] for out in polls[:3]]
    lidars = [out[1][1] for out in polls[:3]]
    assert [m.event_ts for m in cameras] == [0, 100_000_000, 200_000_000]
    assert [m.event_ts for m in lidars] == [m.event_ts for m in cameras]
    assert {m.source for m in cameras} == {"kitti@car-1/camera"}
    assert {m.source for m in lidars} == {"kitti@car-1/lidar"}
    for cam, lidar in zip(cameras, lidars, strict=True):
        image, points = cam.payload["image"], lidar.payload["points"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert 360 <= image.shape[0] <= 380 and 1200 <= image.shape[1] <= 1250
        assert points.dtype == np.float32 and points.shape[1] == 4 and len(points) > 100_000
        assert cam.payload["P2"].shape == (3, 4) and cam.payload["R0_rect"].shape == (3, 3)
        assert cam.payload["Tr_velo_to_cam"].shape == (3, 4)
        assert "DontCare" not in cam.truth["classes"]
        assert cam.truth["boxes"].shape == (len(cam.truth["classes"]), 4)
    assert cameras[0].truth["classes"] == ["Pedestrian"]
    np.testing.assert_allclose(cameras[0].truth["boxes"][0], [712.4, 143.0, 810.73, 307.92])
    assert cameras[0].truth["locations"][0][2] == pytest.approx(8.41)
    assert "Car" in cameras[1].truth["classes"] and "Car" in cameras[2].truth["classes"]


@pytest.mark.parametrize(
    ("frame", "label", "min_points"),
    [(0, "Pedestrian", 300), (1, "Cyclist", 10), (2, "Car", 30)],
)
def test_projected_lidar_points_land_in_the_labelled_boxes_at_the_labelled_depth(
    kitti, frame, label, min_points
):
    # prepare
    calib = read_calibration(kitti / "calib" / f"{frame:06d}.txt")
    objects = [o for o in read_labels(kitti / "label_2" / f"{frame:06d}.txt") if o.type == label]
    points = np.fromfile(kitti / "velodyne" / f"{frame:06d}.bin", np.float32).reshape(-1, 4)

    # execute
    uv, depth = calib.velo_to_image(points)

    # assert: many points fall in the box at the label's depth (Z: the 3-D box's centre; the
    # visible surface of a long object is up to half its length nearer)
    [obj] = objects
    z, tolerance = obj.location[2], max(1.0, obj.dimensions[2] / 2)
    hits = inside(uv, depth, np.array(obj.box)) & (np.abs(depth - z) < tolerance)
    assert hits.sum() >= min_points, f"{label}: only {hits.sum()} points near Z={z}"
    assert abs(np.median(depth[hits]) - z) < tolerance


def test_pedestrian_box_in_000000_holds_hundreds_of_points_within_a_metre(kitti):
    # prepare: what the brief states, from the source's own messages
    camera, lidar = (m for _, m in started(KittiSource(kitti)).poll(0))
    calib = Calibration(**{k: camera.payload[k] for k in ("P2", "R0_rect", "Tr_velo_to_cam")})

    # execute
    uv, depth = calib.velo_to_image(lidar.payload["points"])
    in_box = inside(uv, depth, camera.truth["boxes"][0])
    near = in_box & (np.abs(depth - 8.41) < 1.0)

    # assert: 1483 points in the box (person and background), ~500 on the person
    assert in_box.sum() > 1000
    assert near.sum() > 400
    assert abs(np.median(depth[near]) - 8.41) < 0.2


def test_real_labels_leave_out_dontcare(kitti):
    # execute
    objects = read_labels(kitti / "label_2" / "000001.txt")

    # assert
    assert [o.type for o in objects] == ["Truck", "Car", "Cyclist"]
    assert objects[1].box == pytest.approx((387.63, 181.54, 423.81, 203.12))
    assert objects[1].dimensions == pytest.approx((1.67, 1.87, 3.69))


# -- calibration and labels ---------------------------------------------------------------------
def test_calibration_with_a_missing_key_names_the_file_and_the_key(tmp_path):
    # prepare
    path = tmp_path / "000007.txt"
    path.write_text("P2: " + " ".join(["1"] * 12) + "\nR0_rect: 1 0 0 0 1 0 0 0 1\n")

    # execute / assert
    with pytest.raises(OperatorError, match=r"000007\.txt.* has no 'Tr_velo_to_cam' entry"):
        read_calibration(path)


def test_calibration_with_a_short_matrix_says_how_many_values(tmp_path):
    # prepare
    path = tmp_path / "c.txt"
    path.write_text("P2: 1 2 3\nR0_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_to_cam: " + "0 " * 12)

    # execute / assert
    with pytest.raises(OperatorError, match=r"c\.txt.*'P2' has 3 values, expected 12"):
        read_calibration(path)


def test_calibration_round_trips_and_projects_straight_ahead_to_the_principal_point(tmp_path):
    # prepare
    synthetic(tmp_path, frames=1)

    # execute
    calib = read_calibration(tmp_path / "calib" / "000000.txt")
    uv, depth = calib.velo_to_image(np.array([[12.0, 0.0, 0.0, 0.3], [-5.0, 0.0, 0.0, 0.3]]))

    # assert
    np.testing.assert_array_equal(calib.P2, CALIB.P2)
    np.testing.assert_allclose(uv[0], [600.0, 180.0])
    assert depth.tolist() == [12.0, -5.0]  # the second point is behind the camera


def test_label_line_with_too_few_fields_names_the_file_and_line(tmp_path):
    # prepare
    path = tmp_path / "l.txt"
    path.write_text(CAR.line() + "\nCar 0 0 0 1 2 3\n")

    # execute / assert
    with pytest.raises(OperatorError, match=r"l\.txt' line 2 has 7 fields, expected 15"):
        read_labels(path)


# -- the source on synthetic frames ---------------------------------------------------------------
def test_truncated_scan_is_dead_lettered_naming_the_file_and_the_run_goes_on(tmp_path):
    # prepare: frame 1's scan loses 3 bytes
    synthetic(tmp_path)
    scan = tmp_path / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-3])
    p = Pipeline("kitti")
    p.source("kitti", KittiSource(tmp_path), rate_hz=10)
    p.sink("cams", ListSink())
    p.sink("scans", ListSink())
    p.connect("kitti.camera", "cams")
    p.connect("kitti.lidar", "scans")

    # execute
    run = run_local(p)

    # assert
    assert [m.seq for m in run.sink("cams")] == [0, 2]
    assert [m.seq for m in run.sink("scans")] == [0, 2]
    [dead] = run.dead_letters
    assert "000001.bin" in dead.cause and "not a multiple of 16" in dead.cause
    assert "77 bytes" in dead.cause


def test_unreadable_image_raises_naming_the_file_then_the_next_frame_comes(tmp_path):
    # prepare
    synthetic(tmp_path)
    (tmp_path / "image_2" / "000000.png").write_bytes(b"not a png")
    source = started(KittiSource(tmp_path))

    # execute / assert
    with pytest.raises(OperatorError, match=r"000000\.png' could not be decoded"):
        source.poll(0)
    assert [m.seq for _, m in source.poll(0)] == [1, 1]


def test_missing_directory_says_what_layout_is_expected(tmp_path):
    # execute / assert
    with pytest.raises(OperatorError, match=r"has no image_2/ directory"):
        started(KittiSource(tmp_path / "nowhere"))


def test_synthetic_frames_carry_payload_truth_and_no_dontcare(tmp_path):
    # prepare
    synthetic(tmp_path, frames=1)

    # execute
    camera, lidar = (m for _, m in started(KittiSource(tmp_path, start_ns=5)).poll(0))

    # assert
    np.testing.assert_array_equal(lidar.payload["points"], np.arange(20).reshape(5, 4))
    assert camera.payload["image"].shape == (20, 40, 3)
    assert camera.event_ts == lidar.event_ts == 5
    assert camera.truth["classes"] == lidar.truth["classes"] == ["Car"]
    np.testing.assert_allclose(camera.truth["locations"], [[0.0, 1.7, 12.0]])


def test_snapshot_restore_resumes_at_the_next_frame(tmp_path):
    # prepare
    synthetic(tmp_path)
    source = started(KittiSource(tmp_path))
    source.poll(0)

    # execute
    moved = started(KittiSource(tmp_path))
    moved.restore(pickle.loads(pickle.dumps(source.snapshot())))

    # assert
    assert [m.seq for _, m in moved.poll(0)] == [1, 1]
    assert [m.event_ts for _, m in moved.poll(0)] == [200_000_000, 200_000_000]
    assert moved.poll(0) is None


def test_max_frames_and_bad_options(tmp_path):
    # prepare
    synthetic(tmp_path)
    source = started(KittiSource(tmp_path, max_frames=1))

    # execute / assert
    assert source.poll(0) is not None and source.poll(0) is None
    with pytest.raises(OperatorError, match="period_ns=0"):
        KittiSource(tmp_path, period_ns=0)
