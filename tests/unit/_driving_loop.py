"""Closed-loop driving harness for the safety / decision tests (no Ray).

``drive(name, seed)`` runs DrivingSimulator → SafetyMonitor → DecisionMaker → Controller
→ back into the simulator's ``control`` input with ``pipelines.testing.run_local`` on event
time, and returns what the test needs. The operators never read ``truth``; this harness
does (to judge them): collisions, the gap to the lead, the ego's speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from operators import Message, Operator
from operators.controller import Controller
from operators.decision import DecisionMaker
from operators.driving import DrivingSimulator, PinholeCamera
from operators.emergency import EmergencyHandler
from operators.safety import SafetyMonitor
from pipelines.testing import ListSink, ListSource, Pipeline, run_local

#: A tiny camera at 1 Hz: nothing here looks at images, and rendering is the slow part.
FAST = {"camera": PinholeCamera(width=64, height=36, focal=48.0), "camera_hz": 1.0}


@dataclass
class Drive:
    """What one closed-loop drive did (from the sinks; truth read here, never by operators)."""

    name: str
    seed: int
    decisions: list[Message]
    controls: list[Message]
    safety: list[Message]
    ego: list[Message]
    broadcasts: list[Message]

    @property
    def aeb(self) -> list[Message]:
        return [m for m in self.decisions if m.payload["aeb"]]

    @property
    def ttc_at_braking(self) -> float:
        return self.aeb[0].payload["ttc_s"] if self.aeb else math.nan

    @property
    def collided(self) -> bool:
        return any(m.truth["collision"] for m in self.ego)

    @property
    def min_gap(self) -> float:
        return min(m.truth["gap"] for m in self.ego)

    def speeds(self) -> list[float]:
        return [m.truth["speed"] for m in self.ego]


def drive(
    name: str,
    seed: int = 0,
    *,
    held_out: bool = False,
    extra: Callable[[Pipeline], None] | None = None,
    lidar_gate: Operator | None = None,
    v2v: list[Message] | None = None,
) -> Drive:
    """One scenario in closed loop; ``extra(p)`` may add operators (e.g. synthetic lanes)."""
    p = Pipeline(f"loop-{name}-{seed}", time="event")
    p.source("sim", DrivingSimulator(name, seed=seed, held_out=held_out, poll_hz=30.0, **FAST),
             rate_hz=30)  # fmt: skip
    p.operator("safety", SafetyMonitor())
    p.operator("decide", DecisionMaker())
    p.operator("control", Controller())
    p.operator("v2v", EmergencyHandler(vehicle="ego"))
    if lidar_gate is None:
        p.connect("sim.lidar", "safety.lidar")
    else:
        p.operator("gate", lidar_gate)
        p.connect("sim.lidar", "gate")
        p.connect("gate", "safety.lidar")
    p.connect("sim.ego", "safety.ego")
    p.connect("sim.ego", "decide.ego")
    p.connect("safety.safety", "decide.safety")
    p.connect("safety.emergency", "decide.emergency")
    p.connect("safety.emergency", "v2v.emergency")
    p.connect("sim.ego", "v2v.ego")
    p.connect("v2v.advisory", "decide.advisory")
    p.connect("decide.decision", "control.decision")
    p.connect("control.control", "sim.control", feedback=True)
    if v2v is not None:
        p.source("topic", ListSource(v2v), rate_hz=1)
        p.connect("topic", "v2v.v2v")
    for sink, port in (("decisions", "decide.decision"), ("controls", "control.control"),
                       ("safety_out", "safety.safety"), ("ego_out", "sim.ego"),
                       ("broadcasts", "v2v.broadcast")):  # fmt: skip
        p.sink(sink, ListSink())
        p.connect(port, sink)
    if extra is not None:
        extra(p)
    run = run_local(p)
    assert not run.dead_letters, run.dead_letters[:3]
    return Drive(name, seed, run.sink("decisions"), run.sink("controls"),
                 run.sink("safety_out"), run.sink("ego_out"), run.sink("broadcasts"))  # fmt: skip
