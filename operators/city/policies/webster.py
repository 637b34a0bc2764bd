"""``Webster``: cycle length and green splits from measured flow ratios, once per cycle.

At the start of each cycle the flow ratio of every green phase is the largest
``arrival / saturation`` over the lanes it serves; with ``Y`` their sum and ``L`` the
lost time (one change interval per phase), Webster's optimum cycle is
``C = (1.5 L + 5) / (1 - Y)`` (clipped to ``[min_cycle_s, max_cycle_s]``) and each phase
gets ``(C - L) * y / Y`` of green (at least ``min_green_s``). When the hub sends a plan
``(cycle_s, offset_s)`` the junction uses that common cycle and starts its cycle at the
offset (a green wave along the peak axis).

>>> import numpy as np
>>> v = JunctionView(t_s=0.0, vehicles=np.zeros(2), halting=np.zeros(2),
...     downstream=np.zeros(2), arrival_vps=np.array([0.1, 0.2]), sat_vps=np.full(2, 0.5),
...     serves=np.array([[True, False], [False, True]]), phase=0, phase_s=0.0)
>>> memory = {}
>>> Webster().decide(v, memory), [round(float(g), 1) for g in memory["greens"]]
(0, [11.5, 23.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators.city.policies._view import JunctionView


@dataclass(frozen=True)
class Webster:
    """Webster-style split update per cycle; parameters in seconds."""

    change_s: float = 4.0
    min_green_s: float = 6.0
    min_cycle_s: float = 30.0
    max_cycle_s: float = 120.0
    max_flow_ratio: float = 0.9

    def cycle(self, view: JunctionView) -> tuple[float, list[float]]:
        """Webster's cycle length and green times for the flows ``view`` measured."""
        ratio = view.arrival_vps / np.maximum(view.sat_vps, 1e-3)
        y = np.array([max(ratio[row].max(initial=0.0), 0.02) for row in view.serves])
        big_y = min(float(y.sum()), self.max_flow_ratio)
        lost = self.change_s * len(y)
        c = float(np.clip((1.5 * lost + 5.0) / (1.0 - big_y), self.min_cycle_s, self.max_cycle_s))
        if view.plan is not None:
            c = view.plan[0]
        greens = [max(self.min_green_s, float((c - lost) * yi / y.sum())) for yi in y]
        return c, greens

    def decide(self, view: JunctionView, memory: dict) -> int:
        start = memory.get("start")
        if start is None or view.t_s >= start + memory["cycle"]:
            memory["cycle"], memory["greens"] = self.cycle(view)
            start = view.t_s
            if view.plan is not None:  # align the cycle's start with the offset
                cycle, offset = view.plan
                start = view.t_s - ((view.t_s - offset) % cycle)
            memory["start"] = start
        into = view.t_s - start
        for g, green in enumerate(memory["greens"]):
            if into < green:
                return g
            into -= green + self.change_s
        return len(memory["greens"]) - 1
