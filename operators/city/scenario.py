"""City scenarios for Eclipse SUMO, generated with SUMO's own tools from a seed.

A ``Scenario`` names a network (a ``rows`` x ``cols`` grid of signalised 4-arm
junctions, ``netgenerate --grid --grid.attach-length``, or one isolated junction
with ``rows=cols=1``), the signal type SUMO builds there (``static``, ``actuated``,
``delay_based``), and the demand: ``randomTrips.py`` background traffic at one trip
every ``period_s`` seconds over ``demand_s`` seconds (``--fringe-factor 10``,
``--validate``) plus an asymmetric morning peak: west-to-east flows along every row,
ramping up to ``peak_vph`` vehicles per hour per row in the middle half of the demand
window. ``generate(scenario)`` writes the files into a cache directory keyed by the
scenario (``$EDGERAY_CACHE`` or ``~/.cache/edgeray``, under ``sumo/``) and reuses
them when they are already there.

>>> Scenario(rows=3, cols=3, seed=2).key()
'grid3x3-static-p3.0-peak0-d3600-s2'
>>> Scenario(rows=3, cols=3).intersections()
('A0', 'A1', 'A2', 'B0', 'B1', 'B2', 'C0', 'C1', 'C2')
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import uuid
from dataclasses import dataclass

import sumo
import sumolib

from operators.city._errors import ScenarioError

TLS_TYPES = ("static", "actuated", "delay_based")
#: Lane-area detectors cover this much of each approach lane, ending at the stop line.
DETECTOR_LENGTH_M = 100.0


@dataclass(frozen=True)
class Scenario:
    """What to simulate: network shape, signal type, demand and seed (see the module doc)."""

    rows: int = 3
    cols: int = 3
    length_m: float = 200.0
    tls_type: str = "static"
    period_s: float = 3.0
    peak_vph: float = 0.0
    demand_s: int = 3600
    seed: int = 1

    def __post_init__(self) -> None:
        if self.tls_type not in TLS_TYPES:
            raise ScenarioError(f"tls_type={self.tls_type!r}; use one of {TLS_TYPES}")
        if self.rows < 1 or self.cols < 1 or self.rows > 26 or self.cols > 26:
            raise ScenarioError(f"a {self.rows}x{self.cols} grid; use 1..26 rows and columns")

    def key(self) -> str:
        """A file-name-safe name of this scenario (the cache directory's name)."""
        shape = f"grid{self.rows}x{self.cols}" + (
            "" if self.length_m == 200 else f"-{self.length_m:g}m"
        )
        demand = f"p{self.period_s}-peak{self.peak_vph:g}-d{self.demand_s}"
        return f"{shape}-{self.tls_type}-{demand}-s{self.seed}"

    def intersections(self) -> tuple[str, ...]:
        """The junction ids netgenerate gives the grid (column letter, row number)."""
        if self.rows == 1 and self.cols == 1:
            return ("A0",)
        return tuple(f"{chr(65 + c)}{r}" for c in range(self.cols) for r in range(self.rows))


@dataclass(frozen=True)
class ScenarioFiles:
    """The generated SUMO inputs of one scenario."""

    net: pathlib.Path
    routes: tuple[pathlib.Path, ...]
    detectors: pathlib.Path


def cache_dir() -> pathlib.Path:
    """Where generated scenarios live: ``$EDGERAY_CACHE/sumo`` or ``~/.cache/edgeray/sumo``."""
    root = os.environ.get("EDGERAY_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "edgeray"
    )
    return pathlib.Path(root) / "sumo"


def generate(scenario: Scenario, directory: str | os.PathLike[str] | None = None) -> ScenarioFiles:
    """Write (or reuse) the network, demand and detector files of ``scenario``."""
    where = pathlib.Path(directory) if directory is not None else cache_dir()
    out = where / scenario.key()
    out.mkdir(parents=True, exist_ok=True)
    files = ScenarioFiles(
        net=out / "city.net.xml",
        routes=(out / "background.rou.xml", out / "peak.rou.xml"),
        detectors=out / "detectors.add.xml",
    )
    if not files.net.exists():
        _netgenerate(scenario, files.net)
    if not files.routes[0].exists():
        _random_trips(scenario, files.net, files.routes[0])
    if not files.routes[1].exists():
        _write_atomically(files.routes[1], _peak_flows(scenario, files.net))
    if not files.detectors.exists():
        _write_atomically(files.detectors, _detectors(files.net))
    return files


def sumo_binary(name: str) -> str:
    """The path of a SUMO binary (``sumo``, ``netgenerate``) from the ``eclipse-sumo`` package."""
    return os.path.join(sumo.SUMO_HOME, "bin", name)


def _run(cmd: list[str], what: pathlib.Path) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ScenarioError(
            f"generating {what} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )


def _netgenerate(s: Scenario, net: pathlib.Path) -> None:
    tmp = _temporary(net)
    cmd = [
        sumo_binary("netgenerate"),
        "--grid",
        "--grid.x-number",
        str(s.cols),
        "--grid.y-number",
        str(s.rows),
        "--grid.length",
        str(s.length_m),
        "--grid.attach-length",
        str(s.length_m),
        "--default-junction-type",
        "traffic_light",
        "--tls.default-type",
        s.tls_type,
        "--seed",
        str(s.seed),
        "-o",
        str(tmp),
    ]
    _run(cmd, net)
    tmp.replace(net)


def _random_trips(s: Scenario, net: pathlib.Path, routes: pathlib.Path) -> None:
    tmp, trips = _temporary(routes), _temporary(routes.with_suffix(".trips.xml"))
    script = os.path.join(sumo.SUMO_HOME, "tools", "randomTrips.py")
    cmd = [
        sys.executable,
        script,
        "-n",
        str(net),
        "-e",
        str(s.demand_s),
        "-p",
        str(s.period_s),
        "--fringe-factor",
        "10",
        "--seed",
        str(s.seed),
        "--validate",
        "--prefix",
        "bg",
        "-o",
        str(trips),
        "-r",
        str(tmp),
    ]
    env = {**os.environ, "SUMO_HOME": sumo.SUMO_HOME}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0 or not tmp.exists():
        raise ScenarioError(f"randomTrips.py for {routes} failed: {done.stderr.strip()[-500:]}")
    tmp.replace(routes)
    trips.unlink(missing_ok=True)


def _peak_flows(s: Scenario, net_file: pathlib.Path) -> str:
    """West-to-east flows along every row: a ramp to ``peak_vph`` and back (quarters)."""
    lines = ["<routes>", '    <vType id="commuter"/>']
    if s.peak_vph > 0:
        net = sumolib.net.readNet(str(net_file))
        quarter = s.demand_s // 4
        shape = ((0, 0.3), (quarter, 1.0), (3 * quarter, 0.3))  # (begin, share of peak_vph)
        for row in range(s.rows):
            west, east = _fringe_edges(net, row, s.cols)
            for i, (begin, share) in enumerate(shape):
                end = shape[i + 1][0] if i + 1 < len(shape) else s.demand_s
                lines.append(
                    f'    <flow id="peak{row}_{i}" type="commuter" begin="{begin}" end="{end}" '
                    f'from="{west}" to="{east}" vehsPerHour="{s.peak_vph * share:.1f}" '
                    'departLane="best" departSpeed="max"/>'
                )
    lines.append("</routes>")
    return "\n".join(lines) + "\n"


def _fringe_edges(net, row: int, cols: int) -> tuple[str, str]:
    """The edge entering row ``row`` from the west and the one leaving it to the east."""
    first, last = f"A{row}", f"{chr(64 + cols)}{row}"
    west_x = net.getNode(first).getCoord()[0]
    west = [
        e.getID()
        for e in net.getNode(first).getIncoming()
        if e.getFromNode().getCoord()[0] < west_x
    ]
    east_x = net.getNode(last).getCoord()[0]
    east = [
        e.getID() for e in net.getNode(last).getOutgoing() if e.getToNode().getCoord()[0] > east_x
    ]
    if not west or not east:
        raise ScenarioError(
            f"row {row} of the network has no fringe edges; grids need attach-length"
        )
    return west[0], east[0]


def _detectors(net_file: pathlib.Path) -> str:
    """A lane-area detector on each lane entering a signalised junction, ending at its stop line.

    Ids are ``<junction>:<lane>``; the roadside unit of the junction reads them.
    """
    net = sumolib.net.readNet(str(net_file))
    lines = ["<additional>"]
    for tls in net.getTrafficLights():
        junction = tls.getID()
        for lane in sorted(
            {c[0].getID(): c[0] for c in tls.getConnections()}.values(), key=lambda la: la.getID()
        ):
            length = min(DETECTOR_LENGTH_M, lane.getLength() - 1.0)
            lines.append(
                f'    <laneAreaDetector id="{junction}:{lane.getID()}" lane="{lane.getID()}" '
                f'pos="{lane.getLength() - length:.2f}" length="{length:.2f}" period="3600" '
                'file="NUL"/>'
            )
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = _temporary(path)
    tmp.write_text(text)
    tmp.replace(path)


def _temporary(path: pathlib.Path) -> pathlib.Path:
    """A hidden name beside ``path``, unique to this call: generators may race on a cache."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.xml")
