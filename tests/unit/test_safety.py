"""SafetyMonitor and its kernels; closed-loop AEB on the driving simulator (no Ray).

Figures (TTC at braking, min gap) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from operators import Message, Operator, QoS
from operators.safety import Corridor, SafetyMonitor, path_obstacles, ttc

sys.path.insert(0, str(Path(__file__).parent))
from _driving_loop import drive

EMERGENCY_SEEDS = (0, 1, 2)
CALM = ("car_following", "lane_curve", "speed_limit_change", "stop_sign")


# -- kernels -----------------------------------------------------------------------------------
def test_ttc_is_distance_over_closing_speed_and_inf_when_opening():
    # execute / assert
    assert ttc(20.0, 10.0) == 2.0
    assert ttc(20.0, 0.0) == math.inf and ttc(20.0, -3.0) == math.inf
    assert ttc(math.inf, 10.0) == math.inf and ttc(-1.0, 5.0) == 0.0


def test_path_obstacles_keeps_the_corridor_above_the_road_and_counts_nan_points():
    # prepare: in path at 12 m, beside the lane, on the ground, behind, NaN / inf
    pts = np.array([[12.0, 0.5, 1.0, 0], [12.5, -0.2, 0.6, 0], [6.0, 3.0, 1.0, 0],
                    [5.0, 0.0, 0.05, 0], [-3.0, 0.0, 1.0, 0], [np.nan, 0, 1, 0],
                    [1.0, np.inf, 1.0, 0]], np.float32)  # fmt: skip

    # execute
    found = path_obstacles(pts, corridor=Corridor())

    # assert
    assert (found.nearest_m, found.points, found.dropped) == (12.0, 2, 2)


def test_path_obstacles_bends_the_corridor_with_the_curvature():
    # prepare: a point 30 m ahead, 4.5 m to the left (on a left bend of radius 100 m)
    pts = np.array([[30.0, 4.5, 1.0, 0], [30.2, 4.4, 1.0, 0]], np.float32)

    # execute / assert
    assert path_obstacles(pts, corridor=Corridor()).nearest_m == math.inf
    assert path_obstacles(pts, corridor=Corridor(), curvature=0.01).nearest_m == 30.0


def test_path_obstacles_says_how_to_fix_a_bad_shape():
    with pytest.raises(Exception, match=r"expected \(N, 3\) or \(N, 4\)"):
        path_obstacles(np.zeros((4, 2), np.float32), corridor=Corridor())


# -- the operator ------------------------------------------------------------------------------
def _scan(x: float) -> dict:
    return {"points": np.array([[x, 0.0, 1.0, 0.5], [x + 0.1, 0.3, 0.8, 0.5]], np.float32)}


def test_closing_speed_comes_from_successive_scans_and_emergency_is_top_class():
    # prepare
    mon = SafetyMonitor(ttc_threshold_s=2.0)
    list(mon.process("ego", Message("s", 0, 0, {"speed": 15.0, "yaw_rate": 0.0})))

    # execute: an obstacle closing at 10 m/s
    outs = [list(mon.process("lidar", Message("s", i, i * 100_000_000, _scan(30.0 - i))))
            for i in range(13)]  # fmt: skip

    # assert
    assert outs[0][0][1].payload["ttc_s"] == math.inf  # one scan: no closing speed yet
    assert outs[1][0][1].payload["closing_mps"] == pytest.approx(10.0, abs=1e-3)
    first = next(i for i, o in enumerate(outs) if len(o) == 2)
    port, emergency = outs[first][1]
    assert port == "emergency" and emergency.qos == QoS.EMERGENCY
    assert emergency.payload["ttc_s"] < 2.0 and outs[first - 1][0][1].payload["ttc_s"] >= 2.0


def test_nan_points_are_dropped_and_counted_not_a_crash():
    # prepare
    mon = SafetyMonitor()
    points = np.array([[np.nan, 0, 0, 0], [np.inf, 1, 1, 0], [10.0, 0, 1, 0]], np.float32)

    # execute
    [(_, out)] = mon.process("lidar", Message("s", 0, 0, {"points": points}))

    # assert: one point in the corridor is not enough to be an obstacle
    assert out.payload["dropped_points"] == 2 and out.payload["in_path"] is False


def test_a_silent_lidar_is_a_stale_sensor_event_then_recovers():
    # prepare
    mon = SafetyMonitor(lidar_deadline_ms=300.0, ego_deadline_ms=10_000.0)
    mon.on_tick(0)
    list(mon.process("lidar", Message("s", 0, 100_000_000, _scan(40.0))))

    # execute
    quiet = list(mon.on_tick(300_000_000))
    stale = list(mon.on_tick(450_000_000))
    again = list(mon.on_tick(500_000_000))
    list(mon.process("lidar", Message("s", 1, 550_000_000, _scan(40.0))))
    back = list(mon.on_tick(600_000_000))

    # assert
    assert quiet == [] and again == []
    [(port, event)] = stale
    assert port == "safety" and event.payload["event"] == "sensor_stale"
    assert list(event.payload["sensors"]) == ["lidar"] and list(event.payload["stale"]) == ["lidar"]
    assert back[0][1].payload["event"] == "sensor_recovered"


def test_bad_parameters_say_how_to_fix_them():
    with pytest.raises(Exception, match="use ttc_threshold_s > 0"):
        SafetyMonitor(ttc_threshold_s=0.0)


# -- closed loop -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", EMERGENCY_SEEDS)
def test_lead_emergency_brake_triggers_aeb_without_collision(seed):
    # execute
    d = drive("lead_emergency_brake", seed)

    # assert
    print(f"\nlead_emergency_brake seed {seed}: AEB at TTC {d.ttc_at_braking:.2f} s, "
          f"min gap {d.min_gap:.1f} m, collision {d.collided}")  # fmt: skip
    assert d.aeb, "AEB never triggered"
    assert not d.collided and d.min_gap > 2.0
    assert d.broadcasts and d.broadcasts[0].qos == QoS.EMERGENCY  # V2V emergency sent
    controls = [m for m in d.controls if m.event_ts >= d.aeb[0].event_ts]
    assert max(m.payload["brake"] for m in controls) == 1.0
    assert "AEB" in controls[-1].payload["reason"] or d.speeds()[-1] < 0.5


@pytest.mark.parametrize("name", CALM)
def test_no_false_emergency_brake(name):
    # execute
    d = drive(name, 0)

    # assert
    print(f"\n{name}: AEB decisions {len(d.aeb)}, min gap {d.min_gap:.1f} m")
    assert d.aeb == [] and not d.collided


def test_brakes_for_a_pedestrian_entering_the_path():
    # execute
    d = drive("pedestrian_crossing", 0)

    # assert
    print(f"\npedestrian_crossing seed 0: AEB at TTC {d.ttc_at_braking:.2f} s, "
          f"min gap {d.min_gap:.1f} m")  # fmt: skip
    assert d.aeb and not d.collided


class _LidarCut(Operator):
    """Test helper: passes ``in`` to ``out`` until event time ``cut_ns``, then goes silent."""

    inputs = ("in",)
    outputs = ("out",)

    def __init__(self, cut_ns: int) -> None:
        self.cut_ns = cut_ns

    def process(self, port, message):
        if message.event_ts < self.cut_ns:
            yield "out", message


def test_a_silent_lidar_in_closed_loop_is_reported_and_slows_the_car():
    # execute
    d = drive("car_following", 0, lidar_gate=_LidarCut(3_000_000_000))

    # assert
    events = [m for m in d.safety if m.payload["event"] == "sensor_stale"]
    assert events and list(events[0].payload["sensors"]) == ["lidar"]
    assert 3.2e9 <= events[0].event_ts <= 3.5e9
    assert any("sensor stale" in m.payload["reason"] for m in d.decisions)
    assert d.speeds()[-1] < d.speeds()[0] - 5.0
