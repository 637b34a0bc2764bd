"""`edgeray up / nodes / env / submit / down` on a real local fleet (one, shared by the module).

Everything runs in subprocesses, under `timeout`, with HOME pointed at a temp dir (so
~/.ray/auth_token is neither read nor written), a temp state dir and free ports. The last
test takes the fleet down and checks that none of its processes is left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from cluster._control import fleet_pids
from cluster._local import free_port
from cluster._state import FleetState
from operators.parquet_sink import read_parquet_dir
from pipelines.cli import job_runtime_env

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "system" / "fleet_test.toml"
JOB = "tests/system/fleet_job.py"
DRAIN_JOB = "tests/system/fleet_drain_job.py"
RAY_CLI = str(Path(sys.executable).parent / "ray")
ROLES = {"vehicle": "vehicle-1", "rsu": "rsu-1", "hub": "hub-1"}


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "EDGERAY_"))}
    env |= {
        "HOME": str(home),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    return env | (extra or {})


def _run(args: list[str], env: dict[str, str], limit_s: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["timeout", str(limit_s), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def edgeray(fleet: dict, *args: str, limit_s: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    if args[0] not in ("up", "join-cmd", "kuberay"):
        cmd += ["--state-dir", str(fleet["state_dir"])]
    return _run(cmd, fleet["env"], limit_s)


def exports(fleet: dict) -> dict[str, str]:
    out = edgeray(fleet, "env")
    assert out.returncode == 0, out.stderr
    pairs = [line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines()]
    return {k: v for k, v in pairs}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    state_dir = tmp_path_factory.mktemp("state") / "fleet-test"
    f = {"home": home, "state_dir": state_dir, "env": _env(home)}
    port = free_port()
    up = edgeray(f, "up", str(SPEC), "--state-dir", str(state_dir), "--dashboard-port", str(port))
    assert up.returncode == 0, up.stdout + up.stderr
    state = FleetState.read(state_dir)
    assert state is not None
    f |= {"state": state, "up": up, "port": port}
    yield f
    if FleetState.read(state_dir) is not None:  # a test failed before test_down
        edgeray(f, "down")
    assert not (home / ".ray").exists()


def get(url: str, token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def test_up_reports_addresses_on_loopback_with_the_chosen_dashboard_port(fleet):
    state = fleet["state"]
    assert state.dashboard_url == f"http://127.0.0.1:{fleet['port']}"
    assert state.gcs_address.startswith("127.0.0.1:")
    assert state.token_path == str(fleet["state_dir"] / "auth_token")
    assert "is up" in fleet["up"].stdout
    assert oct(os.stat(state.token_path).st_mode & 0o777) == "0o600"


def test_up_again_says_so_and_leaves_it_alone(fleet):
    out = edgeray(fleet, "up", str(SPEC), "--state-dir", str(fleet["state_dir"]))
    assert out.returncode == 0, out.stderr
    assert "already up" in out.stdout
    assert FleetState.read(fleet["state_dir"]).supervisor == fleet["state"].supervisor


def test_nodes_prints_the_live_fleet(fleet):
    out = edgeray(fleet, "nodes")
    assert out.returncode == 0, out.stderr
    for name in ("head", *ROLES.values()):
        assert name in out.stdout
    assert "camera=1" in out.stdout
    assert "edge.sensor.lidar=true" in out.stdout


def test_nodes_carry_labels_and_resources_seen_by_a_driver_using_the_exports(fleet):
    script = "import json, ray; ray.init(); print(json.dumps(ray.nodes()))"
    out = _run([sys.executable, "-c", script], _env(fleet["home"], exports(fleet)))
    assert out.returncode == 0, out.stderr
    nodes = {n["Labels"]["edge.node"]: n for n in json.loads(out.stdout.splitlines()[-1])}
    assert set(nodes) == {"head", *ROLES.values()}
    vehicle = nodes["vehicle-1"]
    assert vehicle["Labels"]["edge.role"] == "vehicle"
    assert vehicle["Labels"]["edge.sensor.camera"] == "true"
    assert vehicle["Resources"]["camera"] == 1
    assert vehicle["Resources"]["CPU"] == 1
    assert vehicle["Resources"]["object_store_memory"] == pytest.approx(80e6, rel=0.05)
    assert "camera" not in nodes["hub-1"]["Resources"]
    assert all(n["Alive"] for n in nodes.values())


def test_dashboard_refuses_requests_without_the_token(fleet):
    url = f"{fleet['state'].dashboard_url}/api/v0/nodes?detail=1"
    status, _ = get(url, None)
    assert status in (401, 403)
    status, body = get(url, fleet["state"].token())
    assert status == 200
    assert len(body["data"]["result"]["result"]) == 4


def _probe(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("FLEET-PROBE "))
    return json.loads(line.removeprefix("FLEET-PROBE "))


def test_submit_runs_the_pipeline_file_as_a_job_with_actors_on_labeled_nodes(fleet):
    out = edgeray(fleet, "submit", JOB)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCEEDED" in out.stdout
    assert "sources: {'src': 20}   sinks: {'out': 20}" in out.stdout
    where = _probe(out.stdout)
    for role, node in ROLES.items():
        assert where[role]["labels"]["edge.role"] == role
        assert where[role]["labels"]["edge.node"] == node
    # The state API agrees: each probe actor ran on the node of its role.
    state = fleet["state"]
    _, body = get(f"{state.dashboard_url}/api/v0/actors?detail=1&limit=1000", state.token())
    actors = body["data"]["result"]["result"]
    for role in ROLES:
        placed = [a for a in actors if a["name"] == where[role]["actor"]]
        assert placed, f"no actor {where[role]['actor']} in the state API"
        assert {a["node_id"] for a in placed} == {where[role]["node_id"]}


def test_plain_ray_job_submit_works_with_the_exports(fleet):
    env = _env(fleet["home"], exports(fleet))
    out = _run([RAY_CLI, "job", "submit", "--working-dir", str(ROOT), "--", "python", JOB], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _probe(out.stdout)["vehicle"]["labels"]["edge.node"] == "vehicle-1"


def test_ray_job_stop_interrupts_the_driver_so_it_can_drain(fleet, tmp_path):
    out_dir = tmp_path / "parquet"
    runtime_env = job_runtime_env(ROOT)  # what `edgeray submit` sends: SIGINT, then time
    runtime_env["env_vars"]["EDGERAY_DRAIN_OUT"] = str(out_dir)
    job_id = f"drain-{uuid.uuid4().hex[:8]}"
    env = _env(fleet["home"], exports(fleet))
    submit = [RAY_CLI, "job", "submit", "--no-wait", "--submission-id", job_id,
              "--runtime-env-json", json.dumps(runtime_env), "--", "python", DRAIN_JOB]  # fmt: skip
    out = _run(submit, env)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 90  # the pipeline is flowing once the sink wrote a file
    while not list(out_dir.glob("*.parquet")):
        assert time.monotonic() < deadline, _run([RAY_CLI, "job", "logs", job_id], env).stdout
        time.sleep(0.2)  # polling the directory, not waiting for a state
    stop = _run([RAY_CLI, "job", "stop", job_id], env, 60)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    logs = _run([RAY_CLI, "job", "logs", job_id], env, 30).stdout
    assert "stopped by SIGINT" in logs, logs
    assert "accounting (sent = delivered + dropped + dead-lettered + in-flight) holds" in logs
    sent = int(re.search(r"count\.out->store\.in: sent (\d+) = ", logs)[1])
    assert f"sources: {{'count': {sent}}}   sinks: {{'store': {sent}}}" in logs
    rows = read_parquet_dir(out_dir)
    assert len({(m.source, m.seq, m.part) for m in rows}) == len(rows) == sent > 0
    assert sorted(m.seq for m in rows) == list(range(sent))


def test_run_executes_a_pipeline_on_the_fleet_that_is_up(fleet):
    out = edgeray(fleet, "run", "tests/system/fleet_run_pipeline.py", limit_s=150)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sinks: {'out': 20}" in out.stdout


def test_submit_without_a_reachable_cluster_names_the_address(fleet, tmp_path):
    address = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "pipelines.cli", "submit", JOB, "--address", address]
    out = _run([*cmd, "--state-dir", str(tmp_path)], _env(fleet["home"]), 60)
    assert out.returncode == 1
    assert f"no Ray cluster answers at {address}" in out.stderr


def test_down_stops_every_process_of_the_fleet(fleet):
    state = fleet["state"]
    assert state.supervisor.alive()
    assert fleet_pids(state)
    out = edgeray(fleet, "down")
    assert out.returncode == 0, out.stderr
    assert f"fleet 'fleet-test' down: stopped supervisor pid {state.supervisor.pid}" in out.stdout
    assert not state.supervisor.alive()
    assert not [p for p in state.ray_processes if p.alive()]
    assert fleet_pids(state) == set()  # nothing runs from the fleet's Ray temp dir either
    again = edgeray(fleet, "down")
    assert again.returncode == 0
    assert "no fleet is up" in again.stdout
    assert edgeray(fleet, "nodes").returncode == 1
