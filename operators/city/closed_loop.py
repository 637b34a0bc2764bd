"""One-process closed loop: the smart-city operators driven directly against libsumo.

``run_closed_loop`` wires the same operator classes the ``smart-city`` pipeline runs
(``SumoCity`` → ``IoTDeviceManager`` → ``QueueFlowEstimator`` →
``TrafficSignalController`` / ``PublicSafety`` → commands back into ``SumoCity``;
``EnvironmentalMonitor``; ``CityCoordinator``; ``AlertSystem``) and calls them in
order, one simulation step at a time, without a runtime: every command is applied
before the next step, so a policy is evaluated over a full horizon in the time SUMO
and the operators need, nothing else. ``run_sumo`` runs SUMO's own controllers over
the same demand with the same command line, as the baseline.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from operators._message import Message
from operators._operator import Context
from operators.city._air import Episode
from operators.city._errors import SumoStartError
from operators.city.alerts import AlertSystem
from operators.city.controller import TrafficSignalController
from operators.city.coordination import CityCoordinator
from operators.city.devices import IoTDeviceManager
from operators.city.environment import EnvironmentalMonitor
from operators.city.estimator import QueueFlowEstimator
from operators.city.safety import PublicSafety
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
    devices, estimate = IoTDeviceManager(), QueueFlowEstimator()
    control, safety = TrafficSignalController(policy=policy), PublicSafety()
    env, coord, desk = EnvironmentalMonitor(), CityCoordinator(), AlertSystem()
    ops = (sim, devices, estimate, control, safety, env, coord, desk)
    for op in ops:
        op.setup(Context(pipeline="closed-loop", operator=type(op).__name__))
    records: list[dict] = []

    def alert(messages) -> None:
        for _, m in messages:
            records.extend(r.payload for _, r in desk.process("alerts", m))

    started, next_tick = time.perf_counter(), devices.tick_period_ns
    try:
        while (out := sim.poll(0)) is not None:
            commands: list[Message] = []
            for port, m in out:
                if port == "alerts":
                    alert([(port, m)])
                elif port in ("readings", "air"):
                    commands += _roadside(
                        port, m, devices, estimate, control, safety, env, coord, alert
                    )
                if m.event_ts >= next_tick:
                    alert(devices.on_tick(m.event_ts))
                    next_tick += devices.tick_period_ns
            for c in commands:
                alert(sim.process("commands", c))
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


def _roadside(port, m, devices, estimate, control, safety, env, coord, alert) -> list[Message]:
    """One sensor message through a roadside unit; returns the signal commands it caused."""
    commands = []
    for out_port, valid in devices.process(port, m):
        if out_port == "alerts":
            alert([(out_port, valid)])
        elif out_port == "air":
            alert((p, a) for p, a in env.process("air", valid) if p == "alerts")
        else:
            for kind, state in estimate.process("readings", valid):
                if kind == "summary":
                    for _, plan in coord.process("state", state):
                        list(control.process("plan", plan))
                    continue
                for p, s in safety.process("state", state):
                    if p == "alerts":
                        alert([(p, s)])
                    else:
                        list(control.process("clearance", s))
                commands += [c for p, c in control.process("state", state) if p == "commands"]
    return commands


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
