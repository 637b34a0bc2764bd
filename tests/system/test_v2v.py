"""Two vehicles on the fleet: one brakes for an emergency and broadcasts it, the other slows.

Each vehicle runs its own ``autonomous_driving`` pipeline on its own node (``node=``), in
one Ray namespace, where the ``v2v/emergency`` topic's broker lives. Vehicle A's lead
brakes hard; its emergency reaches vehicle B over the topic, and B's decisions follow
the advisory (the test reads both simulators' truth from the hub's recordings).
"""

from __future__ import annotations

import contextlib

import pytest
import ray

from operators.driving import PinholeCamera
from operators.recording import read_recording
from pipelines._plan import TOPIC_NAMESPACE, topic_actor_name
from pipelines._runtime import Runtime
from pipelines.autonomous_driving import V2V_TOPIC, build

pytestmark = pytest.mark.system

TINY = {"camera": PinholeCamera(width=64, height=36, focal=48.0), "camera_hz": 1.0}
NODES = [
    {"edge.node": "vehicle-1", "edge.role": "vehicle"},
    {"edge.node": "vehicle-2", "edge.role": "vehicle"},
    {"edge.node": "hub-1", "edge.role": "hub"},
]


@pytest.fixture
def two_vehicles():
    """Its own cluster: two vehicle nodes and a hub (the session cluster has one vehicle)."""
    from conftest import separate_cluster

    with separate_cluster(NODES, cpus=1) as cluster:
        yield cluster


def test_an_emergency_on_one_vehicle_slows_the_other(two_vehicles, tmp_path):
    a = build("lead_emergency_brake", vehicle="car-a", node="vehicle-1", out_dir=tmp_path / "a",
              perception=False, **TINY)  # fmt: skip
    b = build("car_following", vehicle="car-b", node="vehicle-2", out_dir=tmp_path / "b",
              perception=False, **TINY)  # fmt: skip
    runs = [Runtime(p, namespace="v2v-test") for p in (a, b)]
    try:
        for run in runs:
            run.deploy()
        for run in reversed(runs):  # the listener first
            run.start()
        for run in runs:
            run.wait(timeout_s=120)
        summaries = [run.finish() for run in runs]
    finally:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(topic_actor_name(V2V_TOPIC), namespace=TOPIC_NAMESPACE))

    nodes = [{info["labels"]["edge.node"] for name, info in run.placed.items()
              if "/sim#" in name} for run in runs]  # fmt: skip
    assert nodes == [{"vehicle-1"}, {"vehicle-2"}]
    assert all(s.identity_holds() for s in summaries)
    a_cmds = [m for _, m in read_recording(tmp_path / "a" / "commands")]
    b_cmds = [m for _, m in read_recording(tmp_path / "b" / "commands")]
    b_ego = [m for _, m in read_recording(tmp_path / "b" / "ego_log")]
    assert any(m.payload["aeb"] for m in a_cmds)  # A braked for its own emergency
    assert not any(m.payload["aeb"] for m in b_cmds)  # B had none of its own
    warned = [m for m in b_cmds if "V2V" in m.payload["reason"] and "car-a" in m.payload["reason"]]
    assert warned, sorted({m.payload["reason"] for m in b_cmds})
    after = [m.truth["speed"] for m in b_ego if m.event_ts > warned[0].event_ts + 3e9]
    assert after and min(after) < b_ego[0].truth["speed"] - 3.0  # B slowed toward 8 m/s
