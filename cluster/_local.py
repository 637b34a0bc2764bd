"""A fleet on this machine: a Ray head plus one Ray node per spec node, all on 127.0.0.1.

How the nodes are started (decided once, see RAY-NOTES.md): ``ray start --address`` refuses
to add a worker node when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray on loopback, so
every node is started through Ray's Python node API, ``ray._private.node.Node(RayParams,
head=...)`` -- what ``ray.cluster_utils.Cluster.add_node`` does -- in the process that holds
the :class:`LocalFleet`. Ray's node processes share that process's fate (Linux
``PR_SET_PDEATHSIG``), so the fleet lives exactly as long as its holder: a test, ``edgeray
run``, or the supervisor behind ``edgeray up`` (``cluster.supervisor``).

Each node gets its labels (the spec's plus ``edge.node``), CPUs, memory, custom resources, a
bounded object store, its own temp dir (so its sockets, logs and session dir are its own),
and its own ports: Ray binds the agent, metrics and runtime-env ports itself when asked for
port 0; the GCS and dashboard ports, which clients must know, are picked free beforehand.

Token authentication: with ``auth=True`` a fresh token is written to ``<state_dir>/auth_token``
(mode 0600) and this process's environment gets ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH``; every Ray process inherits both, so GCS, raylets and dashboard
demand the token and nothing reads or writes ``~/.ray/auth_token``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster._errors import FleetError
from cluster._ray_config import SYSTEM_CONFIG
from cluster._spec import HEAD_NAME, FleetSpec, NodeSpec
from pipelines._placement import Node

LOOPBACK = "127.0.0.1"

# Read by Ray when it is imported and by every process it starts: keep Ray on loopback.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def write_token(path: Path) -> str:
    """Write a fresh 256-bit token (what ``ray get-auth-token --generate`` makes), mode 0600."""
    token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def auth_env(token_path: Path | None) -> dict[str, str]:
    """The environment a Ray client needs for a fleet (token mode or none)."""
    if token_path is None:
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def apply_ray_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``env`` in this process (Ray reads it here and in every child); return old values."""
    old = {k: os.environ.get(k) for k in [*env, "RAY_AUTH_TOKEN"]}
    os.environ.pop("RAY_AUTH_TOKEN", None)  # would take precedence over the token file
    os.environ.update(env)
    _refresh_ray_auth()
    return old


def _restore_env(old: Mapping[str, str | None]) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _refresh_ray_auth()


def _refresh_ray_auth() -> None:
    # Ray caches its config and the token in C++; reload both, as Ray's own
    # authentication_token_setup._enable_token_auth does after changing RAY_AUTH_MODE.
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def fetch_nodes(dashboard_url: str, token: str | None, timeout_s: float = 5.0) -> list[Node]:
    """The node table from the dashboard's state API (``/api/v0/nodes?detail=1``)."""
    body = http_get_json(f"{dashboard_url}/api/v0/nodes?detail=1&limit=1000", token, timeout_s)
    rows = body.get("data", {}).get("result", {}).get("result", [])
    nodes = [
        Node(
            node_id=r["node_id"],
            labels={k: v for k, v in (r.get("labels") or {}).items() if k != "ray.io/node-id"},
            resources=dict(r.get("resources_total") or {}),
            alive=r.get("state") == "ALIVE",
        )
        for r in rows
    ]
    return sorted(nodes, key=lambda n: (n.labels.get("edge.node") != HEAD_NAME, n.name))


def http_get_json(url: str, token: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


@dataclass(frozen=True)
class NodeProcesses:
    """What one started Ray node left on this machine."""

    name: str
    node_id: str
    temp_dir: str
    pids: tuple[int, ...]
    ports: Mapping[str, int]


class LocalFleet:
    """Start ``spec`` on this machine; stop it with :meth:`stop` or by leaving the ``with``.

    >>> # with LocalFleet(load_spec("cluster/fleets/local.toml"), state_dir=d) as fleet:
    >>> #     fleet.nodes()  # [Node(node_id=..., labels={"edge.role": "vehicle", ...}), ...]
    """

    def __init__(
        self,
        spec: FleetSpec,
        *,
        state_dir: str | Path,
        dashboard_port: int | None = None,
        auth: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        self.spec = spec
        self.state_dir = Path(state_dir)
        self.dashboard_port = spec.head.dashboard_port if dashboard_port is None else dashboard_port
        self.auth = auth
        self.timeout_s = timeout_s
        self.token_path: Path | None = self.state_dir / "auth_token" if auth else None
        self.token: str | None = None
        self.temp_root: str | None = None
        self._head: Any = None
        self._workers: list[tuple[NodeSpec, Any]] = []
        self._old_env: dict[str, str | None] | None = None
        self.gcs_port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalFleet:
        if self._head is not None:
            raise FleetError(f"fleet {self.spec.name!r} is already started by this process")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.token_path is not None:
            self.token = write_token(self.token_path)
        for k, v in RAY_ENV.items():
            os.environ[k] = v
        self._old_env = apply_ray_env(auth_env(self.token_path))
        # Short path: Unix socket paths inside it must stay under ~107 characters.
        self.temp_root = tempfile.mkdtemp(prefix=f"er-{self.spec.name[:8]}-", dir="/tmp")
        try:
            self._start_head()
            for node in self.spec.nodes:
                self._start_worker(node)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _params(self, name: str, **kw: Any) -> Any:
        from ray._private.parameter import RayParams

        return RayParams(
            node_ip_address=LOOPBACK,
            temp_dir=os.path.join(self.temp_root, name),
            num_gpus=0,
            min_worker_port=0,
            max_worker_port=0,
            node_manager_port=0,
            dashboard_agent_listen_port=0,
            metrics_export_port=0,
            metrics_agent_port=0,
            runtime_env_agent_port=0,
            **kw,
        )

    def _start_head(self) -> None:
        import ray._private.node

        head = self.spec.head
        self.gcs_port = free_port()
        if self.dashboard_port == 0:
            self.dashboard_port = free_port()
        params = self._params(
            "head",
            gcs_server_port=self.gcs_port,
            num_cpus=head.num_cpus,
            memory=head.memory,
            object_store_memory=head.object_store_memory,
            labels={"edge.node": HEAD_NAME, "edge.role": HEAD_NAME},
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            dashboard_port=self.dashboard_port,
            _system_config=dict(SYSTEM_CONFIG),
        )
        self._head = ray._private.node.Node(
            params, head=True, shutdown_at_exit=True, spawn_reaper=True
        )
        self._pin_address(self._head)

    def _start_worker(self, node: NodeSpec) -> None:
        import ray._private.node

        params = self._params(
            node.name,
            gcs_address=self.address,
            num_cpus=node.num_cpus,
            memory=node.memory,
            object_store_memory=node.object_store_memory,
            resources=dict(node.resources),
            labels=dict(node.labels),
            include_log_monitor=True,  # own temp dir, own logs: stream them to drivers
        )
        worker = ray._private.node.Node(
            params, head=False, shutdown_at_exit=True, spawn_reaper=True
        )
        self._workers.append((node, worker))
        self._pin_address(worker)

    def _pin_address(self, node: Any) -> None:
        """Write this fleet's GCS address as the node's "current cluster".

        Ray's job supervisor resolves a job driver's RAY_ADDRESS with "auto" against
        ``<temp dir>/ray_current_cluster`` of its node, else /tmp/ray/ray_current_cluster,
        else any GCS process it finds on the machine (ray 2.60,
        ``JobSupervisor._get_driver_env_vars``). ``ray start --head`` writes that file;
        the node API does not, so without it a job on this fleet may connect to another
        Ray instance on the machine.
        """
        import ray._private.utils

        ray._private.utils.write_ray_address(self.address, node.get_temp_dir_path())

    def wait_ready(self) -> None:
        """Return once the dashboard lists every node alive; a FleetError after the timeout."""
        deadline = time.monotonic() + self.timeout_s
        want = {HEAD_NAME, *(n.name for n in self.spec.nodes)}
        seen: set[str] = set()
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                seen = {n.name for n in self.nodes() if n.alive}
                if want <= seen:
                    return
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
            time.sleep(0.25)
        raise FleetError(
            f"fleet {self.spec.name!r} did not come up within {self.timeout_s:g} s: alive "
            f"{sorted(seen)}, expected {sorted(want)} (last error: {last}); Ray's logs are "
            f"under {self.temp_root}"
        )

    def stop(self) -> None:
        """Stop every process this fleet started (workers first, then the head), by pid."""
        for _, worker in reversed(self._workers):
            worker.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
        self._workers.clear()
        if self._head is not None:
            self._head.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            self._head = None
        if self._old_env is not None:
            _restore_env(self._old_env)
            self._old_env = None
        if self.temp_root:
            shutil.rmtree(self.temp_root, ignore_errors=True)
            self.temp_root = None

    # ------------------------------------------------------------------ views

    @property
    def address(self) -> str:
        """The GCS address (``ray.init``, ``ray list``, ``ray status``)."""
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard / job API address (``ray job``, ``JobSubmissionClient``)."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    def nodes(self) -> list[Node]:
        """The live node table, read back from Ray's state API."""
        return fetch_nodes(self.dashboard_url, self.token)

    def processes(self) -> list[NodeProcesses]:
        """Every Ray process this fleet started, per node (for ``edgeray down`` by pid)."""
        out = []
        started = [(HEAD_NAME, self._head), *((n.name, w) for n, w in self._workers)]
        for name, node in started:
            if node is None:
                continue
            pids = tuple(p.pid for _, p in node.live_processes())
            ports = {
                "node_manager": node.node_manager_port,
                "metrics_export": node.metrics_export_port,
                "dashboard_agent_listen": node.dashboard_agent_listen_port,
                "runtime_env_agent": node.runtime_env_agent_port,
            }
            out.append(NodeProcesses(name, node.node_id, node.get_temp_dir_path(), pids, ports))
        return out

    def iter_pids(self) -> Iterator[int]:
        for p in self.processes():
            yield from p.pids
