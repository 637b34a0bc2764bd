"""``QueueFlowEstimator``: queues, arrival rates and saturation flows per approach lane."""

from __future__ import annotations

from typing import Any

import numpy as np

from operators._message import Message
from operators._operator import Operator, Outputs, Resources

#: Saturation flow assumed until measured: 1800 vehicles per hour of green per lane.
DEFAULT_SAT_VPS = 0.5


class QueueFlowEstimator(Operator):
    """Turns raw detector readings into the estimates a signal controller needs.

    Inputs:
      ``readings``: a ``SumoCity`` reading of one intersection (validated upstream).
    Outputs:
      ``state``: the reading plus, per approach lane, ``queue`` (halting vehicles),
      ``arrival_vps`` (vehicles reaching the detector per second, exponentially
      averaged over ``arrival_tau_s``) and ``sat_vps`` (discharge rate measured while
      the lane has green and a queue, averaged over ``sat_tau_s``).
      ``summary``: the same estimate, once per ``summary_period_s`` per intersection (for
      the hub, which needs the flows, not every step).
    Parameters: ``arrival_tau_s``, ``sat_tau_s``, ``summary_period_s`` (keyword-only,
    simulated seconds).
    Keeps one estimate per intersection, so one replica may serve several.

    >>> est = QueueFlowEstimator()
    >>> r = {"intersection": "B1", "t_s": 1.0, "vehicles": np.array([2, 0]),
    ...      "halting": np.array([1, 0]), "passed": np.array([0, 1]), "phase": 0,
    ...      "serves": np.array([[False, True], [True, False]])}
    >>> out = est.process("readings", Message("city", 1, 1, r))
    >>> [(port, m.payload["queue"].tolist()) for port, m in out]
    [('state', [1.0, 0.0]), ('summary', [1.0, 0.0])]
    """

    inputs = ("readings",)
    outputs = ("state", "summary")
    resources = Resources(num_cpus=0.05)

    def __init__(
        self, *, arrival_tau_s: float = 120.0, sat_tau_s: float = 300.0, summary_period_s=30.0
    ) -> None:
        self.arrival_tau_s = arrival_tau_s
        self.sat_tau_s = sat_tau_s
        self.summary_period_s = summary_period_s
        self._memory: dict[str, dict[str, Any]] = {}

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        junction = str(p["intersection"])
        vehicles = np.asarray(p["vehicles"], float)
        halting = np.asarray(p["halting"], float)
        passed = np.asarray(p["passed"], float)
        m = self._memory.get(junction)
        if m is None:
            m = self._memory[junction] = {
                "t": float(p["t_s"]) - 1.0,
                "vehicles": vehicles,
                "halting": halting,
                "arrival": np.zeros_like(vehicles),
                "summary": -np.inf,
                "sat": np.full_like(vehicles, DEFAULT_SAT_VPS),
            }
        dt = max(float(p["t_s"]) - m["t"], 1e-3)
        arrived = np.maximum(passed + vehicles - m["vehicles"], 0.0) / dt
        a = min(dt / self.arrival_tau_s, 1.0)
        m["arrival"] = (1 - a) * m["arrival"] + a * arrived
        phase = int(p["phase"])
        if phase >= 0:  # discharge of a queue on green measures the saturation flow
            serves = np.asarray(p["serves"], bool)[phase]
            discharging = serves & (m["halting"] > 0)
            b = min(dt / self.sat_tau_s, 1.0)
            m["sat"] = np.where(discharging, (1 - b) * m["sat"] + b * (passed / dt), m["sat"])
        m["t"], m["vehicles"], m["halting"] = float(p["t_s"]), vehicles, halting
        out = {
            **p,
            "queue": halting,
            "arrival_vps": m["arrival"].copy(),
            "sat_vps": np.maximum(m["sat"], 0.1),
        }
        yield "state", message.derive(out)
        if m["t"] - m["summary"] >= self.summary_period_s:
            m["summary"] = m["t"]
            yield "summary", message.derive(out)

    def snapshot(self) -> Any:
        return {j: dict(m) for j, m in self._memory.items()}

    def restore(self, state: Any) -> None:
        self._memory = {j: dict(m) for j, m in state.items()}
