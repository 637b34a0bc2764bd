"""``CityCoordinator``: a common cycle and green-wave offsets along the peak axis, on the hub."""

from __future__ import annotations

import math
import statistics
from typing import Any

from operators._message import Message
from operators._operator import Operator, Outputs, Resources
from operators._qos import QoS
from operators.city.policies import Webster, view_of


class CityCoordinator(Operator):
    """Coordinates the junctions' cycles so a platoon heading east meets green after green.

    Every ``period_s`` per junction it sends a plan: the common cycle (the median of the
    Webster cycles the junctions' current flows ask for, rounded up to 5 s: the longest
    would make every junction wait for the busiest) and the junction's offset,
    ``column * link_s`` modulo the cycle, where ``column`` is the junction's west-to-east
    position (netgenerate names grid junctions column letter, row digit) and ``link_s``
    the travel time between neighbours.

    Inputs:
      ``state``: ``QueueFlowEstimator`` estimates of every intersection.
    Outputs:
      ``plan``: ``{"intersection", "unit", "cycle_s", "offset_s", "t_s"}``.
    Parameters (keyword-only): ``period_s``, ``link_s``.

    >>> c = CityCoordinator(period_s=60.0, link_s=14.0)
    >>> c.offset("C1", cycle_s=90.0)
    28.0
    """

    inputs = ("state",)
    outputs = ("plan",)
    resources = Resources(num_cpus=0.05)

    def __init__(self, *, period_s: float = 120.0, link_s: float = 200.0 / 13.89) -> None:
        self.period_s = period_s
        self.link_s = link_s
        self._cycles: dict[str, float] = {}
        self._next: dict[str, float] = {}

    def offset(self, junction: str, *, cycle_s: float) -> float:
        column = ord(junction[0].upper()) - ord("A")
        return (column * self.link_s) % cycle_s

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        junction, t_s = str(p["intersection"]), float(p["t_s"])
        self._cycles[junction] = Webster().cycle(view_of(p))[0]
        if t_s < self._next.get(junction, 0.0):
            return
        self._next[junction] = t_s + self.period_s
        cycle = 5.0 * math.ceil(statistics.median(self._cycles.values()) / 5.0)
        plan = {
            "intersection": junction,
            "unit": p.get("unit", ""),
            "cycle_s": cycle,
            "offset_s": self.offset(junction, cycle_s=cycle),
            "t_s": t_s,
        }
        yield "plan", message.derive(plan, qos=QoS.CONTROL)

    def snapshot(self) -> Any:
        return {"cycles": dict(self._cycles), "next": dict(self._next)}

    def restore(self, state: Any) -> None:
        self._cycles, self._next = dict(state["cycles"]), dict(state["next"])
