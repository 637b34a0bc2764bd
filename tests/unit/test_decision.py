"""DecisionMaker, Controller and EmergencyHandler, and their kernels (no Ray)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from operators import Message, QoS
from operators.controller import Controller, pedals, rate_limit
from operators.decision import DecisionMaker, acc_accel, lane_keep_steer, speed_limit_mps
from operators.emergency import EmergencyHandler

sys.path.insert(0, str(Path(__file__).parent))
from _driving_loop import drive

MS = 1_000_000


# -- kernels -----------------------------------------------------------------------------------
def test_acc_accel_cruises_follows_and_clips():
    # execute / assert
    assert acc_accel(10.0, set_speed_mps=20.0) == 1.5  # clipped to max_accel
    assert acc_accel(20.0, set_speed_mps=20.0) == 0.0
    at_gap = acc_accel(20.0, set_speed_mps=25.0, gap_m=5.0 + 1.6 * 20.0, lead_speed_mps=20.0)
    assert at_gap == pytest.approx(0.0)
    assert acc_accel(20.0, set_speed_mps=25.0, gap_m=10.0, lead_speed_mps=10.0) == -3.5


def test_rate_limit_and_pedals():
    assert rate_limit(0.0, -8.0, max_rate=5.0, dt_s=0.1) == pytest.approx(-0.5)
    assert rate_limit(1.0, 1.2, max_rate=5.0, dt_s=0.1) == 1.2
    assert rate_limit(1.0, 3.0, max_rate=math.inf, dt_s=0.0) == 1.0  # no time, no change
    assert pedals(1.5, max_accel_mps2=3.0, max_decel_mps2=8.0) == (0.5, 0.0)
    assert pedals(-16.0, max_accel_mps2=3.0, max_decel_mps2=8.0) == (0.0, 1.0)


def test_lane_keep_steer_steers_back_toward_the_centre():
    assert lane_keep_steer(0.5, 0.0) < 0 < lane_keep_steer(-0.5, 0.0)  # left of centre: right
    assert lane_keep_steer(0.0, 0.1) < 0
    assert lane_keep_steer(0.0, 0.0, curvature=0.01) == pytest.approx(math.atan(0.028))


def test_speed_limit_classes():
    assert speed_limit_mps(1) == pytest.approx(30 / 3.6, abs=1e-3)
    assert speed_limit_mps(14) is None


# -- DecisionMaker with synthetic messages -----------------------------------------------------
def _ego(ts: int, speed: float) -> Message:
    return Message("ego", ts, ts, {"speed": speed})


def test_lanes_input_turns_on_lane_keeping_and_stale_lanes_leave_only_the_curve():
    # prepare
    dm = DecisionMaker()
    lanes = {"offset_m": 0.6, "heading_rad": 0.0, "curvature_1pm": 0.002}
    list(dm.process("lanes", Message("l", 0, 0, lanes)))

    # execute
    [(_, steering)] = dm.process("ego", _ego(10 * MS, 15.0))
    [(_, later)] = dm.process("ego", _ego(1000 * MS, 15.0))

    # assert
    assert "lane keeping" in steering.payload["reason"]
    assert later.payload["steer_rad"] == pytest.approx(math.atan(2.8 * 0.002))
    assert steering.payload["steer_rad"] < later.payload["steer_rad"]  # left of centre: rightward
    assert "lane lost" in later.payload["reason"]


def test_lane_keeping_takes_the_lane_detectors_output_and_ignores_unseen_lanes():
    # prepare: what LaneDetector(geometry=True) emits, then a frame where no lane was seen
    dm = DecisionMaker()
    seen = {"offset_m": -0.4, "heading_rad": 0.0, "curvature_1pm": 0.01, "confidence": 0.9}
    unseen = {"offset_m": math.nan, "heading_rad": math.nan, "curvature_1pm": math.nan,
              "confidence": 0.0}  # fmt: skip
    list(dm.process("lanes", Message("l", 0, 0, seen)))
    list(dm.process("lanes", Message("l", 1, 5 * MS, unseen)))

    # execute
    [(_, decision)] = dm.process("ego", _ego(10 * MS, 15.0))

    # assert: steers on the last usable estimate (right of centre, left curve: steer left)
    expected = lane_keep_steer(-0.4, 0.0, curvature=0.01, speed_mps=15.0)
    assert decision.payload["steer_rad"] == pytest.approx(expected)
    assert decision.payload["steer_rad"] > 0


def test_speed_limit_sign_caps_the_cruise_speed():
    # prepare
    dm = DecisionMaker()
    list(dm.process("ego", _ego(0, 15.0)))

    # execute
    list(dm.process("signs", Message("sg", 0, 10 * MS, {"classes": [1]})))
    [(_, d)] = dm.process("ego", _ego(20 * MS, 15.0))

    # assert
    assert d.payload["target_speed_mps"] == pytest.approx(8.333)
    assert d.payload["accel_mps2"] < 0 and d.payload["reason"].startswith("speed limit")


def test_stop_sign_brakes_to_a_stop_before_it_holds_then_drives_on():
    # prepare: a crude ego integrating the decisions, a stop sign 40 m ahead
    dm = DecisionMaker()
    v, s, ts, stopped_at = 10.0, 0.0, 0, None
    list(dm.process("ego", _ego(0, v)))
    list(dm.process("signs", Message("sg", 0, 0, {"classes": [14], "distances_m": [40.0]})))

    # execute
    reasons = []
    for k in range(1, 1500):
        ts = k * 10 * MS
        [(_, d)] = dm.process("ego", _ego(ts, v))
        reasons.append(d.payload["reason"])
        v = max(v + d.payload["accel_mps2"] * 0.01, 0.0)
        s += v * 0.01
        if v == 0.0 and stopped_at is None:
            stopped_at = s

    # assert: stopped short of the sign, stood, then accelerated away
    assert stopped_at is not None and 34.0 < stopped_at < 40.0
    assert any(r == "stop sign: standing" for r in reasons)
    assert v > 3.0 and reasons[-1].startswith("cruise")


def test_emergency_means_aeb_at_once_with_the_reason_and_top_class():
    # prepare
    dm = DecisionMaker()
    list(dm.process("ego", _ego(0, 20.0)))

    # execute
    [(_, d)] = dm.process("emergency", Message("e", 1, 5 * MS, {"ttc_s": 1.4}))
    [(_, held)] = dm.process("ego", _ego(900 * MS, 12.0))
    [(_, released)] = dm.process("ego", _ego(1100 * MS, 0.0))

    # assert
    assert d.payload["aeb"] and d.payload["accel_mps2"] == -8.0 and d.qos == QoS.EMERGENCY
    assert d.payload["reason"] == "AEB: ttc 1.40 s"
    assert held.payload["aeb"] and not released.payload["aeb"]


def test_decision_maker_rejects_an_unknown_port_with_the_known_ones():
    with pytest.raises(Exception, match="no input port 'radar'; use one of ego, safety"):
        list(DecisionMaker().process("radar", _ego(0, 1.0)))


# -- Controller --------------------------------------------------------------------------------
def _decision(ts: int, accel: float, *, steer: float = math.nan, aeb: bool = False) -> Message:
    payload = {"accel_mps2": accel, "steer_rad": steer, "aeb": aeb, "reason": "test"}
    return Message("d", ts, ts, payload)


def test_controller_limits_jerk_and_steering_rate_and_keeps_the_reason():
    # prepare
    c = Controller(max_jerk_mps3=5.0, max_steer_rate=0.5)
    list(c.process("decision", _decision(0, 0.0, steer=0.0)))

    # execute
    [(_, a)] = c.process("decision", _decision(100 * MS, -8.0, steer=0.3))
    [(_, b)] = c.process("decision", _decision(200 * MS, -8.0, aeb=True))

    # assert
    assert a.payload["accel_mps2"] == pytest.approx(-0.5) and a.payload["steer"] == 0.05
    assert a.payload["reason"] == "test" and a.qos == QoS.CONTROL
    assert b.payload["accel_mps2"] == pytest.approx(-4.5)  # AEB jerk 40 m/s^3
    assert "steer" not in b.payload and b.qos == QoS.EMERGENCY


def test_controller_output_drives_the_simulator_control_input():
    # prepare
    from operators.driving import DrivingSimulator

    sim = DrivingSimulator("car_following", camera_hz=1.0)
    [(_, control)] = Controller().process("decision", _decision(0, -1.0, aeb=True))

    # execute / assert: accepted, and the simulator's command is what was sent
    assert list(sim.process("control", control)) == []
    assert sim.command.brake == pytest.approx(1.0 / 8.0) and sim.longitudinal


def test_controller_says_what_it_expects():
    with pytest.raises(Exception, match=r"connect DecisionMaker\.decision to Controller\.decision"):
        list(Controller().process("decision", Message("x", 0, 0, {"speed": 1.0})))


# -- EmergencyHandler --------------------------------------------------------------------------
def test_emergency_handler_broadcasts_once_per_holdoff_and_ignores_its_own_echo():
    # prepare
    h = EmergencyHandler(vehicle="car-1", holdoff_s=2.0)
    e = {"kind": "collision_imminent", "x": 1.0, "y": 2.0, "ttc_s": 1.0, "time_ns": 0}

    # execute
    first = list(h.process("emergency", Message("s", 0, 0, e)))
    again = list(h.process("emergency", Message("s", 1, 500 * MS, e)))
    echo = list(h.process("v2v", first[0][1]))

    # assert
    [(port, msg)] = first
    assert port == "broadcast" and msg.qos == QoS.EMERGENCY
    assert {k: msg.payload[k] for k in ("kind", "vehicle", "x", "y", "time_ns")} == {
        "kind": "collision_imminent",
        "vehicle": "car-1",
        "x": 1.0,
        "y": 2.0,
        "time_ns": 0,
    }
    assert again == [] and echo == []


def test_emergency_handler_ignores_far_away_emergencies():
    # prepare
    h = EmergencyHandler(vehicle="car-1", radius_m=100.0)
    list(h.process("ego", Message("g", 0, 0, {"x": 0.0, "y": 0.0})))
    far = {"kind": "collision_imminent", "vehicle": "car-2", "x": 500.0, "y": 0.0}

    # execute / assert
    assert list(h.process("v2v", Message("v", 0, 0, far))) == []


def test_a_received_v2v_emergency_slows_the_ego_in_closed_loop():
    # prepare: another vehicle's emergency arrives at the start of the drive
    other = Message("v2v/emergency", 0, 0, {"kind": "collision_imminent", "vehicle": "car-2",
                                            "x": 120.0, "y": 0.0, "time_ns": 0})  # fmt: skip

    # execute
    d = drive("lane_curve", 0, v2v=[other])

    # assert
    speeds = d.speeds()
    held = [m.truth["speed"] for m in d.ego if m.event_ts <= 10_000_000_000]
    print(f"\nV2V advisory: ego from {speeds[0]:.1f} to {min(held):.1f} m/s")
    assert speeds[0] > 12.0 and 7.5 < held[-1] < 8.5
    assert any(m.payload["reason"].startswith("V2V collision_imminent from car-2")
               for m in d.decisions)  # fmt: skip
    assert d.aeb == []
