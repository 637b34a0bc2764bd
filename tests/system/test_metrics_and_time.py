"""Runtime metrics in Prometheus, and ticks, deadlines and rate limits in event and wall time."""

from __future__ import annotations

import re
import sys
import time
import urllib.request

import pytest
import ray

from cluster.rollout import ReplicaVersion
from operators import Message, Operator, Resources, Source
from pipelines import Pipeline
from pipelines._runtime import Runtime
from pipelines.testing import ListSink

pytestmark = pytest.mark.system
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MS = 1_000_000
SECOND = 1_000_000_000


class Endless(Source):
    """Counts up forever on ``out``."""

    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def __init__(self) -> None:
        self.n = 0

    def poll(self, now):
        self.n += 1
        return [("out", Message("", self.n, self.n * MS, {"x": self.n}))]


class Scripted(Source):
    """Emits one message per listed event time (ns), in list order, as fast as polled."""

    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, event_times: list[int]) -> None:
        self.event_times, self.n = list(event_times), 0

    def poll(self, now):
        if self.n >= len(self.event_times):
            return None
        ts = self.event_times[self.n]
        self.n += 1
        return [("out", Message("", self.n, ts, {"x": self.n, "t": ts}))]


class Ticker(Operator):
    """Counts messages; every tick (1 s) emits one message carrying the tick time."""

    inputs = ("in",)
    outputs = ("ticks",)
    tick_period_ns = SECOND
    resources = Resources(num_cpus=0.1)

    def __init__(self) -> None:
        self.ticks = 0

    def process(self, port, message):
        return ()

    def on_tick(self, now):
        self.ticks += 1
        yield "ticks", Message("ticker", self.ticks, now, {"now": now})


def _series(text: str, name: str) -> list[dict[str, str]]:
    """Tag sets of every sample of ``name`` in Prometheus text."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            tags = line[len(name) + 1 : line.rindex("}")]
            found.append(dict(re.findall(r'(\w+)="([^"]*)"', tags)))
    return found


def _metrics_url(node_id: str) -> str:
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


def _wait_for_series(url: str, wanted: dict[str, dict[str, str]], timeout_s: float = 30) -> str:
    """Re-read ``url`` until every ``name`` has a sample with the ``tags`` wanted for it."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        missing = [
            name
            for name, tags in wanted.items()
            if not any(tags.items() <= s.items() for s in _series(text, name))
        ]
        if not missing:
            return text
        assert time.monotonic() < deadline, f"{missing} not exported at {url} with {wanted}"


def test_metrics_are_exported_with_pipeline_operator_and_version_tags(ray_cluster):
    p = Pipeline("metrics")
    p.source("src", Endless(), rate_hz=200, placement={"edge.role": "vehicle"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "out", rate_hz=20)  # most messages are dropped as 'rate-limit'
    edge = "src.out->out.in"
    runtime = Runtime(p)
    runtime.deploy()
    runtime.start()
    try:
        # a replica's version: operator code version + model + config (cluster.rollout)
        version = {name: ReplicaVersion.of(p.specs[name].operator).label for name in p.specs}
        assert version["out"].startswith("1+c")
        base = {"pipeline": "metrics"}
        sink = {**base, "operator": "out", "version": version["out"]}
        _wait_for_series(
            _metrics_url(runtime.placed["metrics/out#0"]["node_id"]),
            {
                "ray_edgeray_messages_in_total": {**sink, "port": "in"},
                "ray_edgeray_processing_ms_bucket": sink,
                "ray_edgeray_e2e_latency_ms_bucket": sink,
                "ray_edgeray_e2e_latency_ms_count": sink,
            },
        )
        src = {**base, "operator": "src", "version": version["src"]}
        drop = {**src, "reason": "rate-limit", "edge": edge}
        _wait_for_series(
            _metrics_url(runtime.placed["metrics/src#0"]["node_id"]),
            {"ray_edgeray_messages_out_total": src, "ray_edgeray_dropped_total": drop},
        )
    finally:
        runtime.stop("test")
        runtime.wait(timeout_s=60)
        summary = runtime.finish()
    assert summary.edges[edge].dropped["rate-limit"] > 0
    assert summary.identity_holds()


def test_event_time_ticks_follow_the_sources_clock(ray_cluster):
    p = Pipeline("event-ticks", time="event")
    times = [k * 100 * MS for k in range(51)]  # 0 .. 5 s of event time, 100 ms apart
    p.source("src", Scripted(times), placement={"edge.role": "vehicle"})  # as fast as it can
    p.operator("tick", Ticker(), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "tick")
    p.connect("tick.ticks", "out")
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    ticks = [m.payload["now"] for s in runtime.stats if s["operator"] == "out"
             for m in s["snapshot"]]  # fmt: skip
    assert sorted(ticks) == [k * SECOND for k in range(1, 6)]  # one tick per event-time second
    assert summary.edges["src.out->tick.in"].delivered == 51
    assert summary.identity_holds()


def test_event_time_deadline_drops_what_is_older_than_the_newest_event(ray_cluster):
    p = Pipeline("event-deadline", time="event")
    in_order = [k * 100 * MS for k in range(21)]  # up to 2 s
    late = [500 * MS, 1000 * MS]  # 1.5 s behind the newest (dropped), exactly 1 s (kept)
    p.source("src", Scripted([*in_order, *late, 2100 * MS]), placement={"edge.role": "vehicle"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "out", deadline_ms=1000)
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    got = [m.payload["t"] for s in runtime.stats if s["operator"] == "out" for m in s["snapshot"]]
    assert got == [*in_order, 1000 * MS, 2100 * MS]
    account = summary.edges["src.out->out.in"]
    assert account.dropped == {"deadline": 1}
    assert account.sent == 24 and summary.identity_holds()


def test_wall_time_rate_limit_drops_and_the_accounting_holds(ray_cluster):
    p = Pipeline("wall-rate")
    p.source("src", Scripted(list(range(200))), placement={"edge.role": "vehicle"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "out", rate_hz=10)
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    account = summary.edges["src.out->out.in"]
    assert account.sent == 200
    assert account.dropped["rate-limit"] > 0
    assert account.delivered == summary.sinks["out"] == 200 - account.dropped["rate-limit"]
    assert summary.identity_holds()
