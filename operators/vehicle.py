"""A vehicle's operators chained into two units: ``VehiclePerception`` and ``VehicleControl``.

On a vehicle the perception operators (``LaneDetector``, ``ObjectDetector``,
``SensorFusion``, ``SignRecognizer``) and the decision loop (``SafetyMonitor`` ->
``DecisionMaker`` -> ``Controller``) run on the same small computer. Between two of
them a message would cost a Ray hop (~2-3 ms of CPU on a 2-core edge machine, both
ends together) for no gain, so each unit calls its operators in order inside one
replica, as Flink chains operators into one task and as ``city.RoadsideUnit`` does for
a roadside unit. The operators stay separate classes with their own state; a unit
only routes messages between them.

Two units, not one: the decision loop runs on every ego sample (50 Hz) and must not
wait behind a camera frame's perception (tens of ms); in its own replica it answers
while perception works, and takes perception's newest lanes and signs when they come.

If one operator of a unit raises on a message, the unit's whole call fails and the
runtime dead-letters the message with that cause (e.g. a frame the detector cannot
read also yields no lanes), as it would for any operator.
"""

from __future__ import annotations

from operators._chain import Chain
from operators._message import Message
from operators._operator import Field, Operator, Outputs, Port, Resources
from operators.controller import Controller
from operators.decision import DecisionMaker
from operators.detection import ObjectDetector
from operators.fusion import SensorFusion
from operators.lanes import LaneDetector
from operators.safety import SafetyMonitor
from operators.signs import SignRecognizer

_IMAGE = Field("uint8", (None, None, 3))
_POINTS = Field("float32", (None, 4))


class VehiclePerception(Chain):
    """A vehicle's camera perception: lanes, objects with lidar distances, and signs.

    Inputs:
      ``camera``: a camera frame ``{"image": uint8 HxWx3 BGR, ...}`` (with ``K`` /
      ``T_cam_ego`` for the lane geometry and sign distances, as ``DrivingSimulator``
      sends it).
      ``lidar``: a scan ``{"points": float32 Nx4}`` in the ego frame, for fusion.
    Outputs (one of each per frame, except ``objects``, which waits for the lidar scan
    of the frame's instant as ``SensorFusion`` says):
      ``lanes``: ``LaneDetector``'s lane message; ``objects``: ``SensorFusion``'s fused
      detections; ``signs``: ``SignRecognizer``'s signs (on the detector's sign boxes).
    Parameters (keyword-only, each a configured operator): ``lanes``, ``detector``
    (with ``keep_image=True``, so the signs are cut from the frame it saw), ``fusion``,
    ``signs`` (default: its class's defaults).

    >>> import pickle
    >>> unit = VehiclePerception(lanes=LaneDetector(), fusion=SensorFusion(),
    ...     detector=ObjectDetector(model="model.onnx", keep_image=True))
    >>> list(pickle.loads(pickle.dumps(unit)).chain)
    ['lanes', 'detector', 'fusion', 'signs']
    """

    inputs = (Port("camera", {"image": _IMAGE}), Port("lidar", {"points": _POINTS}))
    outputs = ("lanes", "objects", "signs")
    # Perception may fall behind (its camera edge keeps only the latest frame); the control
    # loop on the same cores must not: it gives way (niceness 4 over Ray's worker 15).
    resources = Resources(num_cpus=0.4, niceness=4)

    def __init__(
        self,
        *,
        lanes: LaneDetector,
        detector: ObjectDetector,
        fusion: SensorFusion,
        signs: SignRecognizer | None = None,
    ) -> None:
        if not detector.keep_image:
            raise ValueError(
                "VehiclePerception needs ObjectDetector(keep_image=True, ...): the sign "
                "recognizer cuts its crops from the frame the detector passes on"
            )
        self.lanes = lanes
        self.detector = detector
        self.fusion = fusion
        self.signs = signs or SignRecognizer()

    @property
    def chain(self) -> dict[str, Operator]:
        """The unit's operators by role, in the order a frame meets them."""
        return {
            "lanes": self.lanes,
            "detector": self.detector,
            "fusion": self.fusion,
            "signs": self.signs,
        }

    def process(self, port: str, message: Message) -> Outputs:
        if port == "lidar":
            yield from self.fusion.process("lidar", message)
            return
        yield from self.lanes.process("frames", message)
        for _, detections in self.detector.process("camera", message):
            yield from self.signs.process("detections", detections)
            yield from self.fusion.process("camera", detections)


class VehicleControl(Chain):
    """A vehicle's decision loop: safety monitor -> decision maker -> controller.

    Inputs:
      ``ego``: GPS-IMU samples; each one starts a decision (and a command).
      ``lidar``: scans for the safety monitor (obstacles in the path, time to collision).
      ``lanes`` / ``signs`` / ``advisory``: what ``DecisionMaker`` takes on those ports.
    Outputs:
      ``control``: the ``Controller``'s commands (one per decision).
      ``safety`` / ``emergency``: the ``SafetyMonitor``'s events and emergencies (the
      emergencies also reach the decision maker inside the unit, at once).
    Parameters (keyword-only, each a configured operator): ``safety``, ``decide``,
    ``control`` (defaults: their classes' defaults). The unit ticks at the safety
    monitor's period (stale-sensor checks).

    >>> unit = VehicleControl()
    >>> [(p, m.payload["reason"]) for p, m in unit.process("ego", Message("s", 0, 0,
    ...  {"speed": 15.0, "yaw_rate": 0.0}))]
    [('control', 'cruise 15.0 m/s')]
    """

    inputs = (Port("ego"), Port("lidar", {"points": _POINTS}), "lanes", "signs", "advisory")
    outputs = ("control", "safety", "emergency")
    resources = Resources(num_cpus=0.1)

    def __init__(
        self,
        *,
        safety: SafetyMonitor | None = None,
        decide: DecisionMaker | None = None,
        control: Controller | None = None,
    ) -> None:
        self.safety = safety or SafetyMonitor()
        self.decide = decide or DecisionMaker()
        self.control = control or Controller()
        self.tick_period_ns = self.safety.tick_period_ns

    @property
    def chain(self) -> dict[str, Operator]:
        """The unit's operators by role, in the order a sample meets them."""
        return {"safety": self.safety, "decide": self.decide, "control": self.control}

    def process(self, port: str, message: Message) -> Outputs:
        if port in ("ego", "lidar"):
            yield from self._watched(self.safety.process(port, message))
        if port != "lidar":  # the decision maker has no lidar port: the monitor's events
            yield from self._decided(self.decide.process(port, message))

    def on_tick(self, now: int) -> Outputs:
        return self._watched(self.safety.on_tick(now))

    def _watched(self, outputs: Outputs) -> Outputs:
        """The monitor's events and emergencies, out of the unit and into the decisions."""
        for port, event in outputs:
            yield port, event
            yield from self._decided(self.decide.process(port, event))

    def _decided(self, decisions: Outputs) -> Outputs:
        for _, decision in decisions:
            yield from self.control.process("decision", decision)
