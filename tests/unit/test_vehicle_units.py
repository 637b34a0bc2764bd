"""``operators.vehicle``: the chained units give what their operators give one by one.

``VEHICLE_EXAMPLES`` is how the conformance suite (``test_conformance.py``) builds and
feeds the two units.
"""

from __future__ import annotations

import numpy as np
import pytest

from operators import Context, Message
from operators.calibration import Calibration
from operators.controller import Controller
from operators.decision import DecisionMaker
from operators.detection import SIM_DETECTOR, ObjectDetector
from operators.driving import DrivingSimulator, PinholeCamera
from operators.fusion import SensorFusion
from operators.lanes import LaneDetector
from operators.safety import SafetyMonitor
from operators.signs import SignRecognizer
from operators.vehicle import VehicleControl, VehiclePerception

CAMERA = PinholeCamera()
DETECTOR = {"model": SIM_DETECTOR, "num_classes": 3, "classes": None, "keep_image": True,
            "carry": ("frame", "K")}  # fmt: skip


def _perception_ops() -> dict:
    return {
        "lanes": LaneDetector(geometry=True),
        "detector": ObjectDetector(**DETECTOR),
        "fusion": SensorFusion(calibration=Calibration.from_pinhole(CAMERA.K, CAMERA.T_cam_ego)),
        "signs": SignRecognizer(),
    }


def _drive(scenario: str, polls: int, **rates) -> list[tuple[str, Message]]:
    """The first ``polls`` polls of a held-out drive: (port, message) in emission order."""
    sim = DrivingSimulator(scenario, seed=0, held_out=True, poll_hz=10.0, camera=CAMERA, **rates)
    sim.setup(Context(operator="sim"))
    return [out for _ in range(polls) for out in sim.poll(0)]


def _payloads(outputs) -> list[tuple[str, int, dict]]:
    return [(port, m.seq, m.payload) for port, m in outputs]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")


def test_perception_unit_gives_what_its_operators_give_one_by_one():
    drive = [(p, m) for p, m in _drive("stop_sign", 12, camera_hz=10.0) if p != "ego"]
    ops = _perception_ops()
    unit = VehiclePerception(**_perception_ops())
    for op in [*ops.values(), unit]:
        op.setup(Context(operator="perception"))

    expected, got = [], []
    for port, message in drive:
        got += _payloads(unit.process(port, message))
        if port == "lidar":
            expected += _payloads(ops["fusion"].process("lidar", message))
            continue
        expected += _payloads(ops["lanes"].process("frames", message))
        for _, det in ops["detector"].process("camera", message):
            expected += _payloads(ops["signs"].process("detections", det))
            expected += _payloads(ops["fusion"].process("camera", det))

    ports = [p for p, _, _ in got]
    assert {"lanes", "objects", "signs"} <= set(ports)
    assert ports.count("lanes") == sum(p == "camera" for p, _ in drive)
    assert [(p, s) for p, s, _ in got] == [(p, s) for p, s, _ in expected]
    assert all(_same(a, b) for (_, _, a), (_, _, b) in zip(got, expected, strict=True))


def test_control_unit_gives_the_commands_of_the_chain_it_replaces():
    drive = _drive("lead_emergency_brake", 60, camera_hz=1.0)
    safety, decide, control = SafetyMonitor(), DecisionMaker(), Controller()
    unit = VehicleControl()
    expected, got = [], []
    for port, message in drive:
        if port == "camera":
            continue
        got += _payloads(unit.process(port, message))
        events = list(safety.process(port, message))
        decisions = [d for e_port, e in events for d in decide.process(e_port, e)]
        if port == "ego":
            decisions += list(decide.process("ego", message))
        expected += _payloads(events)
        expected += [o for _, d in decisions for o in _payloads(control.process("decision", d))]

    commands = [(s, p) for port, s, p in got if port == "control"]
    assert any(p["aeb"] for _, p in commands)  # the drive has its emergency brake
    assert sorted(port for port, _, _ in got) == sorted(port for port, _, _ in expected)
    want = [(s, p) for port, s, p in expected if port == "control"]
    assert [s for s, _ in commands] == [s for s, _ in want]
    assert all(_same(a, b) for (_, a), (_, b) in zip(commands, want, strict=True))


def test_control_unit_ticks_the_safety_monitors_stale_sensor_checks():
    unit = VehicleControl(safety=SafetyMonitor(tick_ms=20.0))
    assert unit.tick_period_ns == 20_000_000
    list(unit.on_tick(0))
    out = list(unit.on_tick(2_000_000_000))  # nothing heard for 2 s: both sensors stale
    stale = [m for port, m in out if port == "safety"]
    assert stale and stale[0].payload["event"] == "sensor_stale"
    assert [port for port, _ in out].count("control") == len(stale)  # each one decided on


def test_perception_unit_refuses_a_detector_that_drops_the_frame():
    with pytest.raises(ValueError, match=r"keep_image=True"):
        VehiclePerception(
            lanes=LaneDetector(),
            detector=ObjectDetector(model=SIM_DETECTOR),
            fusion=SensorFusion(),
        )


# -- conformance examples ------------------------------------------------------------------------
def _perception_feed(env) -> list[tuple[str, Message]]:
    return [(p, m) for p, m in _drive("cut_in", 4, camera_hz=5.0) if p != "ego"]


def _control_feed(env) -> list[tuple[str, Message]]:
    lanes = {"offset_m": 0.2, "heading_rad": 0.01, "confidence": 0.9}
    signs = {"classes": np.array([2]), "distances_m": np.array([30.0])}
    advisory = {"target_speed_mps": 8.0, "hold_s": 5.0}
    drive = [(p, m) for p, m in _drive("lead_emergency_brake", 3) if p != "camera"]
    return [*drive, ("lanes", Message("lanes", 0, 0, lanes)),
            ("signs", Message("signs", 0, 0, signs)),
            ("advisory", Message("v2v", 0, 0, advisory))]  # fmt: skip


VEHICLE_EXAMPLES = {
    "VehiclePerception": (lambda env: VehiclePerception(**_perception_ops()), _perception_feed, 3),
    "VehicleControl": (lambda env: VehicleControl(), _control_feed, 3),
}
