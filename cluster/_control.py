"""Bring a fleet up behind a detached supervisor, find it, and take it down by pid.

``up`` starts ``python -m cluster.supervisor`` in its own session and returns once the
fleet answers (state file written, dashboard lists every node), within a deadline.
``down`` sends the supervisor SIGTERM, waits for it, then makes sure no process of the
fleet is left: the Ray pids it recorded, and any process running from the fleet's own
Ray temp dir (a directory made for this fleet alone, so nothing else runs from it).
Never ``ray stop``, which would stop every Ray instance on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from cluster import _procs
from cluster._errors import FleetError
from cluster._local import RAY_ENV, fetch_nodes
from cluster._spec import FleetSpec
from cluster._state import STATE_FILE, FleetState, clear

LOG_FILE = "supervisor.log"


@dataclass(frozen=True)
class UpResult:
    state: FleetState
    already_up: bool


def running(directory: Path) -> FleetState | None:
    """The fleet whose state is in ``directory``, if its supervisor still runs."""
    state = FleetState.read(directory)
    if state is not None and state.supervisor.alive():
        return state
    return None


def up(
    spec: FleetSpec,
    directory: Path,
    *,
    dashboard_port: int | None = None,
    timeout_s: float = 120.0,
) -> UpResult:
    state = running(directory)
    if state is not None:
        return UpResult(state, already_up=True)
    stale = FleetState.read(directory)
    if stale is not None:  # supervisor gone (killed, machine rebooted): clean up after it
        _reap(stale, deadline=time.monotonic() + 10)
        clear(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cluster.supervisor", str(Path(spec.path).resolve())]
    cmd += ["--state-dir", str(directory.resolve()), "--timeout", str(timeout_s)]
    if dashboard_port is not None:
        cmd += ["--dashboard-port", str(dashboard_port)]
    env = {**os.environ, **RAY_ENV, "PYTHONPATH": _import_root()}
    log = open(directory / LOG_FILE, "w")  # noqa: SIM115 - handed to the child
    with log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=str(directory),
        )
    deadline = time.monotonic() + timeout_s + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FleetError(
                f"fleet {spec.name!r} failed to start (supervisor exited with {proc.returncode})"
                f"; its log, {directory / LOG_FILE}, ends with:\n{_tail(directory / LOG_FILE)}"
            )
        state = FleetState.read(directory)
        if state is not None and state.supervisor.pid == proc.pid:
            try:
                fetch_nodes(state.dashboard_url, state.token())
                return UpResult(state, already_up=False)
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.25)
    proc.terminate()
    raise FleetError(
        f"fleet {spec.name!r} did not answer within {timeout_s:g} s; stopped it. Log: "
        f"{directory / LOG_FILE}:\n{_tail(directory / LOG_FILE)}"
    )


def down(directory: Path, *, timeout_s: float = 60.0) -> str:
    """Stop the fleet whose state is in ``directory``; say what was done."""
    state = FleetState.read(directory)
    if state is None:
        return f"no fleet is up (no {directory / STATE_FILE})"
    deadline = time.monotonic() + timeout_s
    sup = state.supervisor
    if sup.alive():
        os.kill(sup.pid, signal.SIGTERM)
        while sup.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    leftovers = _reap(state, deadline)
    clear(directory)
    msg = (
        f"fleet {state.fleet!r} down: stopped supervisor pid {sup.pid} and "
        f"{len(state.ray_processes)} Ray processes"
    )
    if leftovers:
        msg += f" (had to kill {len(leftovers)} stragglers: pids {sorted(leftovers)})"
    return msg


def fleet_pids(state: FleetState) -> set[int]:
    """Every live process of this fleet: recorded pids, and anything run from its temp dir."""
    pids = {p.pid for p in (state.supervisor, *state.ray_processes) if p.alive()}
    if state.ray_temp_dir:
        for pid in _procs.all_pids():
            if state.ray_temp_dir in _procs.cmdline(pid) and _procs.start_time(pid) is not None:
                pids.add(pid)
    return pids


def _reap(state: FleetState, deadline: float) -> set[int]:
    """Kill what is left of the fleet after its supervisor stopped; return the pids killed."""
    killed: set[int] = set()
    left = fleet_pids(state)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
                killed.add(pid)
            except ProcessLookupError:
                pass
        end = min(deadline, time.monotonic() + 5)
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = fleet_pids(state)
        if not left:
            break
    if left:
        raise FleetError(f"fleet {state.fleet!r}: processes {sorted(left)} would not stop")
    return killed


def _import_root() -> str:
    """So ``python -m cluster.supervisor`` imports this very package, wherever it runs."""
    root = str(Path(__file__).resolve().parent.parent)
    extra = os.environ.get("PYTHONPATH")
    return os.pathsep.join([root, extra]) if extra else root


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
