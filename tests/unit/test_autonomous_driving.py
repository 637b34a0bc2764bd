"""The shipped ``autonomous_driving`` pipeline without Ray: validation and a closed-loop drive.

The operators never read ``truth``; this test does, to judge them (collision, gap).
"""

from __future__ import annotations

import pytest

from operators import Context
from operators.driving import DrivingSimulator, PinholeCamera
from operators.recording import Replay, read_recording, write_recording
from pipelines import Node, ValidationError
from pipelines.autonomous_driving import PERCEPTION_RECORDED, RECORDED, V2V_TOPIC, build
from pipelines.testing import run_local

#: Like cluster/fleets/local.toml: one CPU per node, the camera resource on the vehicle.
FLEET = [
    Node("vehicle-1", {"edge.node": "vehicle-1", "edge.role": "vehicle", "edge.zone": "north",
                       "edge.sensor.camera": "true", "edge.sensor.lidar": "true"},
         {"CPU": 1.0, "camera": 1.0}),
    Node("rsu-1", {"edge.node": "rsu-1", "edge.role": "rsu", "edge.zone": "north",
                   "edge.sensor.camera": "true"}, {"CPU": 1.0}),
    Node("hub-1", {"edge.node": "hub-1", "edge.role": "hub", "edge.zone": "city"}, {"CPU": 1.0}),
]  # fmt: skip
#: A tiny camera at 1 Hz: nothing here looks at images, and rendering is the slow part.
FAST = {"camera": PinholeCamera(width=64, height=36, focal=48.0), "camera_hz": 1.0}


def test_validates_against_the_local_fleet_and_fits_its_nodes(tmp_path):
    p = build(out_dir=tmp_path)
    p.validate(FLEET)
    on = {name: dict(s.placement.selector) for name, s in p.specs.items()}
    vehicle = {"sim", "control", "v2v"}
    hub = {*RECORDED, *PERCEPTION_RECORDED, "camera_log", "annotate", "video"}
    assert {n for n, sel in on.items() if sel == {"edge.role": "vehicle"}} == vehicle
    assert {n for n, sel in on.items() if sel == {"edge.role": "hub"}} == hub
    assert on["perception"] == {"edge.role": "vehicle", "edge.accel": "gpu"}  # where there is one
    for name in set(on) - vehicle:  # else on the vehicle, like the hub's sinks
        assert p.specs[name].placement.fallbacks == ({"edge.role": "vehicle"},)
    for role in ("vehicle", "hub"):  # what lands on one node fits its one CPU
        names = [n for n, sel in on.items() if sel["edge.role"] == role]
        assert len(names) >= 4
        assert sum(p.specs[n].operator.resources.num_cpus for n in names) <= 0.95 + 1e-9
    # perception gives way on the vehicle's cores, the control loop does not
    assert p.specs["perception"].operator.resources.niceness == 4
    assert p.specs["control"].operator.resources.niceness == 0
    assert {p.specs[n].operator.resources.niceness for n in hub} == {10}  # logging gives way
    feedback = {e.name: (e.policy, e.window) for e in p.edges if e.feedback}
    assert feedback == {"control.control->sim.control": ("latest-only", 1),
                        "v2v.advisory->control.advisory": ("block", 4)}  # fmt: skip
    lidar = next(e for e in p.edges if e.name == "sim.lidar->control.lidar")
    assert lidar.deadline_ns is not None and lidar.deadline_ns > 0
    assert [(t.topic, t.operator, t.port) for t in p.publishes] == [(V2V_TOPIC, "v2v", "broadcast")]
    assert [(t.topic, t.operator, t.port) for t in p.subscribes] == [(V2V_TOPIC, "v2v", "v2v")]
    assert p.specs["sim"].rate_hz == 30.0 and p.time == "event"
    assert build(out_dir=tmp_path, realtime=False).specs["sim"].rate_hz is None


def test_in_real_time_the_hub_takes_high_rate_streams_at_record_hz_and_commands_in_full(
    tmp_path,
):
    rates = {e.name: e.rate_hz for e in build(out_dir=tmp_path, record_hz=5.0).edges}
    assert rates["sim.ego->ego_log.ego"] == rates["perception.lanes->lane_log.lanes"] == 5.0
    assert rates["control.control->commands.control"] is None  # every command, with its reason
    assert rates["control.emergency->emergencies.emergency"] is None
    assert rates["sim.ego->control.ego"] is None  # the control loop takes every sample
    lossless = build(out_dir=tmp_path, realtime=False, record_hz=5.0).edges
    assert all(e.rate_hz is None for e in lossless if e.dst in {"ego_log", "lane_log"})


def test_recorded_sensors_drive_the_vehicle_open_loop(tmp_path):
    sim = DrivingSimulator("cut_in", seed=0, poll_hz=10.0, **FAST)
    sim.setup(Context(operator="sim"))
    drive = [out for _ in range(20) for out in sim.poll(0)]
    write_recording(tmp_path / "sensors", drive, ports=("ego", "lidar", "camera"))
    replay = Replay(tmp_path / "sensors", ports=("ego", "lidar", "camera"))
    p = build(out_dir=tmp_path / "out", realtime=False, sensors=replay, **FAST)
    p.validate(FLEET)
    assert "sim" not in p.specs and p.specs["sensors"].operator is replay
    assert [e.name for e in p.edges if e.feedback] == ["v2v.advisory->control.advisory"]

    run = run_local(p)
    assert not run.dead_letters and run.summary.identity_holds()
    commands = [m for _, m in read_recording(tmp_path / "out" / "commands")]
    assert len(commands) == sum(port == "ego" for port, _ in drive)  # one per ego sample
    assert run.summary.sinks["ego_log"] == len(commands)


def test_a_fleet_without_a_vehicle_is_rejected_naming_the_operator(tmp_path):
    with pytest.raises(ValidationError, match="sim"):
        build(out_dir=tmp_path).validate([n for n in FLEET if n.node_id != "vehicle-1"])


def test_lead_emergency_brake_brakes_before_collision(tmp_path):
    run = run_local(build(out_dir=tmp_path, realtime=False, perception=False, **FAST))
    assert not run.dead_letters, run.dead_letters[:3]
    assert run.summary.stopped_by == "end-of-stream" and run.summary.identity_holds()
    commands = [m for _, m in read_recording(tmp_path / "commands")]
    ego = [m for _, m in read_recording(tmp_path / "ego_log")]
    assert len(commands) == run.summary.sinks["commands"] > 0
    assert len(ego) == run.summary.sinks["ego_log"] > 0
    aeb = [m for m in commands if m.payload["reason"].startswith("AEB: ttc")]
    assert aeb and max(m.payload["brake"] for m in aeb) > 0.9
    assert not any(m.truth["collision"] for m in ego)
    assert min(m.truth["gap"] for m in ego) > 0
    # braking began while the lead was still ahead, and the ego ended slower than it started
    braking = aeb[0].event_ts
    assert min(m.truth["gap"] for m in ego if m.event_ts <= braking) > 2.0
    assert ego[-1].truth["speed"] < ego[0].truth["speed"] - 5.0
    assert run.summary.sinks["emergencies"] > 0 and run.summary.sinks["camera_log"] > 0
