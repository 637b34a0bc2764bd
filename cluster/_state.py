"""Where a fleet started by ``edgeray up`` keeps its state, and how to read it back.

One directory per fleet: ``$EDGERAY_STATE_DIR`` if set, else
``${XDG_STATE_HOME:-~/.local/state}/edgeray/<fleet name>``; ``--state-dir`` overrides both.
It holds ``state.json`` (supervisor pid, Ray pids, ports, addresses, token path),
``auth_token`` (mode 0600) and ``supervisor.log``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster import _procs

STATE_FILE = "state.json"


def state_dir(fleet: str, override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get("EDGERAY_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "edgeray" / fleet


@dataclass(frozen=True)
class Proc:
    """A process we started: pid plus its start time, so a reused pid is never mistaken."""

    pid: int
    start_time: int
    node: str = ""

    @classmethod
    def of(cls, pid: int, node: str = "") -> Proc:
        return cls(pid, _procs.start_time(pid) or -1, node)

    def alive(self) -> bool:
        return _procs.start_time(self.pid) == self.start_time


@dataclass(frozen=True)
class FleetState:
    fleet: str
    spec_path: str
    supervisor: Proc
    gcs_address: str
    dashboard_url: str
    token_path: str | None
    ray_temp_dir: str
    ray_processes: tuple[Proc, ...] = ()
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    node_ids: dict[str, str] = field(default_factory=dict)

    def token(self) -> str | None:
        if not self.token_path:
            return None
        return Path(self.token_path).read_text().strip()

    def env(self) -> dict[str, str]:
        """What plain Ray clients (``ray job``, ``ray list``, ``ray.init``) need."""
        out = {"RAY_ADDRESS": self.gcs_address, "RAY_API_SERVER_ADDRESS": self.dashboard_url}
        if self.token_path:
            out |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}
        return out

    def write(self, directory: Path) -> None:
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(directory / STATE_FILE)

    @classmethod
    def read(cls, directory: Path) -> FleetState | None:
        try:
            raw: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        raw["supervisor"] = Proc(**raw["supervisor"])
        raw["ray_processes"] = tuple(Proc(**p) for p in raw.get("ray_processes", ()))
        return cls(**raw)


def clear(directory: Path) -> None:
    (directory / STATE_FILE).unlink(missing_ok=True)
