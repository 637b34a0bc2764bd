"""A session-scoped local Ray cluster of labeled nodes, with the fleet's Ray settings.

Shared by the system tests that leave it intact; tests that kill nodes or need
another fleet shape start their own small cluster.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports Ray
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from cluster._ray_config import SYSTEM_CONFIG  # after the environment: cluster imports Ray

# The fleet's own settings (fast health checks, workers at nice 0), metrics every second.
RAY_SYSTEM_CONFIG = {**SYSTEM_CONFIG, "metrics_report_interval_ms": 1000}

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
            "_system_config": RAY_SYSTEM_CONFIG,
        },
    )
    try:
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
    except BaseException:  # a node that did not come up: stop the ones that did
        cluster.shutdown()
        raise
    return cluster


@contextlib.contextmanager
def separate_cluster(nodes: list[dict[str, str]], **kwargs) -> Iterator:
    """A cluster of its own for one test or module (one that kills nodes, or another fleet
    shape): disconnects the driver from the session's cluster, if any, and reconnects it
    after, so the ``ray_cluster`` tests that follow still find it."""
    import ray

    previous = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    if previous:
        ray.shutdown()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # never create ~/.ray/auth_token from tests
    cluster = start_cluster(nodes, **kwargs)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous:
            ray.init(address=previous, logging_level="WARNING")
        else:
            os.environ.pop("RAY_AUTH_MODE", None)


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


@contextlib.contextmanager
def run_in_background(runtime, timeout_s: float) -> Iterator[dict]:
    """``runtime.run()`` on a thread while the test acts on the fleet (removes a node, stops
    the run). Yields the result: ``summary``, or ``error`` if the run raised. On leaving,
    the run is stopped (if nothing stopped it yet) and joined."""
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = runtime.run(timeout_s=timeout_s)
        except Exception as err:  # reported by the test's assertions
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield result
    finally:
        runtime.stop("test")  # keeps the reason of a stop the test already asked for
        thread.join(timeout=timeout_s)
