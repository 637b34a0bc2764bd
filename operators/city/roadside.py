"""``RoadsideUnit``: one roadside node's city operators, chained in one replica.

A roadside unit serves a few junctions. Per junction it runs ``IoTDeviceManager``
(sanity checks, heartbeats) → ``QueueFlowEstimator`` → ``PublicSafety`` (incidents,
clearance) → ``TrafficSignalController``, and ``EnvironmentalMonitor`` on its air
sensors. The operators stay separate classes, each keeping its state per junction;
this one calls them in that order inside one replica, as Flink chains operators into
one task: between them a message would cost a Ray hop (~2-3 ms of CPU on a 2-core
edge machine) for no gain, since they run on the same node anyway. The signal
commands of every junction the unit decided in one step leave as one message.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from operators._chain import Chain
from operators._message import Message
from operators._operator import Operator, Outputs, Resources
from operators._qos import QoS
from operators.city._errors import CityError
from operators.city.controller import TrafficSignalController
from operators.city.devices import IoTDeviceManager
from operators.city.environment import EnvironmentalMonitor
from operators.city.estimator import QueueFlowEstimator
from operators.city.safety import PublicSafety


class RoadsideUnit(Chain):
    """The sensing and signal control of one roadside unit's junctions.

    Inputs:
      ``readings``: a ``SumoCity`` unit reading (``junctions``: junction -> its detectors).
      ``air``: a ``SumoCity`` unit air reading (``junctions``: junction -> PM2.5 / NO2).
      ``plan``: the hub's ``CityCoordinator`` plan of one junction.
    Outputs:
      ``commands``: the unit's signal commands of one step, columnar: ``unit`` and arrays
      ``intersection``, ``phase``, ``mode`` (what ``SumoCity`` applies).
      ``decisions``: each junction's command with its totals (the dashboard's rows).
      ``summary``: the estimator's periodic per-junction summary (for the hub).
      ``alerts``: device, incident and pollution alerts.
    Parameters (keyword-only, each a configured operator; defaults as their classes'):
    ``devices``, ``estimator``, ``safety``, ``controller`` (its ``policy`` is the
    pipeline's), ``environment``.
    A unit message without a ``junctions`` mapping is a ``CityError`` (dead-lettered by
    the runtime); a junction's garbage reading is rejected by ``devices`` with a counted
    reason and an alert, as it would be on its own.

    >>> unit = RoadsideUnit(controller=TrafficSignalController(policy="fixed"))
    >>> r = {"intersection": "B1", "unit": "rsu-1", "t_s": 1.0, "vehicles": np.array([2, 0]),
    ...      "halting": np.array([1, 0]), "passed": np.array([0, 1]), "downstream": np.zeros(2),
    ...      "phase": 0, "phase_s": 5.0, "serves": np.array([[False, True], [True, False]])}
    >>> out = unit.process("readings", Message("city", 1, 10**9,
    ...     {"unit": "rsu-1", "t_s": 1.0, "junctions": {"B1": r}}))
    >>> [(port, m.payload["mode"]) for port, m in out if port != "summary"]
    [('decisions', 'fixed'), ('commands', array(['fixed'], dtype='<U5'))]
    """

    inputs = ("readings", "air", "plan")
    outputs = ("commands", "decisions", "summary", "alerts")
    resources = Resources(num_cpus=0.1)
    tick_period_ns = IoTDeviceManager.tick_period_ns

    def __init__(
        self,
        *,
        devices: IoTDeviceManager | None = None,
        estimator: QueueFlowEstimator | None = None,
        safety: PublicSafety | None = None,
        controller: TrafficSignalController | None = None,
        environment: EnvironmentalMonitor | None = None,
    ) -> None:
        self.devices = devices or IoTDeviceManager()
        self.estimator = estimator or QueueFlowEstimator()
        self.safety = safety or PublicSafety()
        self.controller = controller or TrafficSignalController()
        self.environment = environment or EnvironmentalMonitor()

    @property
    def chain(self) -> dict[str, Operator]:
        """The unit's operators by role, in the order a reading meets them."""
        return {
            "devices": self.devices,
            "estimator": self.estimator,
            "safety": self.safety,
            "controller": self.controller,
            "environment": self.environment,
        }

    def process(self, port: str, message: Message) -> Outputs:
        if port == "plan":
            yield from self.controller.process("plan", message)
            return
        commands: list[Message] = []
        for reading in _junctions(port, message):
            for kind, valid in self.devices.process(port, reading):
                if kind == "alerts":
                    yield kind, valid
                elif kind == "air":
                    yield from _alerts_only(self.environment.process("air", valid))
                else:
                    yield from self._control(valid, commands)
        if commands:
            yield "commands", _columnar(message, commands)

    def _control(self, reading: Message, commands: list[Message]) -> Outputs:
        """One junction's valid reading: estimate, watch for incidents, decide."""
        for kind, state in self.estimator.process("readings", reading):
            if kind == "summary":
                yield kind, state
                continue
            for p, out in self.safety.process("state", state):
                if p == "alerts":
                    yield p, out
                else:  # a clearance plan: the controller takes it before it decides
                    list(self.controller.process("clearance", out))
            for p, out in self.controller.process("state", state):
                if p == "commands":
                    commands.append(out)
                else:
                    yield p, out

    def on_tick(self, now: int) -> Outputs:
        return self.devices.on_tick(now)


def _junctions(port: str, message: Message) -> list[Message]:
    """The per-junction messages inside a unit message (they share its identity and times)."""
    junctions = message.payload.get("junctions")
    if not isinstance(junctions, Mapping):
        raise CityError(
            f"RoadsideUnit got a {port!r} message without a 'junctions' mapping (payload keys: "
            f"{sorted(message.payload)}); expected SumoCity's unit message, e.g. "
            "{'unit': 'rsu-1', 't_s': 12.0, 'junctions': {'B1': {...}}}"
        )
    return [message.derive(reading) for reading in junctions.values()]


def _alerts_only(outputs: Outputs) -> Outputs:
    """``EnvironmentalMonitor``'s alerts (its rolling statistics stay on the unit)."""
    return ((port, m) for port, m in outputs if port == "alerts")


def _columnar(message: Message, commands: list[Message]) -> Message:
    """One unit's commands of a step as one message of equal-length arrays."""
    payloads = [c.payload for c in commands]
    return message.derive(
        {
            "unit": str(payloads[0].get("unit", "")),
            "intersection": np.array([p["intersection"] for p in payloads]),
            "phase": np.array([p["phase"] for p in payloads], np.int32),
            "mode": np.array([p["mode"] for p in payloads]),
        },
        qos=QoS.CONTROL,
    )
