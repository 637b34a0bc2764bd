"""``SumoCity``: an Eclipse SUMO city stepped in-process with libsumo, closed loop.

Each poll advances SUMO by ``step_s`` and emits what the roadside units would sense,
stamped with the simulation clock as event time: one message per roadside unit and step
carrying the readings of every junction it serves (``junctions``), since on an edge
fleet each Ray hop costs milliseconds of CPU and a unit's junctions travel together
anyway. Signal commands come back on the ``commands`` input (a feedback edge) and act
through TraCI; an intersection whose controller falls silent for ``command_timeout_s``
simulated seconds returns to SUMO's own fixed-time program (the safe default) and raises
a ``controller_lost`` alert.
Injected incidents (a vehicle stopped on an approach lane) and pollution episodes are
the scenario's ground truth, carried in ``truth`` for evaluation only.
"""

from __future__ import annotations

import copy
import math
import os
import pathlib
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import libsumo
import numpy as np
import sumolib
import traci

from operators._message import Message, Meta
from operators._operator import Outputs, Source
from operators._qos import QoS
from operators.city._air import Episode, reading
from operators.city._errors import CityError, SumoStartError, UnknownIntersection
from operators.city.scenario import Scenario, ScenarioFiles, generate, sumo_binary

#: Simulated clock at t=0: 07:00, so the demand window covers the morning rush.
START_OF_DAY_S = 7 * 3600.0
#: ``libsumo`` steps SUMO in this process (fast; one simulation per process); ``traci``
#: runs it as a child process (several per process, each call a socket round trip).
BACKENDS = ("libsumo", "traci")
#: Before its first command, a junction's controller has this long (sim s) to show up.
STARTUP_GRACE_S = 30.0
#: An incident's vehicle is stopped once it is this close to the stop line (m).
INCIDENT_ZONE_M = 60.0
#: A held phase lasts this long unless a command changes it (SUMO needs a finite duration).
HOLD_S = 100_000.0


@dataclass(frozen=True)
class Incident:
    """A vehicle stopped on an approach lane of ``intersection`` (lane ``lane`` of its list)."""

    intersection: str
    start_s: float
    duration_s: float
    lane: int = 0


@dataclass(frozen=True)
class Layout:
    """A junction as its roadside unit sees it: detectors and what each green phase serves."""

    lanes: tuple[str, ...]
    green_phases: tuple[int, ...]
    yellow_after: tuple[int, ...]
    serves: tuple[tuple[bool, ...], ...]  # serves[g][i]: green phase g gives lane i green
    exits: tuple[tuple[str, ...], ...]  # lanes each approach lane feeds


class SumoCity(Source):
    """Steps a SUMO city and emits each roadside unit's sensor readings; applies signal commands.

    Inputs:
      ``commands``: ``{"intersection", "phase", "mode"}``, each a scalar (one junction) or
      an array of equal length (a roadside unit's junctions at once); ``phase`` is an
      index into the reading's ``green_phases``; ``mode`` is ``"adaptive"``, ``"clearance"``
      (both take over the junction) or ``"fixed"`` (SUMO's own program runs). A junction
      the city does not have is ``UnknownIntersection`` (the runtime dead-letters the
      message; none of its commands is applied).
    Outputs:
      ``readings``: per roadside unit and step: ``unit``, ``t_s`` and ``junctions``, which
      maps each junction the unit serves to its reading: ``intersection``, ``unit``,
      ``t_s``, per approach lane ``vehicles`` / ``halting`` (lane-area detector), ``passed``
      (stop-line loop count this step), ``downstream`` (vehicles on the fullest lane it feeds),
      the layout (``green_phases``, ``serves``), ``phase`` (green index or -1 in a change),
      ``phase_s`` (time in it); truth: ``incidents`` (the unit's blocked junctions).
      ``air``: every ``air_period_s``, per unit: ``unit``, ``t_s`` and ``junctions``
      (``intersection``, ``unit``, ``pm25``, ``no2``, ``t_s`` each); truth: ``episodes``.
      ``status``: per step: ``t_s``, ``running``, ``halting``, ``arrived``, ``fallback``
      (intersections on SUMO's program), ``latency_ms`` (reading to applied command, wall).
      ``alerts``: ``controller_lost`` / ``controller_restored`` per intersection.
    Parameters:
      ``scenario`` (or ``files``, already generated), ``units``: intersection -> roadside
      unit (default: one unit ``rsu``), ``controlled``: whether commands take over the
      signals (``False``: SUMO's own controllers run, as the baseline),
      ``end_s`` (default twice the demand window; the source ends earlier once every
      vehicle has arrived after the demand window), ``incidents``, ``episodes``,
      ``backend``: ``"libsumo"`` (default) or ``"traci"`` (``BACKENDS``).
      ``statistics``: where SUMO writes its ``--statistic-output`` (``read_statistics``).

    >>> SumoCity(Scenario(rows=1, cols=1), units={"Z9": "rsu"}).validate_units()
    Traceback (most recent call last):
    ...
    operators.city._errors.UnknownIntersection: SumoCity units names intersections ['Z9'] ...
    """

    inputs = ("commands",)
    outputs = ("readings", "air", "status", "alerts")

    def __init__(
        self,
        scenario: Scenario,
        *,
        files: ScenarioFiles | None = None,
        units: Mapping[str, str] | None = None,
        controlled: bool = True,
        step_s: float = 1.0,
        end_s: float | None = None,
        command_timeout_s: float = 10.0,
        air_period_s: float = 10.0,
        incidents: Sequence[Incident] = (),
        episodes: Sequence[Episode] = (),
        statistics: str | os.PathLike[str] | None = None,
        wall: Callable[[], int] = time.time_ns,
        backend: str = "libsumo",
    ) -> None:
        self.scenario = scenario
        self.files = files
        self.units = (
            dict(units) if units is not None else dict.fromkeys(scenario.intersections(), "rsu")
        )
        self.controlled = controlled
        self.step_s = step_s
        self.end_s = float(end_s) if end_s is not None else 2.0 * scenario.demand_s
        self.command_timeout_s = command_timeout_s
        self.air_period_s = air_period_s
        self.incidents = tuple(incidents)
        self.episodes = tuple(episodes)
        self.statistics = None if statistics is None else os.fspath(statistics)
        self.wall = wall
        if backend not in BACKENDS:
            raise CityError(f"backend={backend!r}; use one of {BACKENDS}")
        self.backend = backend
        self._by_unit: dict[str, tuple[str, ...]] = {}
        for junction, unit in self.units.items():
            self._by_unit[unit] = (*self._by_unit.get(unit, ()), junction)
        self._state = _fresh_state()

    def validate_units(self) -> None:
        """Raise ``UnknownIntersection`` if ``units`` names a junction the grid does not have."""
        unknown = sorted(set(self.units) - set(self.scenario.intersections()))
        if unknown:
            raise UnknownIntersection(
                unknown, list(self.scenario.intersections()), "SumoCity units"
            )

    # -- lifecycle --------------------------------------------------------------------
    def setup(self, ctx) -> None:
        self.validate_units()
        files = self.files or generate(self.scenario)
        stats = self.statistics or os.path.join(tempfile.mkdtemp(prefix="city-"), "stats.xml")
        cmd = sumo_command(files, seed=self.scenario.seed, end_s=self.end_s, statistics=stats)
        self._api = _start(cmd, self.backend)
        self._layouts = {j: _layout(self._api, j) for j in self.units}
        self._state = _fresh_state()
        self._rng = np.random.default_rng(self.scenario.seed)

    def teardown(self) -> None:
        if getattr(self, "_api", None) is not None:
            self._api.close()
            self._api = None

    def snapshot(self) -> Any:
        """The source's own state, its noise generator's, and the log of signal changes."""
        rng = None if getattr(self, "_rng", None) is None else self._rng.bit_generator.state
        return {**copy.deepcopy(self._state), "rng": rng}

    def restore(self, state: Any) -> None:
        """Re-simulate to the snapshot's time, replaying its signal changes (SUMO is
        deterministic for a seed), then take over the snapshot's state."""
        state = copy.deepcopy(state)
        rng = state.pop("rng")
        if getattr(self, "_api", None) is not None:
            log = list(state["log"])
            while self._state["t"] < state["t"] and self.poll(0) is not None:
                while log and log[0][0] <= self._state["t"]:
                    self._apply(*log.pop(0)[1:])
            if rng is not None:
                self._rng.bit_generator.state = rng
        self._state = state

    def __getstate__(self) -> dict[str, Any]:
        # A live libsumo simulation cannot travel; a copy starts its own in setup().
        return {k: v for k, v in self.__dict__.items() if k not in ("_api", "_layouts", "_rng")}

    # -- commands -----------------------------------------------------------------------
    def process(self, port: str, message: Message) -> Outputs:
        if not self.controlled:
            return
        p = message.payload
        junctions, phases, modes = np.broadcast_arrays(
            np.atleast_1d(p["intersection"]),
            np.atleast_1d(p["phase"]),
            np.atleast_1d(p.get("mode", "adaptive")),
        )
        unknown = sorted(set(map(str, junctions)) - set(self.units))
        if unknown:
            raise UnknownIntersection(unknown, sorted(self.units), "a signal command")
        s = self._state
        latency_ms = (self.wall() - message.ingest_ts) / 1e6
        for junction, phase, mode in zip(map(str, junctions), phases, map(str, modes), strict=True):
            s["last_command"][junction] = s["t"]
            s["latency"].append(latency_ms)
            if s["lost"].pop(junction, None) is not None:
                yield "alerts", self._alert(junction, "controller_restored", "info")
            change = (junction, int(phase), mode)
            if not self._no_op(*change):  # the log restore() replays
                s["log"].append((s["t"], *change))
            self._apply(*change)

    def _no_op(self, junction: str, phase: int, mode: str) -> bool:
        s, greens = self._state, self._layouts[junction].green_phases
        if mode == "fixed":
            return junction not in s["held"] and junction not in s["yellow"]
        return 0 <= phase < len(greens) and s["held"].get(junction) == greens[phase]

    def _apply(self, junction: str, phase: int, mode: str) -> None:
        if mode == "fixed":
            self._release(junction)
        else:
            self._request(junction, phase)

    # -- stepping -----------------------------------------------------------------------
    def poll(self, now: int) -> Outputs | None:
        s = self._state
        done = s["t"] >= self.demand_end and self._api.simulation.getMinExpectedNumber() == 0
        if s["t"] >= self.end_s or done:
            return None
        out: list[tuple[str, Message]] = []
        self._finish_yellows()
        self._incidents()
        self._api.simulation.step(s["t"] + self.step_s)
        s["t"] = self._api.simulation.getTime()
        s["arrived"] += self._api.simulation.getArrivedNumber()
        out += self._watch_controllers()
        ts = int(s["t"] * 1e9)
        air = s["t"] - s["last_air"] >= self.air_period_s
        if air:
            s["last_air"] = s["t"]
        for unit, junctions in self._by_unit.items():
            out.append(("readings", self._readings(unit, junctions, ts)))
            if air:
                out.append(("air", self._air(unit, junctions, ts)))
        out.append(("status", self._status(ts)))
        return out

    @property
    def demand_end(self) -> float:
        return float(self.scenario.demand_s)

    def _message(
        self, payload: dict, ts: int, truth: dict | None = None, qos: QoS = QoS.TELEMETRY
    ) -> Message:
        s = self._state
        s["seq"] += 1
        return Message("city", s["seq"], ts, payload, truth=truth, meta=Meta(qos=qos))

    def _readings(self, unit: str, junctions: tuple[str, ...], ts: int) -> Message:
        payload = {
            "unit": unit,
            "t_s": self._state["t"],
            "junctions": {j: self._reading(j) for j in junctions},
        }
        blocked = set(self._state["blocked"].values())
        truth = {"incidents": tuple(j for j in junctions if j in blocked)}
        return self._message(payload, ts, truth, qos=QoS.CONTROL)

    def _reading(self, junction: str) -> dict[str, Any]:
        lay = self._layouts[junction]
        det = [f"{junction}:{lane}" for lane in lay.lanes]
        vehicles = np.array([self._api.lanearea.getLastStepVehicleNumber(d) for d in det], np.int32)
        halting = np.array([self._api.lanearea.getLastStepHaltingNumber(d) for d in det], np.int32)
        passed = np.array([_passed(self._api, self._state, lane) for lane in lay.lanes], np.int32)
        downstream = np.array(
            [
                max((self._api.lane.getLastStepVehicleNumber(x) for x in exits), default=0)
                for exits in lay.exits
            ],
            np.float32,
        )
        phase = self._api.trafficlight.getPhase(junction)
        green = lay.green_phases.index(phase) if phase in lay.green_phases else -1
        since = self._state["phase_since"]
        if since.get(junction, (None,))[0] != phase:
            since[junction] = (phase, self._state["t"])
        return {
            "intersection": junction,
            "unit": self.units[junction],
            "t_s": self._state["t"],
            "vehicles": vehicles,
            "halting": halting,
            "passed": passed,
            "downstream": downstream,
            "green_phases": np.array(lay.green_phases, np.int32),
            "serves": np.array(lay.serves, bool),
            "phase": green,
            "phase_s": self._state["t"] - since[junction][1],
        }

    def _air(self, unit: str, junctions: tuple[str, ...], ts: int) -> Message:
        s, t = self._state, self._state["t"]
        readings, episodes = {}, []
        for junction in junctions:
            lanes = self._layouts[junction].lanes
            nox = sum(self._api.lane.getNOxEmission(lane) for lane in lanes)
            noise = s["noise"].get(junction, (0.0, 0.0))
            noise = tuple(
                0.8 * n + e for n, e in zip(noise, self._rng.normal(0, (1.0, 2.5)), strict=True)
            )
            s["noise"][junction] = noise
            episode = next((e for e in self.episodes if e.active(junction, t)), None)
            if episode is not None:
                episodes.append(junction)
            pm25, no2 = reading(START_OF_DAY_S + t, nox, noise, episode)
            readings[junction] = {
                "intersection": junction,
                "unit": unit,
                "t_s": t,
                "pm25": pm25,
                "no2": no2,
            }
        payload = {"unit": unit, "t_s": t, "junctions": readings}
        return self._message(payload, ts, {"episodes": tuple(episodes)}, qos=QoS.PERCEPTION)

    def _status(self, ts: int) -> Message:
        s = self._state
        latency, s["latency"] = s["latency"], []
        payload = {
            "t_s": s["t"],
            "running": self._api.vehicle.getIDCount(),
            "halting": sum(self._api.edge.getLastStepHaltingNumber(e) for e in self._edges()),
            "arrived": s["arrived"],
            "fallback": len(s["lost"]),
            "latency_ms": np.array(latency, np.float64),
        }
        return self._message(payload, ts)

    def _edges(self) -> list[str]:
        if "_edge_ids" not in self._state:
            self._state["_edge_ids"] = [
                e for e in self._api.edge.getIDList() if not e.startswith(":")
            ]
        return self._state["_edge_ids"]

    def _alert(self, junction: str, kind: str, severity: str) -> Message:
        payload = {
            "kind": kind,
            "severity": severity,
            "intersection": junction,
            "unit": self.units[junction],
            "t_s": self._state["t"],
            "detail": "",
        }
        return self._message(payload, int(self._state["t"] * 1e9), qos=QoS.EMERGENCY)

    # -- signals ------------------------------------------------------------------------
    def _request(self, junction: str, green: int) -> None:
        lay, s = self._layouts[junction], self._state
        if not 0 <= green < len(lay.green_phases) or junction in s["yellow"]:
            return
        target = lay.green_phases[green]
        phase = self._api.trafficlight.getPhase(junction)
        if phase == target:
            if s["held"].get(junction) != target:
                self._api.trafficlight.setPhaseDuration(junction, HOLD_S)
                s["held"][junction] = target
            return
        s["held"].pop(junction, None)
        if phase in lay.green_phases:  # leave through this green's yellow
            yellow = lay.yellow_after[lay.green_phases.index(phase)]
            self._api.trafficlight.setPhase(junction, yellow)
            duration = self._api.trafficlight.getPhaseDuration(junction)
            self._api.trafficlight.setPhaseDuration(junction, HOLD_S)
            s["yellow"][junction] = (target, s["t"] + duration)
        else:  # already in a change interval: go on when it ends
            s["yellow"][junction] = (
                target,
                s["t"] + self._api.trafficlight.getNextSwitch(junction) - s["t"],
            )

    def _finish_yellows(self) -> None:
        s = self._state
        for junction, (target, until) in list(s["yellow"].items()):
            if s["t"] >= until:
                self._api.trafficlight.setPhase(junction, target)
                self._api.trafficlight.setPhaseDuration(junction, HOLD_S)
                s["held"][junction] = target
                del s["yellow"][junction]

    def _release(self, junction: str) -> None:
        """Hand the junction back to SUMO's fixed-time program (from its current phase)."""
        s = self._state
        if junction in s["held"] or junction in s["yellow"]:
            phase = self._api.trafficlight.getPhase(junction)
            self._api.trafficlight.setProgram(junction, "0")
            self._api.trafficlight.setPhase(junction, phase)  # with the program's duration
            s["held"].pop(junction, None)
            s["yellow"].pop(junction, None)

    def _watch_controllers(self) -> list[tuple[str, Message]]:
        """Controllers silent for ``command_timeout_s``: back to SUMO's program, alert once."""
        s, out = self._state, []
        if not self.controlled:
            return out
        for junction in self.units:
            last = s["last_command"].get(junction, STARTUP_GRACE_S)
            if s["t"] - last > self.command_timeout_s and junction not in s["lost"]:
                s["lost"][junction] = s["t"]
                self._release(junction)
                out.append(("alerts", self._alert(junction, "controller_lost", "high")))
        return out

    # -- incidents ----------------------------------------------------------------------
    def _incidents(self) -> None:
        s = self._state
        for i, inc in enumerate(self.incidents):
            if i in s["stopped"]:
                vid, until = s["stopped"][i]
                if s["t"] >= until and vid:
                    if vid in self._api.vehicle.getIDList():
                        self._api.vehicle.setSpeed(vid, -1)
                    s["stopped"][i] = ("", until)
                    s["blocked"].pop(i, None)
                continue
            if s["t"] < inc.start_s or inc.intersection not in self._layouts:
                continue
            lane = self._layouts[inc.intersection].lanes[inc.lane]
            near = self._api.lane.getLength(lane) - INCIDENT_ZONE_M
            ids = [v for v in self._api.lane.getLastStepVehicleIDs(lane)
                   if self._api.vehicle.getLanePosition(v) >= near]  # fmt: skip
            if ids:  # the first vehicle near the stop line stops there and blocks the lane
                vid = max(ids, key=self._api.vehicle.getLanePosition)
                self._api.vehicle.setSpeed(vid, 0.0)
                s["stopped"][i] = (vid, s["t"] + inc.duration_s)
                s["blocked"][i] = inc.intersection


def _fresh_state() -> dict[str, Any]:
    return {
        "t": 0.0,
        "seq": 0,
        "arrived": 0,
        "last_air": -math.inf,
        "last_command": {},
        "lost": {},
        "held": {},
        "yellow": {},
        "phase_since": {},
        "noise": {},
        "latency": [],
        "stopped": {},
        "blocked": {},
        "loops": {},
        "log": [],
    }


def _passed(api, state: dict, lane: str) -> int:
    """Vehicles that left ``lane`` since the previous step (its id set, differenced)."""
    now = set(api.lane.getLastStepVehicleIDs(lane))
    before = state["loops"].get(lane, set())
    state["loops"][lane] = now
    return len(before - now)


def sumo_command(files: ScenarioFiles, *, seed: int, end_s: float, statistics: str) -> list[str]:
    """The ``sumo`` command line of a run (the baselines run the same one as a process)."""
    roots = [(files.net, "net"), *((r, "routes") for r in files.routes)]
    for path, root in [*roots, (files.detectors, "additional")]:
        _check_file(pathlib.Path(path), root)
    return [
        sumo_binary("sumo"), "-n", str(files.net), "-r", ",".join(map(str, files.routes)),
        "-a", str(files.detectors), "--seed", str(seed), "--end", str(end_s),
        "--no-step-log", "true", "--no-warnings", "true", "--statistic-output", statistics,
        "--tripinfo-output", os.devnull,
        "--time-to-teleport", "300",
    ]  # fmt: skip


def _check_file(path: pathlib.Path, root: str) -> None:
    """Refuse a missing or malformed SUMO input before SUMO sees it: libsumo aborts the
    whole process on some broken files instead of raising."""
    if not path.is_file():
        raise SumoStartError(str(path), "no such file")
    try:
        events = ElementTree.iterparse(path, events=("start",))
        _, first = next(events)
        for _ in events:
            pass
    except (ElementTree.ParseError, StopIteration) as err:
        raise SumoStartError(str(path), f"not well-formed XML ({err})") from err
    if first.tag != root:
        raise SumoStartError(str(path), f"its root element is <{first.tag}>, expected <{root}>")


def _start(cmd: list[str], backend: str):
    """Start SUMO in-process (``libsumo``) or as a process (``traci``); returns the API."""
    try:
        if backend == "libsumo":
            libsumo.start(cmd)
            return libsumo
        label = f"city-{uuid.uuid4().hex[:8]}"
        traci.start(cmd, label=label)
        return traci.getConnection(label)
    except Exception as err:  # TraCIException / FatalTraCIError on a bad file
        raise SumoStartError(cmd[2], f"{type(err).__name__}: {err}") from err


def _layout(api, junction: str) -> Layout:
    links = api.trafficlight.getControlledLinks(junction)
    lanes = tuple(sorted({group[0][0] for group in links if group}))
    exits = tuple(
        tuple(sorted({g[0][1] for g in links if g and g[0][0] == lane})) for lane in lanes
    )
    logic = api.trafficlight.getAllProgramLogics(junction)[0]
    states = [p.state for p in logic.phases]
    greens = tuple(i for i, st in enumerate(states) if "y" not in st.lower() and "G" in st)
    yellows = tuple((g + 1) % len(states) for g in greens)
    serves = tuple(
        tuple(
            any(
                states[g][k] in "Gg"
                for k, group in enumerate(links)
                if group and group[0][0] == lane
            )
            for lane in lanes
        )
        for g in greens
    )
    return Layout(lanes, greens, yellows, serves, exits)


def read_statistics(path: str | os.PathLike[str]) -> dict[str, float]:
    """Trips, mean waiting and trip time (s) and unfinished trips from ``--statistic-output``.

    ``unfinished``: vehicles loaded (departure due within the run) that never arrived.
    """
    (vehicles,) = sumolib.xml.parse(os.fspath(path), "vehicles")
    (trips,) = sumolib.xml.parse(os.fspath(path), "vehicleTripStatistics")
    count = int(trips.count)
    return {
        "trips": count,
        "mean_waiting_s": float(trips.waitingTime) if count else math.nan,
        "mean_trip_s": float(trips.duration) if count else math.nan,
        "unfinished": int(vehicles.loaded) - count,
    }
