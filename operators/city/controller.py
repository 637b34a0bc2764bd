"""``TrafficSignalController``: one decision per reading, sent back to the simulator."""

from __future__ import annotations

from typing import Any

import numpy as np

from operators._errors import OperatorError
from operators._message import Message
from operators._operator import Operator, Outputs, Resources
from operators._qos import QoS
from operators.city.policies import FIXED, POLICIES, JunctionView, view_of

#: A hub plan older than this (simulated seconds) is ignored.
PLAN_TTL_S = 600.0


class TrafficSignalController(Operator):
    """Chooses each junction's green phase with a policy and commands the signals.

    Inputs:
      ``state``: a ``QueueFlowEstimator`` estimate of one intersection.
      ``plan``: the hub's ``{"intersection", "cycle_s", "offset_s"}`` (used by ``webster``).
      ``clearance``: ``PublicSafety``'s ``{"intersection", "lane", "active"}``: while active,
      the blocked lane's demand is ignored (its green would be wasted) and the junction
      runs in ``clearance`` mode.
    Outputs:
      ``commands``: ``{"intersection", "unit", "phase", "mode"}`` for ``SumoCity``, sent when
      the decision changes and otherwise every ``heartbeat_s`` simulated seconds (the
      simulator's sign that the controller is alive); ``mode`` is ``fixed`` (SUMO's
      program), ``adaptive`` or ``clearance``.
      ``decisions``: each command sent, with the junction's totals, for the dashboard.
    Parameters:
      ``policy``: ``"fixed"``, ``"webster"`` or ``"max-pressure"`` (``POLICIES``), or a
      policy object with ``decide(view, memory)``. ``heartbeat_s`` (keyword-only).

    >>> TrafficSignalController(policy="smart")
    Traceback (most recent call last):
    ...
    operators._errors.OperatorError: policy='smart'; use one of ['fixed', 'webster', 'max-pressure']
    """

    inputs = ("state", "plan", "clearance")
    outputs = ("commands", "decisions")
    resources = Resources(num_cpus=0.05)

    def __init__(self, *, policy: Any = "max-pressure", heartbeat_s: float = 4.0) -> None:
        if isinstance(policy, str):
            if policy not in POLICIES:
                raise OperatorError(f"policy={policy!r}; use one of {list(POLICIES)}")
            policy = POLICIES[policy]()
        self.policy = policy
        self.heartbeat_s = heartbeat_s
        self._sent: dict[str, tuple[float, int, str]] = {}
        self._memory: dict[str, dict] = {}
        self._plans: dict[str, tuple[float, float, float]] = {}
        self._blocked: dict[str, set[int]] = {}

    @property
    def policy_name(self) -> str:
        return {cls: name for name, cls in POLICIES.items()}.get(type(self.policy), "custom")

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        junction = str(p["intersection"])
        if port == "plan":
            self._plans[junction] = (float(p["cycle_s"]), float(p["offset_s"]), float(p["t_s"]))
            return
        if port == "clearance":
            lanes = self._blocked.setdefault(junction, set())
            (lanes.add if bool(p["active"]) else lanes.discard)(int(p["lane"]))
            return
        view = self._view(junction, p)
        target = self.policy.decide(view, self._memory.setdefault(junction, {}))
        mode = (
            "fixed"
            if target == FIXED
            else ("clearance" if self._blocked.get(junction) else "adaptive")
        )
        command = {
            "intersection": junction,
            "unit": p.get("unit", ""),
            "phase": int(target),
            "mode": mode,
        }
        t_s = float(p["t_s"])
        last = self._sent.get(junction)
        if (
            last is not None
            and last[1:] == (command["phase"], mode)
            and t_s - last[0] < self.heartbeat_s
        ):
            return  # nothing new, and the last command is recent enough to count as a heartbeat
        self._sent[junction] = (t_s, command["phase"], mode)
        yield "commands", message.derive(command, qos=QoS.CONTROL)
        totals = {
            "t_s": float(p["t_s"]),
            "policy": self.policy_name,
            "queue": int(np.sum(p["halting"])),
            "vehicles": int(np.sum(p["vehicles"])),
            "phase_now": int(p["phase"]),
            "arrival_vph": float(np.sum(p["arrival_vps"]) * 3600.0),
        }
        yield "decisions", message.derive({**command, **totals}, qos=QoS.TELEMETRY)

    def _view(self, junction: str, p) -> JunctionView:
        plan = self._plans.get(junction)
        fresh = plan is not None and float(p["t_s"]) - plan[2] <= PLAN_TTL_S
        blocked = self._blocked.get(junction, ())
        return view_of(p, blocked=blocked, plan=plan[:2] if fresh else None)

    def snapshot(self) -> Any:
        return {
            "sent": dict(self._sent),
            "memory": {j: dict(m) for j, m in self._memory.items()},
            "plans": dict(self._plans),
            "blocked": {j: sorted(v) for j, v in self._blocked.items()},
        }

    def restore(self, state: Any) -> None:
        self._memory = {j: dict(m) for j, m in state["memory"].items()}
        self._plans = dict(state["plans"])
        self._sent = dict(state["sent"])
        self._blocked = {j: set(v) for j, v in state["blocked"].items()}
