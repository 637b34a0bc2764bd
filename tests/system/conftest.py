"""A session-scoped local Ray cluster of labeled nodes, with fast health checks.

Shared by the system tests that leave it intact; tests that kill nodes or need
another fleet shape start their own small cluster.
"""

from __future__ import annotations

import os

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

FAST_HEALTH = {
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
    "metrics_report_interval_ms": 1000,
}

NODES = [
    {"edge.node": "vehicle-1", "edge.role": "vehicle", "edge.sensor.camera": "true"},
    {"edge.node": "rsu-1", "edge.role": "rsu", "edge.zone": "north"},
    {"edge.node": "hub-1", "edge.role": "hub"},
]


def start_cluster(nodes: list[dict[str, str]], *, cpus: float = 2, store_mb: int = 150):
    """A head (no labels) plus one node per label set, all on 127.0.0.1; connects the driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": store_mb * 2**20,
            "include_dashboard": False,
            "_system_config": FAST_HEALTH,
        },
    )
    for labels in nodes:
        extra = {"camera": 1} if labels.get("edge.sensor.camera") == "true" else {}
        cluster.add_node(
            num_cpus=cpus,
            object_store_memory=store_mb * 2**20,
            labels=labels,
            resources=extra,
        )
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    return cluster


@pytest.fixture(scope="session")
def ray_cluster():
    """Three labeled nodes (vehicle, rsu, hub) and a head; the driver connected to it."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"  # never create ~/.ray/auth_token from tests
    cluster = start_cluster(NODES)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop("RAY_AUTH_MODE", None)
