"""The smart-city operators without SUMO or Ray: checks, estimates, policies, alerts.

``CITY_EXAMPLES`` is how the conformance suite (``test_conformance.py``) builds and feeds
each city operator; the tests below check what each one decides.
"""

from __future__ import annotations

import numpy as np

from operators import Message
from operators.city import (
    AlertSystem,
    CityCoordinator,
    EnvironmentalMonitor,
    IoTDeviceManager,
    PublicSafety,
    QueueFlowEstimator,
    Scenario,
    SumoCity,
    TrafficSignalController,
    generate,
)

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
