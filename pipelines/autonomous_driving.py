"""The ``autonomous-driving`` pipeline: a simulated vehicle's perception-to-control loop.

A ``DrivingSimulator`` (scripted scenario, ground truth attached to every message)
feeds its camera, lidar and GPS-IMU streams into the vehicle's operators
(``edge.role=vehicle``), chained into two replicas (``operators.vehicle``: between
operators on the same small computer a Ray hop costs CPU for nothing):

* ``perception`` (``VehiclePerception``) on the camera: ``LaneDetector`` (lane geometry:
  offset, heading, curvature, confidence) and ``ObjectDetector`` (the project's own
  detector for the simulator's world; on a vehicle with ``edge.accel=gpu`` where there
  is one), whose boxes ``SensorFusion`` joins with the lidar scan of the same instant
  (bounded skew) to give every object a distance, and whose sign boxes
  ``SignRecognizer`` classifies (the project's GTSRB classifier, voting over each
  sign's track) for the decisions; its camera edge keeps only the newest frame;
* ``control`` (``VehicleControl``), on every ego sample: ``SafetyMonitor`` (lidar
  obstacles in the ego path, time to collision, stale sensors) → ``DecisionMaker``
  (cruise / follow / emergency braking, lane keeping on the lane geometry, stop and
  speed-limit signs) → ``Controller`` (rate-limited throttle / brake / steer, reason
  attached), whose commands go back into the simulator's ``control`` input over a
  **feedback** edge (latest-only, window 1: the newest command wins, older queued ones
  are dropped and counted); it never waits behind a frame's perception;
* ``v2v`` (``EmergencyHandler``) publishes this vehicle's emergencies to the fleet topic
  ``v2v/emergency`` and subscribes to it, turning other vehicles' emergencies into
  speed advisories for ``DecisionMaker``.

The hub (``edge.role=hub``, falling back to the vehicle) records the commands (with
their reason, e.g. ``AEB: ttc 1.20 s``), the safety events, the emergencies, the ego
stream (with the simulator's ground truth: gap to the lead, collision), the fused
objects, the lanes and the signs as Arrow IPC, one recorder per stream under
``<out_dir>/<sink>`` (``operators.recording.read_recording`` reads them back), raw
camera frames at ``camera_record_hz`` under ``<out_dir>/camera_log``, and draws
boxes, distances, lanes, signs and the command on the camera frames (``Annotator``) into
MP4 clips and a PNG strip under ``<out_dir>/video``. In real time the hub takes the
high-rate streams at ``record_hz`` and the video at ``video_hz``: each message to the hub
costs the vehicle's CPU a push.

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
>>> sorted(s.name for s in p.specs.values() if s.placement.selector == VEHICLE)
['control', 'sim', 'v2v']
>>> p.specs["perception"].placement.selector  # the detector prefers an accelerator
{'edge.role': 'vehicle', 'edge.accel': 'gpu'}
>>> [e.name for e in p.edges if e.feedback]
['control.control->sim.control', 'v2v.advisory->control.advisory']

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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from operators import Operator, Source
from operators.annotate import AnnotatedVideo, Annotator
from operators.calibration import Calibration
from operators.detection import SIM_DETECTOR_HW, ObjectDetector, input_for
from operators.driving import CLASSES, DrivingSimulator, PinholeCamera
from operators.emergency import EmergencyHandler
from operators.fusion import SensorFusion
from operators.lanes import LaneDetector
from operators.recording import Recorder
from operators.signs import SignRecognizer
from operators.vehicle import VehicleControl, VehiclePerception
from pipelines._graph import Pipeline

#: The fleet topic every vehicle publishes its emergencies to and subscribes to.
V2V_TOPIC = "v2v/emergency"
VEHICLE = {"edge.role": "vehicle"}
#: Perception (the detector) prefers a vehicle with an accelerator (``accel = "gpu"`` in the
#: fleet spec; ONNX Runtime then picks CUDA), else runs on the vehicle's CPU.
ACCELERATOR = {"edge.accel": "gpu"}
HUB = {"edge.role": "hub"}
#: ``ObjectDetector`` parameters of the project's own detector (``detection.SIM_DETECTOR_HW``:
#: its input sides are free, and the pipeline runs it at the camera's aspect ratio,
#: ``detection.input_for``: 256x416 for 640x360, ~40 % less compute than 416x416).
SIM_DETECTOR_OPTIONS: Mapping[str, Any] = {"num_classes": 3, "classes": None}
#: What the detector passes on for ``SignRecognizer``: the frame and its camera matrix (sign
#: distances from box heights).
SIGNS_FROM_DETECTOR: Mapping[str, Any] = {"keep_image": True, "carry": ("frame", "K")}
#: The hub's recorders: sink name -> the output port it records (the recorder's input port is
#: named after it, so ``Replay`` plays it back on that port). One sink per stream: a sink
#: de-duplicates by ``(source, seq, part)``, which a derived message shares with its input
#: (a command with the ego sample that started its decision), so one sink fed several
#: derived streams would keep only the first of each family.
RECORDED = {
    "commands": "control.control",
    "safety_events": "control.safety",
    "emergencies": "control.emergency",
    "ego_log": "sim.ego",
}
#: Recorded when perception runs.
PERCEPTION_RECORDED = {
    "objects": "perception.objects", "lane_log": "perception.lanes",
    "sign_log": "perception.signs",
}  # fmt: skip
#: Streams recorded in full even in real time: what an incident review needs (every
#: command with its reason, the first emergency brake included; safety events are rare).
IN_FULL = ("commands", "safety_events", "emergencies")
#: How often the V2V handler needs the ego's position (it only measures distances to
#: other vehicles' emergencies, within hundreds of metres).
POSITION_HZ = 5.0
#: CPUs per replica. Ray's CPU counts are bookkeeping (DESIGN.md), but they must fit: the
#: local fleet's vehicle has one CPU for everything it runs, the hub one for its sinks.
SHARES = {
    "sim": 0.2, "control": 0.1, "v2v": 0.05, "perception": 0.4,
    "annotate": 0.1, "video": 0.1, "recorder": 0.05,
}  # fmt: skip
#: Niceness added to the hub's recorders and video (on a real fleet the hub is another
#: machine; where it shares the vehicle's cores, its logging gives way to the control loop).
#: ``VehiclePerception`` declares its own (4).
NICENESS = {"annotate": 10, "video": 10, "recorder": 10}


def build(
    scenario: str = "lead_emergency_brake",
    *,
    seed: int = 0,
    held_out: bool = False,
    out_dir: str | os.PathLike[str] = "out/driving",
    vehicle: str = "vehicle",
    node: str | None = None,
    realtime: bool = True,
    camera_hz: float = 30.0,
    poll_hz: float = 30.0,
    camera: PinholeCamera | None = None,
    camera_record_hz: float = 1.0,
    record_hz: float | None = 10.0,
    lidar_deadline_ms: float = 150.0,
    perception: bool = True,
    detector: str | os.PathLike[str] | None = None,
    detector_options: Mapping[str, Any] | None = None,
    video_hz: float = 10.0,
    sensors: Source | None = None,
) -> Pipeline:
    """The driving pipeline for one vehicle over a scripted ``scenario``.

    ``seed`` / ``held_out``: the scenario's variant (held-out variants are for evaluation)
    and the sensor noise. ``out_dir``: where the hub records (one directory per recorder
    under it, the annotated video under ``video``). ``vehicle``: this vehicle's id in V2V
    broadcasts (and in the pipeline's name, ``driving-<vehicle>``); ``node``: the fleet
    node (``edge.node``) this vehicle's operators run on, when there are several vehicles
    (default: any ``edge.role=vehicle`` node). ``realtime``: poll the
    simulator at ``poll_hz`` (simulated seconds per poll) in real time, else as fast as the
    loop allows. ``camera_hz`` / ``camera``: the camera's rate and model.
    ``camera_record_hz``: raw frames recorded per simulated second. ``record_hz``: in real
    time, the most messages per second recorded of the ego and perception streams (the
    rest dropped as ``rate-limit``, counted; commands, safety events and emergencies are
    always recorded in full; ``None``: everything), so recording never takes the vehicle's
    CPU from its control loop; as fast as possible, everything is recorded.
    ``lidar_deadline_ms``: a lidar scan older than this (simulated time, against the newest
    message the safety monitor has seen) is dropped and counted as ``deadline``, never
    acted on.

    ``perception``: run lane detection (whose lane geometry steers the vehicle),
    object detection and lidar fusion on the camera, and the annotated video
    (``video_hz`` frames per simulated second); without it the simulator keeps the lane
    by itself. ``detector``: the detector's model (a path or a registry reference,
    default ``SIM_DETECTOR_HW``) and ``detector_options`` its ``ObjectDetector`` parameters
    (default ``SIM_DETECTOR_OPTIONS`` at ``input_for`` the camera's frame size).

    ``sensors``: a source to drive the vehicle's operators with instead of the simulator,
    named ``sensors``, with the simulator's ``camera`` / ``lidar`` / ``ego`` ports, e.g. a
    ``Replay`` of a drive recorded on those ports (the vehicle's compute without the
    simulator's rendering). Its ``rate_hz`` is ``poll_hz`` in real time. Open loop: a
    source without a ``control`` input gets no commands back (they are still recorded).
    ``camera`` is then only the camera model the frames were taken with.
    """
    vehicle_on = VEHICLE if node is None else {**VEHICLE, "edge.node": node}
    policy = "latest-only" if realtime else "block"  # newest wins / lossless, paced by the loop
    records = "drop-oldest" if realtime else "block"  # the vehicle never waits for the hub
    record_rate = record_hz if realtime else None
    out = os.fspath(out_dir)
    camera = camera or PinholeCamera()
    p = Pipeline(f"driving-{vehicle}", time="event")
    if sensors is None:
        sensors = DrivingSimulator(scenario, seed=seed, held_out=held_out, poll_hz=poll_hz,
                                   camera_hz=camera_hz, camera=camera)  # fmt: skip
    src = "sim" if isinstance(sensors, DrivingSimulator) else "sensors"
    p.source(src, _share(sensors, "sim"), rate_hz=poll_hz if realtime else None,
             placement=vehicle_on)  # fmt: skip
    p.operator("control", _share(VehicleControl(), "control"), placement=vehicle_on)
    p.operator("v2v", _share(EmergencyHandler(vehicle=vehicle), "v2v"), placement=vehicle_on)
    recorded = {**RECORDED, "ego_log": f"{src}.ego",
                **(PERCEPTION_RECORDED if perception else {})}  # fmt: skip
    for name, out_port in {**recorded, "camera_log": f"{src}.camera"}.items():
        port = out_port.split(".")[1]
        recorder = _share(Recorder(os.path.join(out, name), ports=(port,)), "recorder")
        p.sink(name, recorder, placement=HUB, fallbacks=[vehicle_on])

    # sensors into the control loop (safety monitor, decision maker, controller in one replica)
    p.connect(f"{src}.lidar", "control.lidar", policy=policy, window=2,
              deadline_ms=lidar_deadline_ms)  # fmt: skip
    p.connect(f"{src}.ego", "control.ego", policy=policy, window=2)  # each ego starts a decision
    if "control" in sensors.ports("inputs"):  # closed loop: commands drive the simulator
        p.connect("control.control", f"{src}.control", policy="latest-only", window=1,
                  feedback=True)  # fmt: skip
    # V2V: our emergencies out, the fleet's advisories back into the control loop (a back
    # edge: control -> v2v -> control; our own echo is ignored by the handler)
    p.connect(f"{src}.ego", "v2v.ego", policy="latest-only", window=1, rate_hz=POSITION_HZ)
    p.connect("control.emergency", "v2v.emergency", window=4)
    p.connect("v2v.advisory", "control.advisory", window=4, feedback=True)
    p.publish("v2v.broadcast", V2V_TOPIC)
    p.subscribe(V2V_TOPIC, "v2v.v2v")
    if perception:
        _perception(p, src, vehicle_on, camera, policy, records, out, detector,
                    detector_options, video_hz)  # fmt: skip
    # recording on the hub
    for name, out_port in recorded.items():
        p.connect(out_port, f"{name}.{out_port.split('.')[1]}", policy=records,
                  window=32 if realtime else 8,
                  rate_hz=None if name in IN_FULL else record_rate)  # fmt: skip
    p.connect(f"{src}.camera", "camera_log.camera", policy="drop-oldest", window=2,
              rate_hz=camera_record_hz)  # fmt: skip
    return p


def _perception(
    p: Pipeline,
    src: str,
    vehicle_on: Mapping[str, str],
    camera: PinholeCamera,
    policy: str,
    records: str,
    out: str,
    detector: str | os.PathLike[str] | None,
    detector_options: Mapping[str, Any] | None,
    video_hz: float,
) -> None:
    """Lanes, detection + lidar fusion and signs in one replica; everything drawn into the video.

    The camera edge holds one frame (``window=1``): in real time a frame that comes while
    perception is busy replaces the one waiting (dropped as ``latest-only``, counted), so
    perception always works on the newest frame instead of a queue of stale ones.
    """
    model = os.fspath(detector if detector is not None else SIM_DETECTOR_HW)
    if detector_options is None:  # the project's detector, at the camera's aspect ratio
        detector_options = {**SIM_DETECTOR_OPTIONS,
                            "input_size": input_for((camera.height, camera.width))}  # fmt: skip
    options = {**detector_options, **SIGNS_FROM_DETECTOR}
    unit = VehiclePerception(
        lanes=LaneDetector(geometry=True),
        detector=ObjectDetector(model=model, **options),
        fusion=SensorFusion(calibration=Calibration.from_pinhole(camera.K, camera.T_cam_ego)),
        # on the detector's sign boxes only (sign AP 1.0 on held-out frames): the colour
        # search over the whole frame cost ~7 ms a frame and changed no drive's outcome
        signs=SignRecognizer(colour=False),
    )
    p.operator("perception", _share(unit, "perception"),
               placement={**vehicle_on, **ACCELERATOR}, fallbacks=[vehicle_on])  # fmt: skip
    p.operator("annotate", _share(Annotator(class_names=CLASSES), "annotate"),
               placement=HUB, fallbacks=[vehicle_on])  # fmt: skip
    p.sink("video", _share(AnnotatedVideo(os.path.join(out, "video"), fps=video_hz), "video"),
           placement=HUB, fallbacks=[vehicle_on])  # fmt: skip

    p.connect(f"{src}.camera", "perception.camera", policy=policy, window=1)
    p.connect(f"{src}.lidar", "perception.lidar", policy=policy, window=2)
    p.connect("perception.lanes", "control.lanes", window=4)
    p.connect("perception.signs", "control.signs", window=4)
    # the video: frames and the newest overlays at video_hz (never waiting for the hub)
    p.connect(f"{src}.camera", "annotate.camera", policy=records, window=2, rate_hz=video_hz)
    overlays = {"objects": "perception.objects", "lanes": "perception.lanes",
                "signs": "perception.signs", "control": "control.control"}  # fmt: skip
    for overlay, src in overlays.items():
        p.connect(src, f"annotate.{overlay}", policy="latest-only", window=2, rate_hz=video_hz)
    p.connect("annotate.annotated", "video.annotated", policy=records, window=4)


def _share(op: Operator, role: str) -> Operator:
    """``op`` declaring its ``SHARES`` CPUs and ``NICENESS`` (an instance may override its
    class's resources); the rest of what its class declares stays."""
    niceness = NICENESS.get(role, op.resources.niceness)
    op.resources = replace(op.resources, num_cpus=SHARES[role], niceness=niceness)
    return op


if __name__ == "__main__":  # `python pipelines/autonomous_driving.py`, also a Ray job's entrypoint
    from pipelines import launch

    launch(build)
