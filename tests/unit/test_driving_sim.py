"""The driving-scene simulator: determinism, scenario runs, ground truth against the rendering."""

from __future__ import annotations

import dataclasses
import math
import pickle

import cv2
import numpy as np
import pytest

from operators import Context, Message, Operator
from operators.driving import (
    SCENARIOS,
    DrivingSimulator,
    Lidar,
    PinholeCamera,
    render,
    scan,
    scenario,
)
from pipelines.testing import ListSink, Pipeline, run_local

#: A small camera and a sparse lidar for the runs where only counts and kinematics matter.
SMALL = {"camera": PinholeCamera(width=160, height=90, focal=120.0),
         "lidar": Lidar(beams=8, azimuth_step=4.0)}  # fmt: skip


def _poll_all(sim: DrivingSimulator, polls: int | None = None) -> list[tuple[str, Message]]:
    sim.setup(Context())
    out: list[tuple[str, Message]] = []
    n = 0
    while (polls is None or n < polls) and (step := sim.poll(0)) is not None:
        out += list(step)
        n += 1
    return out


def _first(out, port: str) -> Message:
    return next(m for p, m in out if p == port)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _equal_streams(x, y) -> bool:
    return len(x) == len(y) and all(
        p == q and m.key == n.key and m.event_ts == n.event_ts
        and _same(dict(m.payload), dict(n.payload)) and _same(dict(m.truth), dict(n.truth))
        for (p, m), (q, n) in zip(x, y, strict=True)
    )  # fmt: skip


# -- determinism ---------------------------------------------------------------------------
def test_same_seed_gives_identical_frames_and_another_seed_other_noise():
    # execute
    a = _poll_all(DrivingSimulator("car_following", seed=4), polls=8)
    b = _poll_all(DrivingSimulator("car_following", seed=4), polls=8)
    c = _poll_all(DrivingSimulator("car_following", seed=5), polls=8)

    # assert
    assert _equal_streams(a, b)
    image_a, image_c = _first(a, "camera").payload["image"], _first(c, "camera").payload["image"]
    assert not np.array_equal(image_a, image_c)


def test_held_out_scenarios_differ_from_training_ones():
    # execute / assert
    for name in SCENARIOS:
        assert scenario(name, held_out=True) != scenario(name), name
        assert scenario(name, seed=1) == scenario(name, seed=1), name


def test_unknown_scenario_names_the_known_ones():
    # execute / assert
    with pytest.raises(Exception, match="unknown driving scenario 'highway'; use one of"):
        DrivingSimulator("highway")


# -- every scenario to its end -------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_runs_to_its_end_with_the_expected_counts(name):
    # prepare
    sim = DrivingSimulator(name, **SMALL)
    p = Pipeline(f"drive-{name}")
    p.source("sim", sim, rate_hz=30)
    for port in ("camera", "lidar", "ego"):
        p.sink(port, ListSink())
        p.connect(f"sim.{port}", port)

    # execute
    run = run_local(p)

    # assert: one sample per period over the scenario's duration, in event-time order
    duration = sim.scenario.duration_s
    assert 10.0 <= duration <= 20.0
    assert run.summary.stopped_by == "end-of-stream"
    for port, hz in (("camera", 30), ("lidar", 10), ("ego", 50)):
        got = run.sink(port)
        assert len(got) == math.ceil(duration * hz), port
        ts = [m.event_ts for m in got]
        assert ts == sorted(ts) and ts[0] == 0 and ts[-1] < duration * 1e9, port
        assert [m.payload["frame"] for m in got] == list(range(len(got)))
        assert all(m.truth is not None for m in got)
    seqs = [m.seq for port in ("camera", "lidar", "ego") for m in run.sink(port)]
    assert len(set(seqs)) == len(seqs)  # (source, seq) identifies a message across ports
    assert run.dead_letters == []


def test_poll_rate_does_not_change_what_is_emitted():
    # execute
    fast = _poll_all(DrivingSimulator("cut_in", poll_hz=100.0, **SMALL), polls=100)
    slow = _poll_all(DrivingSimulator("cut_in", poll_hz=10.0, **SMALL), polls=10)

    # assert
    assert _equal_streams(fast, slow)


# -- ground truth against the rendering ----------------------------------------------------
def _scene(name: str, t: float):
    sc = scenario(name)
    return sc.world().scene(t, sc.ego)


@pytest.mark.parametrize(("name", "t"), [("car_following", 2.0), ("pedestrian_crossing", 3.0),
                                         ("cut_in", 5.0), ("stop_sign", 4.0)])  # fmt: skip
def test_boxes_cover_what_the_objects_drew(name, t):
    # prepare
    cam = PinholeCamera()
    scene = _scene(name, t)
    movers = tuple(o for o in scene.objects if o.kind != "sign")
    empty = render(cam, dataclasses.replace(scene, objects=())).image.astype(int)
    full = render(cam, scene)
    only_movers = render(cam, dataclasses.replace(scene, objects=movers)).image.astype(int)

    # execute
    changed = np.abs(full.image.astype(int) - empty).sum(axis=2) > 0
    mover_changed = np.abs(only_movers - empty).sum(axis=2) > 0
    truth = full.truth

    # assert: every visible object's box is mostly drawn pixels
    boxes = truth["boxes"]
    assert len(boxes) >= 1
    for box, visible, kind in zip(boxes, truth["visible"], truth["kinds"], strict=True):
        x0, y0, x1, y1 = box.astype(int)
        if visible < 0.9 or (x1 - x0) * (y1 - y0) < 40:
            continue
        inside = changed[y0 : y1 + 1, x0 : x1 + 1]
        assert inside.mean() > 0.5, (kind, box, inside.mean())
    # and a road user draws nothing outside its box
    union = np.zeros_like(mover_changed)
    for box, kind in zip(boxes, truth["kinds"], strict=True):
        if kind != "sign":
            x0, y0, x1, y1 = box
            union[int(y0) : math.ceil(y1) + 1, int(x0) : math.ceil(x1) + 1] = True
    assert not (mover_changed & ~union).any()


def test_sign_truth_names_the_gtsrb_classes_in_view():
    # prepare
    truth = render(PinholeCamera(), _scene("stop_sign", 3.0)).truth

    # execute
    signs = set(truth["sign_classes"][truth["classes"] == 2].tolist())

    # assert
    assert 14 in signs
    assert set(truth["sign_classes"][truth["classes"] != 2].tolist()) <= {-1}


@pytest.mark.parametrize(("name", "t"), [("car_following", 1.0), ("lane_curve", 8.0)])
def test_lane_polylines_lie_on_marking_pixels(name, t):
    # prepare
    rendered = render(PinholeCamera(), _scene(name, t))
    grey = cv2.cvtColor(rendered.image, cv2.COLOR_BGR2GRAY).astype(int)
    lanes, painted = rendered.truth["lanes"], rendered.truth["lane_painted"]

    # execute: brightest pixel within one pixel of each painted point ahead (up to ~40 m)
    found = []
    for lane, flags in zip(lanes, painted, strict=True):
        for (u, v), ok in list(zip(lane, flags, strict=True))[:18]:
            if ok:
                x, y = round(u), round(v)
                found.append(grey[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].max())

    # assert: paint is much brighter than asphalt (grey 92) at every such point
    assert len(found) >= 20
    assert min(found) > 140, sorted(found)[:5]
    assert abs(rendered.truth["ego_offset"] - _scene(name, t).ego.d) < 1e-9


def test_lidar_points_of_an_object_lie_in_its_box_and_match_its_distance():
    # prepare
    sim = DrivingSimulator("car_following", noise=False)
    lidar = _first(_poll_all(sim, polls=1), "lidar")
    points, ids = lidar.payload["points"], lidar.truth["point_object"]
    truth = lidar.truth

    # execute / assert
    assert points.dtype == np.float32 and points.shape[1] == 4
    checked = 0
    for oid, box, dist, kind in zip(truth["object_ids"], truth["boxes3d"], truth["distances"],
                                    truth["kinds"], strict=True):  # fmt: skip
        pts = points[ids == oid][:, :3].astype(np.float64)
        cx, cy, cz, length, width, height, yaw = box.astype(np.float64)
        c, s = math.cos(yaw), math.sin(yaw)
        qx = c * (pts[:, 0] - cx) + s * (pts[:, 1] - cy)
        qy = -s * (pts[:, 0] - cx) + c * (pts[:, 1] - cy)
        tol = 1e-3
        assert (np.abs(qx) <= length / 2 + tol).all(), kind
        assert (np.abs(qy) <= width / 2 + tol).all(), kind
        assert (np.abs(pts[:, 2] - cz) <= height / 2 + tol).all(), kind
        if kind != "sign" and len(pts) >= 20:
            nearest = np.hypot(pts[:, 0], pts[:, 1]).min()
            assert dist <= nearest + 1e-3 and nearest - dist < 0.5, (kind, dist, nearest)
            checked += 1
    assert checked >= 2
    ground = points[ids == -1]
    assert np.abs(ground[:, 2]).max() < 1e-3


def test_camera_and_lidar_distances_agree():
    # prepare
    out = _poll_all(DrivingSimulator("car_following", noise=False), polls=1)
    cam, lidar = _first(out, "camera").truth, _first(out, "lidar").truth

    # execute
    cam_d = dict(zip(cam["object_ids"].tolist(), cam["distances"].tolist(), strict=True))
    lid_d = dict(zip(lidar["object_ids"].tolist(), lidar["distances"].tolist(), strict=True))

    # assert
    common = set(cam_d) & set(lid_d)
    assert common
    assert all(abs(cam_d[k] - lid_d[k]) < 1e-4 for k in common)


def test_scan_on_its_own_is_deterministic_for_a_generator_seed():
    # prepare
    scene = _scene("cut_in", 1.0)

    # execute
    a = scan(Lidar(), scene, rng=np.random.default_rng(3))
    b = scan(Lidar(), scene, rng=np.random.default_rng(3))

    # assert
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# -- dynamics and control ------------------------------------------------------------------
def test_lead_emergency_brake_closes_the_gap():
    # execute
    egos = [m for p, m in _poll_all(DrivingSimulator("lead_emergency_brake", **SMALL))
            if p == "ego"]  # fmt: skip
    gaps = [m.truth["gap"] for m in egos]

    # assert: without a controller the ego runs into the braking lead
    assert gaps[0] > 15.0
    assert min(gaps) < 0.5
    assert any(m.truth["collision"] for m in egos)


class _Brake(Operator):
    """Test controller: brakes fully. Input ``ego``, output ``control``."""

    inputs = ("ego",)
    outputs = ("control",)

    def process(self, port, message):
        yield "control", message.derive({"throttle": 0.0, "brake": 1.0})


def test_control_fed_back_through_the_pipeline_stops_the_ego():
    # prepare
    p = Pipeline("closed-loop")
    p.source("sim", DrivingSimulator("car_following", **SMALL), rate_hz=30)
    p.operator("brake", _Brake())
    p.sink("ego", ListSink())
    p.connect("sim.ego", "brake")
    p.connect("brake.control", "sim.control", feedback=True)
    p.connect("sim.ego", "ego")

    # execute
    speeds = [m.truth["speed"] for m in run_local(p).sink("ego")]

    # assert
    assert speeds[0] > 10.0 and speeds[-1] == 0.0


def test_control_input_changes_speed_and_steering_changes_the_offset():
    # prepare
    base = DrivingSimulator("car_following", **SMALL)
    braked = DrivingSimulator("car_following", **SMALL)
    steered = DrivingSimulator("car_following", **SMALL)
    for sim in (base, braked, steered):
        sim.setup(Context())
    braked.process("control", Message("ctl", 0, 0, {"brake": 0.5}))
    steered.process("control", Message("ctl", 0, 0, {"steer": 0.05}))

    # execute: 2 simulated seconds
    def last_ego(sim):
        out = [m for _ in range(60) for p, m in sim.poll(0) if p == "ego"]
        return {**out[-1].truth, "t": out[-1].event_ts / 1e9}

    b, k, s = last_ego(base), last_ego(braked), last_ego(steered)

    # assert
    assert b["speed"] == pytest.approx(base.scenario.ego.v)
    assert k["speed"] == pytest.approx(base.scenario.ego.v - 0.5 * 8.0 * k["t"])
    assert s["lateral_offset"] > b["lateral_offset"] + 1.0  # steered left out of the weave
    assert s["speed"] == pytest.approx(b["speed"])  # steering alone keeps the speed


def test_control_without_a_command_is_rejected_with_the_expected_keys():
    # prepare
    sim = DrivingSimulator("cut_in", **SMALL)

    # execute / assert
    with pytest.raises(Exception, match="has none of throttle / brake / steer"):
        sim.process("control", Message("ctl", 0, 0, {"speed": 3.0}))


# -- snapshot / restore --------------------------------------------------------------------
def test_restored_simulator_continues_identically():
    # prepare
    sim = DrivingSimulator("pedestrian_crossing", seed=2)
    _poll_all(sim, polls=20)
    sim.process("control", Message("ctl", 0, 0, {"throttle": 0.3, "steer": -0.01}))
    state = pickle.loads(pickle.dumps(sim.snapshot()))
    fresh = pickle.loads(pickle.dumps(DrivingSimulator("pedestrian_crossing", seed=2)))
    fresh.setup(Context())
    fresh.restore(state)

    # execute
    more = [item for _ in range(15) for item in sim.poll(0)]
    more_fresh = [item for _ in range(15) for item in fresh.poll(0)]

    # assert
    assert more[0][1].event_ts > 0
    assert _equal_streams(more, more_fresh)


# -- a look at the frames ------------------------------------------------------------------
def test_every_scenario_renders_a_frame(tmp_path):
    # execute: one frame per scenario, saved where a person can look at it
    for name in SCENARIOS:
        sc = scenario(name)
        sim = DrivingSimulator(sc, poll_hz=1.0)
        frames = [m for p, m in _poll_all(sim, polls=3) if p == "camera"]
        image = frames[75].payload["image"]
        assert cv2.imwrite(str(tmp_path / f"{name}.png"), image)

        # assert: sky above, road below, not one flat colour
        assert image.shape == (360, 640, 3) and image.dtype == np.uint8
        assert image[:100].mean(axis=(0, 1))[0] > image[300:].mean(axis=(0, 1))[0]
        assert image.std() > 20
    assert len(list(tmp_path.glob("*.png"))) == len(SCENARIOS)
