"""``MaxPressure``: serve the phase with the largest upstream-minus-downstream load.

The pressure of a green phase is the sum, over the approach lanes it serves, of the
load on the lane's detector (vehicles, halting ones counted ``halting_weight`` times
more: they are the ones accruing waiting time) minus the vehicles on the lanes it
feeds (Varaiya's max pressure, with detector counts as queues). A green runs at least
``min_green_s``; it ends early when its lanes are empty and another phase has
vehicles (gap-out: no green is held for nobody), and otherwise only when another
phase's pressure exceeds it by ``switch_margin``; a phase left unserved for
``max_red_s`` with vehicles halting is served next (no lane starves, e.g. one whose
demand a clearance plan hides).

>>> import numpy as np
>>> v = JunctionView(t_s=30.0, vehicles=np.array([8, 0]), halting=np.array([5, 0]),
...     downstream=np.zeros(2), arrival_vps=np.zeros(2), sat_vps=np.full(2, 0.5),
...     serves=np.array([[False, True], [True, False]]), phase=0, phase_s=10.0)
>>> MaxPressure().decide(v, {})
1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from operators.city.policies._view import JunctionView


@dataclass(frozen=True)
class MaxPressure:
    """Max-pressure phase choice with gap-out, a minimum green, a margin and a red limit."""

    min_green_s: float = 5.0
    switch_margin: float = 3.0
    halting_weight: float = 1.0
    max_red_s: float = 90.0

    def decide(self, view: JunctionView, memory: dict) -> int:
        served = memory.setdefault("served", {})
        if view.phase < 0:  # in a change interval: keep the target already asked for
            return int(memory.get("target", 0))
        served[view.phase] = view.t_s
        if view.phase_s < self.min_green_s:
            memory["target"] = view.phase
            return view.phase
        serves = view.serves.astype(float)
        vehicles = np.asarray(view.vehicles, float)
        halting = np.asarray(view.halting, float)
        waiting = serves @ halting
        starved = [
            g
            for g in range(len(serves))
            if waiting[g] > 0 and view.t_s - served.get(g, 0.0) > self.max_red_s
        ]
        load = vehicles + self.halting_weight * halting - np.asarray(view.downstream, float)
        pressure = serves @ load
        demand = serves @ vehicles
        best = int(np.argmax(pressure))
        if starved:
            target = min(starved, key=lambda g: served.get(g, 0.0))
        elif demand[view.phase] == 0 and demand.max() > 0:  # gap-out
            target = int(np.argmax(demand))
        elif pressure[best] > pressure[view.phase] + self.switch_margin:
            target = best
        else:
            target = view.phase
        memory["target"] = int(target)
        return int(target)
