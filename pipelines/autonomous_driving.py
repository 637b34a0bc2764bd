"""The ``autonomous-driving`` pipeline: a simulated vehicle's safety-to-control loop.

A ``DrivingSimulator`` (scripted scenario, ground truth attached to every message)
feeds lidar and GPS-IMU into ``SafetyMonitor`` (obstacles in the ego path, time to
collision, stale sensors) → ``DecisionMaker`` (cruise / follow / emergency braking)
→ ``Controller`` (rate-limited throttle / brake, reason attached), whose commands go
back into the simulator's ``control`` input over a **feedback** edge (latest-only,
window 1: the newest command wins, older queued ones are dropped and counted).
``EmergencyHandler`` publishes this vehicle's emergencies to the fleet topic
``v2v/emergency`` and subscribes to it, turning other vehicles' emergencies into
speed advisories for ``DecisionMaker``. All of that runs on the vehicle
(``edge.role=vehicle``). The commands (with their reason, e.g. ``AEB: ttc 1.20 s``),
the safety events, the emergencies and the ego stream (with the simulator's ground
truth: gap to the lead, collision) are recorded as Arrow IPC on the hub
(``edge.role=hub``, falling back to the vehicle), one recorder per stream under
``<out_dir>/<sink>`` (``commands``, ``safety_events``, ``emergencies``, ``ego_log``);
``operators.recording.read_recording`` reads them back.

Not wired yet: perception. No fusion, object detector, lane detector or sign
recogniser sits on the camera; its frames are recorded on the hub at
``camera_record_hz`` (rate-limited on the edge; the rest is dropped and counted as
``rate-limit``) under ``<out_dir>/camera_log``, for replaying into perception later.
Without lane detection the simulator keeps the ego in its lane by itself (no
``steer`` command is sent).

Time: the pipeline runs on the simulator's event time (``Pipeline(time="event")``):
``SafetyMonitor``'s stale-sensor ticks, the lidar edge's deadline and the decision
freshness all follow simulated time, so the same drive gives the same decisions
whether it runs in real time (``realtime=True``: the simulator is polled at
``poll_hz``, simulated time advancing with the wall clock) or as fast as possible
(``realtime=False``: the polls are paced only by back-pressure; sensor edges then
``block`` so the simulator can never run ahead of the control loop by more than a
few messages, where in real time they keep only the newest message, so a slow
consumer never stalls the sensors).

>>> p = build(out_dir="out/driving")
>>> p.validate()
>>> [(s.name, dict(s.placement.selector)["edge.role"]) for s in p.specs.values()]
... # doctest: +NORMALIZE_WHITESPACE
[('sim', 'vehicle'), ('safety', 'vehicle'), ('decide', 'vehicle'), ('control', 'vehicle'),
 ('v2v', 'vehicle'), ('commands', 'hub'), ('safety_events', 'hub'), ('emergencies', 'hub'),
 ('ego_log', 'hub'), ('camera_log', 'hub')]
>>> [e.name for e in p.edges if e.feedback]
['control.control->sim.control']

Run it with ``python pipelines/autonomous_driving.py`` (``RAY_ADDRESS``, a fleet that
``edgeray up`` started, or an embedded local fleet), ``edgeray run
pipelines/autonomous_driving.py``, or as a Ray job: ``edgeray submit
pipelines/autonomous_driving.py`` (or ``ray job submit -- python
pipelines/autonomous_driving.py``). Two vehicles react to each other when their
pipelines (built with different ``vehicle=`` names) run in the same Ray namespace
(``Runtime(p, namespace=...)``), which is where the topic's broker actor lives.
"""

from __future__ import annotations

import os

from operators import Operator, Resources
from operators.controller import Controller
from operators.decision import DecisionMaker
from operators.driving import DrivingSimulator, PinholeCamera
from operators.emergency import EmergencyHandler
from operators.recording import Recorder
from operators.safety import SafetyMonitor
from pipelines._graph import Pipeline

#: The fleet topic every vehicle publishes its emergencies to and subscribes to.
V2V_TOPIC = "v2v/emergency"
VEHICLE = {"edge.role": "vehicle"}
HUB = {"edge.role": "hub"}
#: The hub's recorders: sink name -> the output port it records (the recorder's input port is
#: named after it, so ``Replay`` plays it back on that port). One sink per stream: a sink
#: de-duplicates by ``(source, seq, part)``, which a derived message shares with its input
#: (a command with the ego sample that started its decision), so one sink fed several
#: derived streams would keep only the first of each family.
RECORDED = {
    "commands": "control.control",
    "safety_events": "safety.safety",
    "emergencies": "safety.emergency",
    "ego_log": "sim.ego",
}
#: CPUs per replica: the decision, control and V2V kernels and the recorders are light, so
#: the vehicle's five operators and the hub's five recorders each fit in one CPU
#: (the local fleet's nodes have one).
LIGHT = Resources(num_cpus=0.1)


def build(
    scenario: str = "lead_emergency_brake",
    *,
    seed: int = 0,
    out_dir: str | os.PathLike[str] = "out/driving",
    vehicle: str = "vehicle",
    realtime: bool = True,
    camera_hz: float = 30.0,
    poll_hz: float = 30.0,
    camera: PinholeCamera | None = None,
    camera_record_hz: float = 1.0,
    lidar_deadline_ms: float = 150.0,
) -> Pipeline:
    """The driving pipeline for one vehicle over a scripted ``scenario``.

    ``seed``: the scenario's variant and sensor noise. ``out_dir``: where the hub
    records (one directory per recorder under it). ``vehicle``: this vehicle's id in
    V2V broadcasts (and in the pipeline's name, ``driving-<vehicle>``). ``realtime``:
    poll the simulator at ``poll_hz`` (simulated seconds per poll) in real time, else
    as fast as the loop allows. ``camera_hz`` / ``camera``: the camera's rate and
    model (rendering is the simulator's slowest part; nothing but the camera
    recorder looks at images yet). ``camera_record_hz``: frames recorded per
    simulated second. ``lidar_deadline_ms``: a lidar scan older than this (simulated
    time, against the newest message the safety monitor has seen) is dropped and
    counted as ``deadline``, never acted on.
    """
    sensors = "latest-only" if realtime else "block"  # newest wins / lossless, paced by the loop
    records = "drop-oldest" if realtime else "block"  # the vehicle never waits for the hub
    out = os.fspath(out_dir)
    p = Pipeline(f"driving-{vehicle}", time="event")
    p.source(
        "sim",
        DrivingSimulator(scenario, seed=seed, poll_hz=poll_hz, camera_hz=camera_hz, camera=camera),
        rate_hz=poll_hz if realtime else None,
        placement=VEHICLE,
    )
    p.operator("safety", SafetyMonitor(), placement=VEHICLE)
    p.operator("decide", _light(DecisionMaker()), placement=VEHICLE)
    p.operator("control", _light(Controller()), placement=VEHICLE)
    p.operator("v2v", _light(EmergencyHandler(vehicle=vehicle)), placement=VEHICLE)
    for name, src in {**RECORDED, "camera_log": "sim.camera"}.items():
        recorder = _light(Recorder(os.path.join(out, name), ports=(src.split(".")[1],)))
        p.sink(name, recorder, placement=HUB, fallbacks=[VEHICLE])

    # sensors into the safety monitor and the decision maker
    p.connect("sim.lidar", "safety.lidar", policy=sensors, window=2,
              deadline_ms=lidar_deadline_ms)  # fmt: skip
    p.connect("sim.ego", "safety.ego", policy=sensors, window=4)
    p.connect("sim.ego", "decide.ego", policy=sensors, window=2)  # each ego starts a decision
    p.connect("sim.ego", "v2v.ego", policy="latest-only", window=1)  # position only
    # safety → decision → control → back into the simulator
    p.connect("safety.safety", "decide.safety", window=4)
    p.connect("safety.emergency", "decide.emergency", window=4)
    p.connect("decide.decision", "control.decision", window=2)
    p.connect("control.control", "sim.control", policy="latest-only", window=1, feedback=True)
    # V2V: our emergencies out, the fleet's in (our own echo is ignored by the handler)
    p.connect("safety.emergency", "v2v.emergency", window=4)
    p.connect("v2v.advisory", "decide.advisory", window=4)
    p.publish("v2v.broadcast", V2V_TOPIC)
    p.subscribe(V2V_TOPIC, "v2v.v2v")
    # recording on the hub
    for name, src in RECORDED.items():
        p.connect(src, f"{name}.{src.split('.')[1]}", policy=records,
                  window=32 if realtime else 8)  # fmt: skip
    p.connect("sim.camera", "camera_log.camera", policy="drop-oldest", window=2,
              rate_hz=camera_record_hz)  # fmt: skip
    return p


def _light(op: Operator) -> Operator:
    """``op`` declaring ``LIGHT`` resources (an instance may override its class's)."""
    op.resources = LIGHT
    return op


if __name__ == "__main__":  # `python pipelines/autonomous_driving.py`, also a Ray job's entrypoint
    from pipelines import launch

    launch(build)
