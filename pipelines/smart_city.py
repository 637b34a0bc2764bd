"""The ``smart-city`` pipeline: roadside units count traffic and drive a SUMO city's signals.

``SumoCity`` (on the hub: the city itself) steps Eclipse SUMO and emits, per roadside
unit and step, the detector readings of the junctions it serves, plus air quality.
Each roadside unit (``edge.role=rsu``, labelled ``edge.intersection.<id>=true`` for every
junction it serves) runs one keyed replica ``rsu`` of ``RoadsideUnit``, which chains,
per junction: ``IoTDeviceManager`` (sensor registry, heartbeats, garbage rejected with a
counted reason) → ``QueueFlowEstimator`` → ``PublicSafety`` (a blocked lane → incident
alert and a clearance plan) → ``TrafficSignalController`` (the ``policy`` parameter:
``fixed``, ``webster`` or ``max-pressure``), plus ``EnvironmentalMonitor`` (PM2.5 / NO2
episodes); the unit's commands go back into the simulator over a **feedback** edge. The
hub (``edge.role=hub``) runs ``CityCoordinator`` (common cycle and green-wave offsets
along the west-east peak axis, sent to the controllers), ``AlertSystem`` (de-duplicates
and escalates every alert) and three Parquet sinks under ``out_dir``: ``dashboard`` (one
row per intersection and command: queue, arrivals, phase, mode, policy), ``alert_log``
and ``status_log`` (the city's totals and the decision latency per step).

Why this shape (real time on a 2-core fleet): a Ray hop between actors costs ~2-3 ms of
CPU here, and SUMO plus every operator needs only ~2.5 ms per simulated second of the
3x3 grid. One message per intersection through four actors was ~40 hops per simulated
second, which capped the loop below 10 simulated seconds per wall second and queued the
decisions for seconds. Now a step of 1 simulated second costs about 9 hops: one reading
message per unit (3), no hop inside a unit (its operators run chained in its replica),
one command message per unit that changed or renewed a command (~2), a dashboard row
per command (~2.5) and the status line; summaries, plans and alerts come every tens of
seconds. The structure stays the issue's: the estimator and controller
of a junction run on the roadside node named for it, coordination and dashboard on the
hub, commands over a feedback edge, the simulation clock as event time.

A roadside unit that goes away takes its controllers with it; the simulator then hands
those junctions back to SUMO's fixed-time program after ``command_timeout_s`` simulated
seconds and raises ``controller_lost``, while the other units keep adapting (no edge into
or out of the hub waits on a lost unit: they drop the oldest message instead).

Time: the pipeline runs on the simulator's event time. ``realtime=True`` polls the
simulator ``rate_hz`` times per wall second (``rate_hz * step_s`` simulated seconds per
wall second) and sensor edges drop the oldest reading when a unit falls behind (never
stalling the city); ``realtime=False`` runs as fast as the loop allows, losslessly
(``pipelines.testing.run_local`` drives it in one process).

>>> p = build(out_dir="out/city")
>>> p.validate()
>>> sorted(p.specs["rsu"].keys)
['rsu-center', 'rsu-east', 'rsu-west']
>>> dict(p.specs["rsu"].keys["rsu-west"].selector)["edge.intersection.A0"]
'true'
>>> [e.name for e in p.edges if e.feedback]
['rsu.commands->sim.commands', 'coord.plan->rsu.plan']
>>> build(units={"rsu-1": ("A0", "Q7")})
Traceback (most recent call last):
...
pipelines._errors.ValidationError: pipeline 'smart-city' is invalid:
  - units names intersections ['Q7'] that are not signalised junctions of the network; ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from operators import Operator, Resources
from operators.city import (
    AlertSystem,
    CityCoordinator,
    Episode,
    Incident,
    RoadsideUnit,
    Scenario,
    SumoCity,
    TrafficSignalController,
    UnknownIntersection,
)
from operators.city.scenario import ScenarioFiles
from operators.parquet_sink import ParquetSink
from pipelines._errors import ValidationError
from pipelines._graph import Pipeline

HUB = {"edge.role": "hub"}
#: The default split of the 3x3 grid: one roadside unit per column (west to east).
UNITS: Mapping[str, tuple[str, ...]] = {
    "rsu-west": ("A0", "A1", "A2"),
    "rsu-center": ("B0", "B1", "B2"),
    "rsu-east": ("C0", "C1", "C2"),
}
#: The simulator steps SUMO in-process: most of the hub's CPU.
SIM = Resources(num_cpus=0.5)


def unit_selector(intersections: Sequence[str]) -> dict[str, str]:
    """The label selector of the roadside node that serves ``intersections``."""
    return {"edge.role": "rsu", **{f"edge.intersection.{j}": "true" for j in intersections}}


def build(
    *,
    scenario: Scenario | None = None,
    files: ScenarioFiles | None = None,
    policy: str = "max-pressure",
    units: Mapping[str, Sequence[str]] | None = None,
    out_dir: str | os.PathLike[str] = "out/city",
    realtime: bool = True,
    rate_hz: float = 10.0,
    end_s: float | None = None,
    command_timeout_s: float = 30.0,
    incidents: Sequence[Incident] = (),
    episodes: Sequence[Episode] = (),
    statistics: str | os.PathLike[str] | None = None,
    log_rows_per_file: int = 50,
    alert_rows_per_file: int = 10,
) -> Pipeline:
    """The smart-city pipeline over ``scenario`` (default: the 3x3 grid, moderate demand).

    ``policy``: the controllers' policy. ``units``: roadside unit -> the intersections it
    serves (an id the network lacks is a ``ValidationError``). ``out_dir``: where the hub's
    Parquet sinks write. ``realtime`` / ``rate_hz``: see the module doc. ``end_s``,
    ``command_timeout_s``, ``incidents``, ``episodes``, ``statistics``: passed to
    ``SumoCity``. ``log_rows_per_file``: rows per Parquet file of the status log
    (20 times that for the dashboard), ``alert_rows_per_file`` of the alert log; files
    appear as they fill, and at the end.
    ``files``: already generated scenario files (else generated on the hub).
    """
    scenario = scenario or Scenario()
    units = {u: tuple(js) for u, js in (units or UNITS).items()}
    serving = {j: u for u, js in units.items() for j in js}
    sim = SumoCity(
        scenario,
        files=files,
        units=serving,
        end_s=end_s,
        command_timeout_s=command_timeout_s,
        incidents=incidents,
        episodes=episodes,
        statistics=statistics,
    )
    try:
        sim.validate_units()
    except UnknownIntersection as err:
        raise ValidationError("smart-city", [str(err).replace("SumoCity units", "units")]) from err
    sim.resources = SIM
    keys = {u: unit_selector(js) for u, js in units.items()}
    sensors = "drop-oldest" if realtime else "block"
    out = os.fspath(out_dir)

    p = Pipeline("smart-city", time="event")
    p.source("sim", sim, rate_hz=rate_hz if realtime else None, placement=HUB)
    unit = RoadsideUnit(controller=TrafficSignalController(policy=policy))
    p.operator("rsu", unit, key_by="unit", keys=keys)
    p.operator("coord", CityCoordinator(), placement=HUB)
    p.operator("alerts", AlertSystem(), placement=HUB)
    for name, rows in {
        "dashboard": 20 * log_rows_per_file,
        "alert_log": alert_rows_per_file,
        "status_log": log_rows_per_file,
    }.items():
        p.sink(
            name, _light(ParquetSink(os.path.join(out, name), rows_per_file=rows)), placement=HUB
        )

    # the city's sensors into each roadside unit, its commands back into the city
    p.connect("sim.readings", "rsu.readings", policy=sensors, window=8)
    p.connect("sim.air", "rsu.air", policy=sensors, window=8)
    p.connect("rsu.commands", "sim.commands", policy="drop-oldest", window=16, feedback=True)
    # the hub: coordination (a newer plan supersedes an older one), alerts, the dashboard
    p.connect("rsu.summary", "coord.state", policy="drop-oldest", window=16)
    p.connect("coord.plan", "rsu.plan", policy="drop-oldest", window=16, feedback=True)
    for src in ("sim.alerts", "rsu.alerts"):
        p.connect(src, "alerts.alerts", window=16)
    p.connect("alerts.records", "alert_log.in", window=16)
    p.connect("rsu.decisions", "dashboard.in", policy=sensors, window=32)
    p.connect("sim.status", "status_log.in", policy=sensors, window=16)
    return p


def _light(op: Operator) -> Operator:
    op.resources = Resources(num_cpus=0.05)
    return op


if __name__ == "__main__":  # `python pipelines/smart_city.py`, also a Ray job's entrypoint
    from pipelines import launch

    launch(build)
