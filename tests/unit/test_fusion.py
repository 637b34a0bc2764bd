"""SensorFusion: calibration, projection onto the real KITTI objects, alignment (no Ray)."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from operators import Context, MalformedMessage, Message, OperatorError
from operators.calibration import Calibration, read_calibration
from operators.fusion import SensorFusion, box_distances, project_points

FRAMES = ("000000", "000001", "000002")
MS = 1_000_000
CALIB = Calibration.simple(focal=700.0, cx=600.0, cy=180.0)
BOX = np.array([[590, 170, 610, 190]], np.float32)  # around the image point of (x, 0, 0)


pytestmark = pytest.mark.usefixtures("one_opencv_thread")


@pytest.fixture
def kitti(requires_data):
    return requires_data("kitti-sample")


def scan(path) -> np.ndarray:
    return np.fromfile(path, np.float32).reshape(-1, 4)


def labels(path) -> list[tuple[str, np.ndarray, float]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], np.array([float(v) for v in r[4:8]], np.float32), float(r[13])) for r in rows]


def camera(seq: int, ts_ms: int, **extra) -> Message:
    payload = {
        "boxes": BOX,
        "scores": np.array([0.9], np.float32),
        "classes": np.array([2], np.int32),
        **extra,
    }
    return Message("cam", seq, ts_ms * MS, payload)


def lidar(seq: int, ts_ms: int, distance: float = 10.0, points=None) -> Message:
    if points is None:
        points = np.array([[distance, 0.0, 0.0, 0.5]], np.float32)
    return Message("velo", seq, ts_ms * MS, {"points": points})


def fusion(**kw) -> SensorFusion:
    op = SensorFusion(calibration=CALIB, **kw)
    op.setup(Context(operator="fusion"))
    return op


def feed(op: SensorFusion, steps: list[tuple[str, Message]]) -> list[Message]:
    return [m for port, message in steps for _, m in op.process(port, message)]


# -- calibration and projection on the real KITTI frames ---------------------------------------
def test_reads_the_kitti_calibration(kitti):
    # execute
    calib = read_calibration(kitti / "calib" / "000000.txt")

    # assert
    assert calib.P2.shape == (3, 4) and calib.P2[0, 0] == pytest.approx(707.0493)
    assert calib.R0_rect.shape == (3, 3) and calib.Tr_velo_to_cam.shape == (3, 4)


def test_a_calibration_file_with_missing_keys_is_named(tmp_path):
    # prepare
    path = tmp_path / "000007.txt"
    path.write_text("P2: " + " ".join(["1"] * 12) + "\nR0_rect: " + " ".join(["1"] * 9) + "\n")

    # execute / assert
    with pytest.raises(OperatorError, match=r"000007\.txt' lacks Tr_velo_to_cam"):
        read_calibration(path)


def test_projected_points_land_on_the_labelled_objects(kitti):
    # prepare / execute: project each scan, measure each labelled Car / Pedestrian box
    errors = []
    for frame in FRAMES:
        calib = read_calibration(kitti / "calib" / f"{frame}.txt")
        uv, depth = project_points(scan(kitti / "velodyne" / f"{frame}.bin"), calib)
        wanted = [(t, b, z) for t, b, z in labels(kitti / "label_2" / f"{frame}.txt")]
        wanted = [(t, b, z) for t, b, z in wanted if t in ("Car", "Pedestrian")]
        distance, count = box_distances(uv, depth, np.stack([b for _, b, _ in wanted]))
        for (kind, _, z), d, n in zip(wanted, distance, count, strict=True):
            errors.append((frame, kind, z, float(d), int(n)))

    # assert
    print()
    for frame, kind, z, d, n in errors:
        print(f"{frame} {kind:<10} label Z {z:6.2f} m  fused {d:6.2f} m  ({n} points)  "
              f"error {d - z:+.2f} m ({(d - z) / z:+.1%})")  # fmt: skip
    assert len(errors) == 3
    for frame, kind, z, d, n in errors:
        assert n > 0, f"no lidar point projects into {kind} of {frame}"
        assert abs(d - z) <= max(0.10 * z, 1.5), f"{kind} of {frame}: {d:.2f} m vs label {z} m"


def test_projection_keeps_points_in_the_image_and_in_front(kitti):
    # prepare
    calib = read_calibration(kitti / "calib" / "000000.txt")
    points = scan(kitti / "velodyne" / "000000.bin")

    # execute
    uv, depth = project_points(points, calib)

    # assert: only points ahead (about half a 360-degree scan); many land in the 1242x375 image
    assert (depth > 0).all() and len(depth) < 0.6 * len(points)
    in_image = (uv[:, 0] >= 0) & (uv[:, 0] < 1242) & (uv[:, 1] >= 0) & (uv[:, 1] < 375)
    assert in_image.sum() > 10_000


def test_detector_then_fusion_on_kitti_000000(kitti, requires_data):
    # prepare: the detector carries the frame's calibration to fusion
    from operators.detection import ObjectDetector

    detector = ObjectDetector(model=requires_data("detector-yolox-nano", "yolox_nano.onnx"))
    detector.setup(Context(operator="detector"))
    calib = read_calibration(kitti / "calib" / "000000.txt")
    image = cv2.imread(str(kitti / "image_2" / "000000.png"))
    frame = Message("cam", 0, 100 * MS, {"image": image, **calib.as_payload()})
    op = SensorFusion()  # no calibration parameter: it comes with the message
    op.setup(Context(operator="fusion"))

    # execute
    [(_, detections)] = detector.process("camera", frame)
    out = feed(op, [("camera", detections), ("lidar", lidar(0, 110, points=scan(
        kitti / "velodyne" / "000000.bin")))])  # fmt: skip

    # assert: the person (label Z 8.41 m)
    [objects] = out
    person = int(np.argmax(objects.payload["scores"]))
    distance = objects.payload["distance_m"][person]
    print(f"\nperson on 000000: fused distance {distance:.2f} m (label Z 8.41 m)")
    assert objects.payload["fused"] == 1 and objects.payload["skew_ns"] == -10 * MS
    assert distance == pytest.approx(8.41, abs=0.85)
    assert objects.key == frame.key and [x.source for x in objects.meta.lineage] == ["velo"]


# -- bad lidar points and missing calibration --------------------------------------------------
def test_nan_and_inf_points_are_dropped_and_counted():
    # prepare
    points = np.array(
        [[10, 0, 0, 0.5], [np.nan, 0, 0, 0.5], [10, np.inf, 0, 0.5], [12, 0, 0, np.nan]],
        np.float32,
    )
    op = fusion()

    # execute
    [out] = feed(op, [("camera", camera(0, 0)), ("lidar", lidar(0, 0, points=points))])

    # assert
    assert op.dropped_points == 3
    assert out.payload["distance_m"].tolist() == [10.0] and out.payload["points_in_box"][0] == 1


def test_a_frame_without_calibration_is_refused():
    # prepare
    op = SensorFusion()
    op.setup(Context(operator="fusion"))

    # execute / assert
    with pytest.raises(MalformedMessage, match=r"carries no calibration .* pass SensorFusion"):
        list(op.process("camera", camera(0, 0)))


# -- alignment by event time ---------------------------------------------------------------------
def test_waits_for_the_lidar_to_reach_the_frame_then_takes_the_nearest_scan():
    # prepare: camera at 30 Hz, lidar at 10 Hz
    op = fusion(max_skew_ns=50 * MS)

    # execute
    first = feed(op, [("lidar", lidar(0, 0, 10.0)), ("camera", camera(0, 33))])
    later = feed(op, [("camera", camera(1, 66)), ("lidar", lidar(1, 100, 20.0))])

    # assert: nothing until a scan at or after 33 ms; then 33 -> scan 0 (33 ms), 66 -> scan 1
    assert first == []
    assert [(m.seq, m.payload["distance_m"][0], m.payload["skew_ns"]) for m in later] == [
        (0, 10.0, 33 * MS),
        (1, 20.0, -34 * MS),
    ]
    assert [m.meta.lineage[0].seq for m in later] == [0, 1]


def test_out_of_order_messages_are_aligned_by_event_time():
    # prepare
    op = fusion(max_skew_ns=20 * MS)

    # execute: frame 2 before frame 1, scan 1 before scan 0
    out = feed(
        op,
        [
            ("camera", camera(2, 200)),
            ("camera", camera(1, 100)),
            ("lidar", lidar(1, 205, 20.0)),
            ("lidar", lidar(0, 95, 10.0)),
        ],
    )

    # assert: both wait until the lidar passes 200 ms; frame 2 takes scan 1; frame 1 is
    # decided then (scan 1 is 105 ms away) and the late scan 0 arrives after the decision
    by_seq = {m.seq: m for m in out}
    assert set(by_seq) == {1, 2}
    assert by_seq[2].payload["fused"] == 1 and by_seq[2].payload["distance_m"][0] == 20.0
    assert by_seq[1].payload["fused"] == 0  # decided when the lidar passed it, 95 ms came later
    assert op.unfused == 1


def test_a_frame_with_no_scan_within_the_skew_is_emitted_unfused_and_counted():
    # prepare
    op = fusion(max_skew_ns=10 * MS)

    # execute: the nearest scan is 40 ms away
    [out] = feed(op, [("lidar", lidar(0, 0)), ("camera", camera(0, 20)), ("lidar", lidar(1, 60))])

    # assert
    assert out.payload["fused"] == 0 and np.isnan(out.payload["distance_m"]).all()
    assert out.payload["points_in_box"].tolist() == [0] and out.meta.lineage == ()
    assert op.unfused == 1


def test_a_silent_lidar_evicts_the_oldest_frame_unfused():
    # prepare
    op = fusion(max_pending=2)

    # execute: no lidar at all
    out = feed(op, [("camera", camera(i, 33 * i)) for i in range(4)])

    # assert: two evicted (0, 1), two still waiting; nothing lost
    assert [(m.seq, m.payload["fused"]) for m in out] == [(0, 0), (1, 0)]
    assert op.unfused == 2 and [m.seq for m in op.snapshot()["pending"]] == [2, 3]


def test_an_evicted_frame_with_a_scan_within_the_skew_is_fused():
    # prepare: the scan at 30 ms partners frame 0 (skew 30 <= 50) but the lidar never passes 33
    op = fusion(max_pending=1)

    # execute
    out = feed(op, [("lidar", lidar(0, 30)), ("camera", camera(0, 60)), ("camera", camera(1, 93))])

    # assert
    assert [(m.seq, m.payload["fused"]) for m in out] == [(0, 1)]


def test_state_survives_a_pickle_and_a_restore():
    # prepare
    op = fusion()
    feed(op, [("camera", camera(0, 0)), ("camera", camera(1, 33))])

    # execute
    fresh = fusion()
    fresh.restore(pickle.loads(pickle.dumps(op.snapshot())))
    out = feed(fresh, [("lidar", lidar(0, 40))])

    # assert
    assert [m.seq for m in out] == [0, 1] and all(m.payload["fused"] == 1 for m in out)


def test_fuses_the_simulators_lidar_with_its_camera():
    """Truth boxes stand in for a detector: each clearly visible vehicle gets the distance the
    simulator knows, plus the camera's set-back behind the bumper (depth is camera z)."""
    from operators.driving import DrivingSimulator, PinholeCamera

    camera = PinholeCamera()
    sim = DrivingSimulator("car_following", seed=0, held_out=True, camera_hz=10.0, camera=camera)
    sim.setup(Context())
    fusion = SensorFusion(calibration=Calibration.from_pinhole(camera.K, camera.T_cam_ego))
    pairs, truth, now = [], {}, 0  # (fused, the frame's truth), truth by frame seq
    while len(pairs) < 12:
        for port, m in sim.poll(now) or ():
            if port == "lidar":
                pairs += [(o, truth.pop(o.seq)) for _, o in fusion.process("lidar", m)]
            elif port == "camera":
                t = m.truth
                dets = {"boxes": t["boxes"], "scores": np.ones(len(t["boxes"]), np.float32),
                        "classes": t["classes"]}  # fmt: skip
                truth[m.seq] = t
                pairs += [
                    (o, truth.pop(o.seq)) for _, o in fusion.process("camera", m.derive(dets))
                ]
        now += 33_333_333
    errors = [float(d) - float(td)
              for o, t in pairs
              for d, td, vis, cls in zip(o.payload["distance_m"], t["distances"], t["visible"],
                                         t["classes"], strict=True)
              if vis > 0.95 and cls == 0 and td < 40]  # fmt: skip
    assert len(errors) >= 10
    assert 0.5 < float(np.median(errors)) < 2.5  # camera ~1.7 m behind the bumper
    assert max(abs(e) for e in errors) < 4.0
