"""The smart-city operators without SUMO or Ray: checks, estimates, policies, alerts.

``CITY_EXAMPLES`` is how the conformance suite (``test_conformance.py``) builds and feeds
each city operator; the tests below check what each one decides.
"""

from __future__ import annotations

import numpy as np
import pytest

from operators import Message
from operators.city import (
    AlertSystem,
    CityCoordinator,
    EnvironmentalMonitor,
    IoTDeviceManager,
    PublicSafety,
    QueueFlowEstimator,
    RoadsideUnit,
    Scenario,
    SumoCity,
    TrafficSignalController,
    generate,
)
from operators.city._air import Episode
from operators.city._air import reading as air_reading
from operators.city._errors import CityError
from operators.city.policies import FIXED, MaxPressure, Webster, view_of

#: A 4-approach junction: phase 0 serves lanes 1 and 2 (north-south), phase 1 lanes 0 and 3.
SERVES = np.array([[False, True, True, False], [True, False, False, True]])


def reading(
    t: float,
    *,
    junction="B1",
    vehicles=(0, 0, 0, 0),
    halting=(0, 0, 0, 0),
    passed=(0, 0, 0, 0),
    downstream=(0, 0, 0, 0),
    phase=0,
    phase_s=10.0,
) -> Message:
    payload = {
        "intersection": junction,
        "unit": "rsu-1",
        "t_s": float(t),
        "vehicles": np.array(vehicles, np.int32),
        "halting": np.array(halting, np.int32),
        "passed": np.array(passed, np.int32),
        "downstream": np.array(downstream, np.float32),
        "green_phases": np.array([0, 2], np.int32),
        "serves": SERVES,
        "phase": phase,
        "phase_s": phase_s,
    }
    return Message("city", int(t), int(t * 1e9), payload)


def estimate(t: float, **kw) -> Message:
    m = reading(t, **kw)
    n = len(m.payload["vehicles"])
    extra = {
        "queue": m.payload["halting"].astype(float),
        "arrival_vps": np.full(n, 0.1),
        "sat_vps": np.full(n, 0.5),
    }
    return m.derive({**m.payload, **extra})


def air(t: float, pm25: float, no2: float = 30.0, junction="B1") -> Message:
    payload = {"intersection": junction, "unit": "rsu-1", "t_s": float(t), "pm25": pm25, "no2": no2}
    return Message("city", int(t), int(t * 1e9), payload)


def unit_message(t: float, *junctions: Message, unit: str = "rsu-1") -> Message:
    """``SumoCity``'s message of one roadside unit: its junctions' readings (or air) of a step."""
    payload = {"unit": unit, "t_s": float(t), "junctions": {
        m.payload["intersection"]: dict(m.payload) for m in junctions}}  # fmt: skip
    return Message("city", int(t), int(t * 1e9), payload)


def alert(t: float, kind="device_garbage", severity="warning", junction="B1") -> Message:
    payload = {
        "kind": kind,
        "severity": severity,
        "intersection": junction,
        "unit": "rsu-1",
        "t_s": float(t),
        "detail": "",
    }
    return Message("rsu", int(t), int(t * 1e9), payload)


# -- conformance examples (make, feed, polls) --------------------------------------------------
def _sim(env):
    scenario = Scenario(rows=1, cols=1, demand_s=120, seed=3)
    return SumoCity(scenario, files=generate(scenario, env.tmp_path), backend="traci")


def _queue_feed(env):
    return [
        (
            "readings",
            reading(t, vehicles=(t % 3, 2, 1, 0), halting=(1, t % 2, 0, 0), passed=(0, 1, 0, 0)),
        )
        for t in range(1, 5)
    ]


def _control_feed(env):
    plan = Message(
        "hub", 0, 0, {"intersection": "B1", "cycle_s": 60.0, "offset_s": 14.0, "t_s": 0.0}
    )
    clear = Message("safety", 0, 0, {"intersection": "B1", "lane": 1, "active": True})
    return [
        ("plan", plan),
        ("clearance", clear),
        *[("state", estimate(t, vehicles=(3, 0, 1, 2), halting=(2, 0, 0, 1))) for t in range(1, 4)],
    ]


def _devices_feed(env):
    return [
        ("readings", reading(1)),
        ("air", air(1, 12.0)),
        ("air", air(2, -4.0)),
        ("readings", reading(2, vehicles=(0, 99, 0, 0))),
    ]


def _unit_feed(env):
    plan = Message(
        "hub", 0, 0, {"intersection": "B1", "cycle_s": 60.0, "offset_s": 14.0, "t_s": 0.0}
    )
    busy = {"vehicles": (4, 0, 0, 1), "halting": (4, 0, 0, 0)}
    return [
        ("plan", plan),
        *[("readings", unit_message(t, reading(t, **busy), reading(t, junction="B2")))
          for t in range(1, 4)],
        ("air", unit_message(10, air(10, 12.0), air(10, -1.0, junction="B2"))),
    ]  # fmt: skip


def _safety_feed(env):
    return [
        ("state", estimate(t, halting=(0, 5, 0, 0), vehicles=(0, 6, 0, 0))) for t in range(0, 40, 5)
    ]


CITY_EXAMPLES = {
    "SumoCity": (_sim, None, 3),
    "IoTDeviceManager": (lambda env: IoTDeviceManager(), _devices_feed, 3),
    "QueueFlowEstimator": (lambda env: QueueFlowEstimator(), _queue_feed, 3),
    "TrafficSignalController": (
        lambda env: TrafficSignalController(policy="webster"),
        _control_feed,
        3,
    ),
    "PublicSafety": (lambda env: PublicSafety(), _safety_feed, 3),
    "RoadsideUnit": (lambda env: RoadsideUnit(), _unit_feed, 3),
    "EnvironmentalMonitor": (
        lambda env: EnvironmentalMonitor(window=6, recent=2),
        lambda env: [("air", air(10 * i, 12.0 + i % 2 + (60 if i > 7 else 0))) for i in range(10)],
        3,
    ),
    "AlertSystem": (
        lambda env: AlertSystem(escalate_after=2),
        lambda env: (
            [("alerts", alert(t)) for t in range(3)]
            + [("alerts", alert(5, "incident_cleared", "info"))]
        ),
        3,
    ),
    "CityCoordinator": (
        lambda env: CityCoordinator(period_s=2.0),
        lambda env: [("state", estimate(t, junction=j)) for t in range(4) for j in ("A1", "C1")],
        3,
    ),
}


# -- IoTDeviceManager ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("port", "bad", "reason"),
    [
        ("readings", {"vehicles": np.array([0, -1, 0, 0])}, "negative"),
        ("readings", {"halting": np.array([0, 0, 500, 0])}, "out-of-bounds"),
        ("readings", {"downstream": np.array([0, np.nan, 0, 0], np.float32)}, "nan"),
        ("air", {"pm25": float("nan")}, "nan"),
        ("air", {"no2": -2.0}, "negative"),
        ("air", {"pm25": 5000.0}, "out-of-bounds"),
    ],
)
def test_devices_reject_garbage_with_a_counted_reason_and_one_alert(port, bad, reason):
    # prepare
    devices = IoTDeviceManager()
    good = reading(1) if port == "readings" else air(1, 12.0)
    garbage = [good.derive({**good.payload, **bad}) for _ in range(3)]

    # execute
    out = [o for m in garbage for o in devices.process(port, m)]
    passed = list(devices.process(port, good))

    # assert: nothing garbage reaches decisions; one alert; every rejection counted
    assert [p for p, _ in out] == ["alerts"]
    assert out[0][1].payload["kind"] == "device_garbage"
    assert reason in out[0][1].payload["detail"]
    assert devices.rejected == {reason: 3}
    assert passed == [(port, good)]


def test_a_silent_device_raises_one_alert_until_it_reports_again():
    # prepare
    devices = IoTDeviceManager(silence_s=30.0)
    list(devices.process("air", air(0, 12.0)))

    # execute
    early = list(devices.on_tick(20 * 10**9))
    late = list(devices.on_tick(35 * 10**9)) + list(devices.on_tick(40 * 10**9))
    list(devices.process("air", air(41, 12.0)))
    again = list(devices.on_tick(80 * 10**9))

    # assert
    assert early == []
    assert [m.payload["kind"] for _, m in late] == ["device_silent"]
    assert late[0][1].payload["detail"] == "B1/air: no heartbeat"
    assert len(again) == 1


# -- QueueFlowEstimator ------------------------------------------------------------------------
def test_estimator_learns_arrivals_and_saturation_from_a_discharging_queue():
    # prepare: lane 1 (green in phase 0) discharges one vehicle a second from a queue,
    # while one new vehicle a second arrives
    est = QueueFlowEstimator(arrival_tau_s=10.0, sat_tau_s=10.0)
    msgs = [
        reading(t, vehicles=(0, 5, 0, 0), halting=(0, 4, 0, 0), passed=(0, 1, 0, 0))
        for t in range(1, 60)
    ]

    # execute
    states = [m for r in msgs for p, m in est.process("readings", r) if p == "state"]

    # assert
    last = states[-1].payload
    assert last["arrival_vps"][1] == pytest.approx(1.0, abs=0.05)
    assert last["sat_vps"][1] == pytest.approx(1.0, abs=0.05)
    assert last["arrival_vps"][0] == 0.0 and last["queue"].tolist() == [0, 4, 0, 0]


# -- policies and the controller --------------------------------------------------------------
def test_max_pressure_holds_min_green_then_gaps_out_to_waiting_traffic():
    # prepare: phase 0 serves lanes 1, 2 (empty); phase 1 has 3 vehicles waiting
    policy = MaxPressure(min_green_s=5.0)
    state = {"vehicles": (3, 0, 0, 0), "halting": (3, 0, 0, 0)}

    # execute
    young = policy.decide(view_of(estimate(1, phase_s=2.0, **state).payload), {})
    old = policy.decide(view_of(estimate(1, phase_s=6.0, **state).payload), {})

    # assert
    assert (young, old) == (0, 1)


def test_max_pressure_keeps_a_busy_green_until_another_phase_is_clearly_heavier():
    # prepare
    policy = MaxPressure(switch_margin=3.0)
    close = estimate(1, vehicles=(2, 2, 0, 1), halting=(1, 0, 0, 1), phase_s=20.0).payload
    heavy = estimate(1, vehicles=(8, 2, 0, 3), halting=(6, 0, 0, 3), phase_s=20.0).payload

    # execute / assert
    assert policy.decide(view_of(close), {}) == 0
    assert policy.decide(view_of(heavy), {}) == 1


def test_max_pressure_serves_a_starved_phase():
    # prepare: phase 1 last served at t=0 and has one halting vehicle; phase 0 is busy
    policy = MaxPressure(max_red_s=90.0)
    memory = {"served": {1: 0.0}}
    p = estimate(100, vehicles=(1, 9, 9, 0), halting=(1, 5, 5, 0), phase_s=60.0).payload

    # execute / assert
    assert policy.decide(view_of(p), memory) == 1


def test_webster_splits_green_by_flow_ratio_and_follows_the_hub_plan():
    # prepare: phase 1's lanes see twice the arrivals of phase 0's
    p = estimate(0).payload
    p = {**p, "arrival_vps": np.array([0.2, 0.1, 0.1, 0.2])}

    # execute
    cycle, greens = Webster().cycle(view_of(p))
    planned, _ = Webster().cycle(view_of(p, plan=(90.0, 14.0)))

    # assert
    assert greens[1] == pytest.approx(2 * greens[0])
    assert cycle == pytest.approx(sum(greens) + 2 * Webster().change_s)
    assert planned == 90.0


def test_controller_commands_the_policy_choice_and_hands_fixed_time_to_sumo():
    # prepare
    fixed = TrafficSignalController(policy="fixed")
    adaptive = TrafficSignalController(policy="max-pressure")
    state = estimate(1, vehicles=(4, 0, 0, 0), halting=(4, 0, 0, 0))

    # execute
    f = dict(fixed.process("state", state))
    a = dict(adaptive.process("state", state))

    # assert
    assert (f["commands"].payload["mode"], f["commands"].payload["phase"]) == ("fixed", FIXED)
    assert (a["commands"].payload["mode"], a["commands"].payload["phase"]) == ("adaptive", 1)
    assert a["decisions"].payload["policy"] == "max-pressure"
    assert a["decisions"].payload["queue"] == 4


def test_controller_repeats_an_unchanged_command_only_as_a_heartbeat():
    # prepare: the same queue every second; the decision (phase 1) never changes
    control = TrafficSignalController(policy="max-pressure", heartbeat_s=4.0)
    states = [estimate(t, vehicles=(4, 0, 0, 0), halting=(4, 0, 0, 0)) for t in range(1, 11)]

    # execute
    sent = [
        m.payload["t_s"] for s in states for p, m in control.process("state", s) if p == "decisions"
    ]

    # assert
    assert sent == [1.0, 5.0, 9.0]


def test_clearance_plan_stops_spending_green_on_the_blocked_lane():
    # prepare: lane 0 (phase 1) is blocked by a stopped vehicle and shows a long queue
    control = TrafficSignalController(policy="max-pressure")
    clear = Message("safety", 0, 0, {"intersection": "B1", "lane": 0, "active": True})
    state = estimate(1, vehicles=(9, 1, 0, 0), halting=(9, 0, 0, 0))

    # execute
    list(control.process("clearance", clear))
    command = dict(control.process("state", state))["commands"].payload

    # assert
    assert (command["mode"], command["phase"]) == ("clearance", 0)


def test_an_unknown_policy_is_refused_with_the_known_ones():
    with pytest.raises(Exception, match=r"policy='smart'; use one of \['fixed', 'webster'"):
        TrafficSignalController(policy="smart")


# -- AlertSystem, EnvironmentalMonitor, PublicSafety, CityCoordinator -------------------------
def test_alert_desk_deduplicates_escalates_and_closes():
    # prepare
    desk = AlertSystem(dedup_s=600.0, escalate_after=3)
    feed = [alert(t) for t in range(5)] + [alert(6, "incident", "critical")]
    feed += [alert(7, "incident_cleared", "info"), alert(8, "incident", "critical")]

    # execute
    records = [m.payload for a in feed for _, m in desk.process("alerts", a)]

    # assert
    assert [(r["kind"], r["severity"], r["count"]) for r in records] == [
        ("device_garbage", "warning", 1),
        ("device_garbage", "high", 3),
        ("incident", "critical", 1),
        ("incident_cleared", "info", 1),
        ("incident", "critical", 1),  # a new incident after the last one closed
    ]


def test_environment_monitor_flags_an_episode_but_not_a_day_of_rush_hours():
    # prepare: a day of diurnal air with noise (10 s readings), an episode from 12:00 to 12:10

    rng = np.random.default_rng(0)
    episode = Episode("B1", 5 * 3600.0, 600.0)
    noise, feed = (0.0, 0.0), []
    for i in range(8640):
        t = 10.0 * i
        noise = tuple(0.8 * n + e for n, e in zip(noise, rng.normal(0, (1.0, 2.5)), strict=True))
        pm25, no2 = air_reading(
            7 * 3600.0 + t, 20.0, noise, episode if episode.active("B1", t) else None
        )
        feed.append(air(t, pm25, no2))
    monitor = EnvironmentalMonitor()

    # execute
    alerts = [m.payload for a in feed for p, m in monitor.process("air", a) if p == "alerts"]

    # assert
    assert episode.start_s <= alerts[0]["t_s"] <= episode.start_s + 60.0
    assert [a["kind"] for a in alerts] == ["pollution_episode", "pollution_cleared"]


def test_public_safety_ignores_red_lights_and_spillback():
    # prepare: lane 1 halting and not moving, but on red / with its exits full
    red = [estimate(t, halting=(0, 6, 0, 0), phase=1) for t in range(0, 120, 5)]
    spill = [estimate(t, halting=(0, 6, 0, 0), downstream=(0, 20, 0, 0)) for t in range(0, 120, 5)]

    # execute
    out = [o for m in red for o in PublicSafety().process("state", m)]
    out += [o for m in spill for o in PublicSafety().process("state", m)]

    # assert
    assert out == []


def test_public_safety_raises_an_incident_and_clears_it_when_the_lane_moves():
    # prepare
    safety = PublicSafety(stall_s=30.0)
    stuck = [estimate(t, halting=(0, 6, 0, 0)) for t in range(0, 45, 5)]
    moving = estimate(45, halting=(0, 5, 0, 0), passed=(0, 1, 0, 0))

    # execute
    out = [(p, m.payload) for s in [*stuck, moving] for p, m in safety.process("state", s)]

    # assert
    assert [(p, m.get("kind", m.get("active"))) for p, m in out] == [
        ("alerts", "incident"),
        ("clearance", True),
        ("alerts", "incident_cleared"),
        ("clearance", False),
    ]
    assert out[0][1]["t_s"] == 30.0 and out[1][1]["lane"] == 1


def test_coordinator_sends_a_common_cycle_with_offsets_growing_eastwards():
    # prepare
    coord = CityCoordinator(period_s=60.0, link_s=14.0)
    feed = [estimate(0, junction=j) for j in ("A1", "B1", "C1")]

    # execute
    plans = [m.payload for s in feed for _, m in coord.process("state", s)]

    # assert
    assert len({p["cycle_s"] for p in plans}) == 1
    assert [p["offset_s"] for p in plans] == [0.0, 14.0, 28.0]
    assert list(coord.process("state", estimate(30, junction="A1"))) == []  # not due yet


# -- RoadsideUnit ------------------------------------------------------------------------------
def test_a_roadside_unit_decides_for_each_of_its_junctions_and_commands_them_at_once():
    # prepare: B1 has a queue on lane 0 (phase 1 serves it), B2 none; B3's reading is garbage
    unit = RoadsideUnit(controller=TrafficSignalController(policy="max-pressure"))
    step = unit_message(
        1,
        reading(1, junction="B1", vehicles=(4, 0, 0, 0), halting=(4, 0, 0, 0)),
        reading(1, junction="B2"),
        reading(1, junction="B3", halting=(0, -2, 0, 0)),
    )

    # execute
    out = list(unit.process("readings", step))

    # assert: one columnar command for the two sane junctions, a dashboard row each, and
    # the garbage reading rejected with its reason and an alert, never decided on
    commands = [m.payload for p, m in out if p == "commands"]
    assert len(commands) == 1
    assert commands[0]["intersection"].tolist() == ["B1", "B2"]
    assert commands[0]["phase"].tolist()[0] == 1
    assert commands[0]["mode"].tolist() == ["adaptive", "adaptive"]
    assert [m.payload["intersection"] for p, m in out if p == "decisions"] == ["B1", "B2"]
    assert [(m.payload["kind"], m.payload["intersection"]) for p, m in out if p == "alerts"] == [
        ("device_garbage", "B3")
    ]
    assert unit.devices.rejected == {"negative": 1}


def test_a_roadside_unit_raises_pollution_alerts_from_its_air_sensors():
    # prepare: a steady baseline at B1, then an episode
    unit = RoadsideUnit(environment=EnvironmentalMonitor(window=20, recent=2))
    quiet = [unit_message(10 * i, air(10 * i, 12.0 + i % 3)) for i in range(20)]
    smoky = [unit_message(10 * i, air(10 * i, 90.0)) for i in range(20, 23)]

    # execute
    for m in quiet:
        assert list(unit.process("air", m)) == []
    out = [m.payload for s in smoky for p, m in unit.process("air", s) if p == "alerts"]

    # assert
    assert [(a["kind"], a["intersection"]) for a in out] == [("pollution_episode", "B1")]


def test_a_roadside_unit_refuses_a_message_without_its_junctions():
    unit = RoadsideUnit()
    with pytest.raises(CityError, match=r"'readings' message without a 'junctions' mapping"):
        list(unit.process("readings", reading(1)))
