"""The ``smart-city`` pipeline on its own local fleet: a hub and three roadside nodes.

The closed loop runs in real time with SUMO on the hub and each roadside node serving
one column of the 3x3 grid: every junction is decided for by the unit on the node named
for it, and its commands reach SUMO over the feedback edge. In the second test, mid-run
(10 simulated seconds per wall second) the east node is removed: its junctions must fall
back to SUMO's fixed-time program with a ``controller_lost`` alert each, while the other
six keep adapting; when a node with the same labels joins again, its controllers restart
there and take the junctions back. The tests follow the run through the hub's Parquet
logs (the second polls them with a deadline).
"""

from __future__ import annotations

import pathlib
import time

import pyarrow.parquet as pq
import pytest

from pipelines import Runtime
from pipelines.smart_city import UNITS, build, unit_selector

pytestmark = pytest.mark.system

HUB = {"edge.node": "hub-1", "edge.role": "hub", "edge.zone": "city"}
NODES = [HUB] + [{"edge.node": u, **unit_selector(js)} for u, js in UNITS.items()]
LOST = "rsu-east"


@pytest.fixture
def city():
    """Its own cluster (the test removes a node); the session's cluster is reconnected after."""
    from conftest import separate_cluster

    with separate_cluster(NODES, cpus=1, store_mb=100) as cluster:
        yield cluster


def rows(directory: pathlib.Path) -> list[dict]:
    """Every row the sink has written so far (files appear atomically)."""
    files = sorted(directory.glob("*.parquet")) if directory.exists() else []
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def wait_for(what: str, check, timeout_s: float = 120.0):
    """Poll ``check()`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def payload(row: dict, name: str):
    """A payload field of a Parquet row (``operators._arrow`` flattens payloads to columns)."""
    for key in (name, f"payload.{name}", f"payload_{name}"):
        if key in row:
            return row[key]
    return row.get("payload", {}).get(name)


def test_every_junction_is_controlled_by_the_unit_on_its_node_through_the_feedback_edge(
    city, tmp_path
):
    # prepare: 5 simulated seconds per wall second, so a loaded machine keeps up as well
    p = build(out_dir=tmp_path, realtime=True, rate_hz=5.0, end_s=60.0, log_rows_per_file=5)

    # execute
    summary = Runtime(p, placement_timeout_s=120.0).run(timeout_s=180)

    # assert: each unit ran on its own node and decided adaptively for each of its junctions
    placed = {a.rsplit("#", 1)[1]: n for a, n in summary.placement.items() if "/rsu#" in a}
    assert placed == {u: u for u in UNITS}
    decisions = rows(tmp_path / "dashboard")
    for unit, junctions in UNITS.items():
        mine = [r for r in decisions if payload(r, "unit") == unit]
        assert {payload(r, "intersection") for r in mine} == set(junctions)
        assert {payload(r, "mode") for r in mine} == {"adaptive"}
    # SUMO applied the commands it was sent: no junction fell back, none was lost
    status = rows(tmp_path / "status_log")
    assert max(payload(r, "t_s") for r in status) == 60.0
    assert max(payload(r, "fallback") for r in status) == 0
    assert sum(len(payload(r, "latency_ms")) for r in status) > 0
    commands = summary.edges["rsu.commands->sim.commands"]
    assert commands.delivered > 0
    assert summary.stopped_by == "end-of-stream"
    assert summary.identity_holds(), summary.format()


def test_losing_a_roadside_node_falls_back_to_fixed_time_and_the_rest_keep_adapting(city, tmp_path):

    # prepare
    p = build(
        out_dir=tmp_path,
        realtime=True,
        rate_hz=10.0,
        end_s=1200.0,  # longer than the test: it stops the run itself
        log_rows_per_file=5,
        alert_rows_per_file=1,
    )
    runtime = Runtime(p, placement_timeout_s=120.0, drain_timeout_s=120.0)
    from conftest import run_in_background

    with run_in_background(runtime, timeout_s=300) as result:
        status = tmp_path / "status_log"
        alerts = tmp_path / "alert_log"
        wait_for(
            "the loop to run 40 simulated s",
            lambda: any(payload(r, "t_s") >= 40 for r in rows(status)),
        )
        lost_node = next(n for n in city.list_all_nodes() if _labels(n).get("edge.node") == LOST)

        # execute: the east roadside unit disappears
        t_removed = max(payload(r, "t_s") for r in rows(status))
        city.remove_node(lost_node, allow_graceful=False)

        def east_lost():
            found = [
                r
                for r in rows(alerts)
                if payload(r, "kind") == "controller_lost" and payload(r, "t_s") > t_removed
            ]
            return (
                found if set(UNITS[LOST]) <= {payload(r, "intersection") for r in found} else None
            )

        lost = wait_for("controller_lost alerts for the east junctions", east_lost)
        t_lost = max(payload(r, "t_s") for r in lost)
        wait_for(
            "30 more simulated s",
            lambda: any(payload(r, "t_s") >= t_lost + 30 for r in rows(status)),
        )
        # a node with the same labels joins: the controllers restart there
        city.add_node(num_cpus=1, object_store_memory=100 * 2**20, labels=NODES[-1])

        # the run can drain once the east unit's actors have a node again
        runtime.stop("test: done")

    # assert: the east junctions fell back, each with a high alert
    east = [r for r in lost if payload(r, "intersection") in UNITS[LOST]]
    assert sorted({payload(r, "intersection") for r in east}) == list(UNITS[LOST])
    assert {payload(r, "severity") for r in east} == {"high"}
    # the six others kept adapting while the east ran on SUMO's program
    decisions = rows(tmp_path / "dashboard")
    after = [r for r in decisions if t_lost < payload(r, "t_s") <= t_lost + 30]
    adapting = {payload(r, "intersection") for r in after if payload(r, "mode") == "adaptive"}
    assert adapting == set(UNITS["rsu-west"] + UNITS["rsu-center"])
    assert max(payload(r, "fallback") for r in rows(status)) >= 3
    # the run drained and stopped, every edge accounted for, east back under control
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary.stopped_by == "test: done"
    assert summary.identity_holds(), summary.format()


def _labels(node) -> dict:
    """The labels Ray reports for a ``ray.cluster_utils`` node."""
    import ray

    for info in ray.nodes():
        if info["NodeID"] == node.node_id:
            return dict(info.get("Labels") or {})
    return {}
