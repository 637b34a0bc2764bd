"""A node that leaves mid-stream: its replicas restart where their selector allows.

On a cluster of its own (the test removes a node): a source on the vehicle, a
pass-through operator on the roadside unit, a sink on the hub. The roadside node is
removed without warning while the stream runs under ``block``. When a node with the
same labels joins (the run stopped just after, or just before, while Ray may still be
restarting the operator there) the run must drain and lose nothing: every message the
source sent reaches the sink exactly once and the accounting identity holds. When no
node comes back, the run must still end: what waited for the lost operator longer
than the restart timeout is dropped as ``unplaceable`` and counted, the operator is
reported unplaceable, and the identity holds.
"""

from __future__ import annotations

import sys
import time

import pytest
import ray

from operators import Message, Operator, Resources, Source
from pipelines import Pipeline
from pipelines._runtime import Runtime
from pipelines.testing import ListSink

pytestmark = pytest.mark.system
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

RSU = {"edge.node": "rsu-1", "edge.role": "rsu"}
NODES = [
    {"edge.node": "vehicle-1", "edge.role": "vehicle"},
    RSU,
    {"edge.node": "hub-1", "edge.role": "hub"},
]


class Count(Source):
    """0, 1, 2, ... on ``out`` until stopped."""

    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def __init__(self) -> None:
        self.n = 0

    def poll(self, now):
        self.n += 1
        return [("out", Message("", self.n - 1, now, {"x": self.n - 1}))]


class Pass(Operator):
    inputs = ("in",)
    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def process(self, port, message):
        yield "out", message


@pytest.fixture
def fleet():
    from conftest import separate_cluster

    with separate_cluster(NODES, cpus=1, store_mb=100) as cluster:
        yield cluster


def _progress(actor) -> int:
    return ray.get(actor.progress.remote())


def _wait_for(what: str, check, timeout_s: float = 60.0) -> None:
    """Poll a state query until it holds; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def _rsu_ids() -> set[str]:
    """The roadside nodes Ray sees alive."""
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and RSU.items() <= n["Labels"].items()}


def _pipeline() -> Pipeline:
    p = Pipeline("lost-rsu")
    p.source("src", Count(), rate_hz=100, placement={"edge.role": "vehicle"})
    p.operator("mid", Pass(), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "mid", window=8)
    p.connect("mid", "out", window=8)
    return p


def _sink_xs(runtime) -> list[int]:
    return sorted(
        int(m.payload["x"]) for s in runtime.stats if s["operator"] == "out" for m in s["snapshot"]
    )


def _remove_rsu(fleet) -> None:
    rsu = next(node for node in fleet.list_all_nodes() if node.node_id in _rsu_ids())
    fleet.remove_node(rsu, allow_graceful=False)
    _wait_for("Ray to see the node gone", lambda: not _rsu_ids())


@pytest.mark.parametrize("stop", ["once-rejoined", "before-it-rejoins"])
def test_operator_on_a_lost_node_restarts_on_its_replacement_and_nothing_is_lost(fleet, stop):
    # prepare: an endless stream through the roadside unit
    runtime = Runtime(_pipeline(), drain_timeout_s=120)
    runtime.deploy()
    sink = runtime.actors["lost-rsu/out#0"]
    from conftest import run_in_background

    with run_in_background(runtime, timeout_s=240) as result:
        _wait_for("the stream to flow", lambda: _progress(sink) >= 50)

        # execute: the roadside node goes away, the stream stalls on `block`
        stalled = _progress(sink)
        _remove_rsu(fleet)
        if stop == "before-it-rejoins":
            runtime.stop("test: done")
        # a node with the same labels joins: the operator restarts there
        fleet.add_node(num_cpus=1, object_store_memory=100 * 2**20, labels=RSU)
        runtime.stop("test: done")

    # assert: drained, nothing lost, nothing twice
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary.stopped_by == "test: done"
    assert summary.identity_holds(), summary.format()
    sent = summary.edges["src.out->mid.in"].sent
    assert _sink_xs(runtime) == list(range(sent))
    assert sent > stalled
    assert summary.edges["src.out->mid.in"].dropped == {}


def test_a_run_whose_lost_operator_never_comes_back_ends_and_accounts_for_it(fleet):
    # prepare: a short restart timeout, so the blocked source gives up on the lost operator
    runtime = Runtime(_pipeline(), placement_timeout_s=3, drain_timeout_s=10)
    runtime.deploy()
    sink = runtime.actors["lost-rsu/out#0"]
    from conftest import run_in_background

    with run_in_background(runtime, timeout_s=120) as result:
        _wait_for("the stream to flow", lambda: _progress(sink) >= 50)

        # execute: the roadside node goes away for good, then the run is stopped
        _remove_rsu(fleet)
        runtime.stop("test: done")

    # assert: ended, the lost operator reported, its inputs dropped as unplaceable and counted
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary.stopped_by == "test: done (drain timed out)"
    assert summary.unplaceable == ["lost-rsu/mid#0"]
    assert summary.identity_holds(), summary.format()
    into_mid = summary.edges["src.out->mid.in"]
    assert into_mid.dropped.get("unplaceable", 0) > 0
    xs = _sink_xs(runtime)
    assert len(xs) == len(set(xs)) and set(xs) <= set(range(into_mid.sent))
