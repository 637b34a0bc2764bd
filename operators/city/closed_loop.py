"""One-process closed loop: the smart-city operators driven directly against libsumo.

``run_closed_loop`` wires the same operator classes the ``smart-city`` pipeline runs
(``SumoCity`` → a ``RoadsideUnit`` per unit: ``IoTDeviceManager`` →
``QueueFlowEstimator`` → ``PublicSafety`` / ``TrafficSignalController``, and
``EnvironmentalMonitor`` → commands back into ``SumoCity``; ``CityCoordinator``;
``AlertSystem``) and calls them in order, one simulation step at a time, without a
runtime: every command is applied before the next step, so a policy is evaluated over
a full horizon in the time SUMO and the operators need, nothing else. ``run_sumo``
runs SUMO's own controllers over the same demand with the same command line, as the
baseline.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from operators._operator import Context
from operators.city._air import Episode
from operators.city._errors import SumoStartError
from operators.city.alerts import AlertSystem
from operators.city.controller import TrafficSignalController
from operators.city.coordination import CityCoordinator
from operators.city.roadside import RoadsideUnit
from operators.city.scenario import Scenario, ScenarioFiles, generate
from operators.city.sim import Incident, SumoCity, read_statistics, sumo_command


@dataclass(frozen=True)
class Outcome:
    """What one run gave: SUMO's trip statistics, the alert records, wall time."""

    controller: str
    statistics: dict[str, float]
    sim_s: float
    wall_s: float
    alerts: tuple[dict, ...] = field(default=())


def run_closed_loop(
    scenario: Scenario,
    policy: str,
    *,
    files: ScenarioFiles | None = None,
    end_s: float | None = None,
    incidents: Sequence[Incident] = (),
    episodes: Sequence[Episode] = (),
) -> Outcome:
    """Run ``policy`` (``fixed``, ``webster``, ``max-pressure``) on ``scenario`` to the end."""
    files = files or generate(scenario)
    stats = os.path.join(tempfile.mkdtemp(prefix="city-loop-"), "stats.xml")
    sim = SumoCity(
        scenario,
        files=files,
        end_s=end_s,
        incidents=incidents,
        episodes=episodes,
        statistics=stats,
    )
    units = {
        unit: RoadsideUnit(controller=TrafficSignalController(policy=policy))
        for unit in dict.fromkeys(sim.units.values())
    }
    coord, desk = CityCoordinator(), AlertSystem()
    ops = (sim, *units.values(), coord, desk)
    for op in ops:
        op.setup(Context(pipeline="closed-loop", operator=type(op).__name__))
    records: list[dict] = []
    started, next_tick = time.perf_counter(), RoadsideUnit.tick_period_ns
    try:
        while (out := sim.poll(0)) is not None:
            now = max(m.event_ts for _, m in out)
            queue = list(out)
            if now >= next_tick:
                queue += [o for u in units.values() for o in u.on_tick(now)]
                next_tick += RoadsideUnit.tick_period_ns
            while queue:  # every output of this step, in order, until none is left
                port, m = queue.pop(0)
                if port in ("readings", "air"):
                    queue += units[m.payload["unit"]].process(port, m)
                elif port == "summary":
                    queue += coord.process("state", m)
                elif port == "plan":
                    queue += units[m.payload["unit"]].process("plan", m)
                elif port == "commands":
                    queue += sim.process("commands", m)
                elif port == "alerts":
                    records.extend(r.payload for _, r in desk.process("alerts", m))
    finally:
        sim_s = sim.snapshot()["t"]
        for op in ops:
            op.teardown()
    return Outcome(
        controller=policy,
        statistics=read_statistics(stats),
        sim_s=sim_s,
        wall_s=time.perf_counter() - started,
        alerts=tuple(records),
    )


def run_sumo(
    scenario: Scenario, *, files: ScenarioFiles | None = None, end_s: float | None = None
) -> Outcome:
    """SUMO's own controller of ``scenario.tls_type`` over the same demand, as a process."""
    files = files or generate(scenario)
    stats = os.path.join(tempfile.mkdtemp(prefix="city-sumo-"), "stats.xml")
    end = end_s if end_s is not None else 2.0 * scenario.demand_s
    cmd = sumo_command(files, seed=scenario.seed, end_s=end, statistics=stats)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SumoStartError(str(files.net), done.stderr.strip()[-500:])
    return Outcome(
        controller=f"sumo-{scenario.tls_type}",
        statistics=read_statistics(stats),
        sim_s=end,
        wall_s=time.perf_counter() - started,
    )
