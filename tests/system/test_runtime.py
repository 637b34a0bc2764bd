"""The Ray runtime on a local cluster of labeled nodes (vehicle, rsu, hub)."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest
import ray

from cluster._ray_config import WORKER_NICENESS
from operators import Message, Operator, QoS, Resources, Source
from pipelines import Pipeline
from pipelines._plan import TOPIC_NAMESPACE
from pipelines._runtime import Runtime
from pipelines.testing import ListSink, ListSource

pytestmark = pytest.mark.system
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Pass(Operator):
    """Passes every message on unchanged. Input ``in``, output ``out``."""

    inputs = ("in",)
    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def process(self, port, message):
        yield "out", message


class SlowSink(ListSink):
    """A sink whose every message costs ``cost_s`` of (simulated) work."""

    resources = Resources(num_cpus=0.1)

    def __init__(self, cost_s: float = 0.01) -> None:
        super().__init__()
        self.cost_s = cost_s

    def process(self, port, message):
        time.sleep(self.cost_s)  # stands for a slow model, not for synchronisation
        return super().process(port, message)


class Poison(Operator):
    """Raises on ``x == bad``; passes everything else."""

    inputs = ("in",)
    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, bad: int) -> None:
        self.bad = bad

    def process(self, port, message):
        if message.payload["x"] == self.bad:
            raise ValueError(f"poisoned x={self.bad}")
        yield "out", message


class Counter(Source):
    """Counts up forever on ``out``; remembers feedback received on ``cmd``."""

    inputs = ("cmd",)
    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, *, limit: int | None = None, qos_at: dict[int, QoS] | None = None) -> None:
        self.n = 0
        self.limit = limit
        self.qos_at = qos_at or {}
        self.commands: list[int] = []

    def poll(self, now):
        if self.limit is not None and self.n >= self.limit:
            return None
        payload = {"x": self.n, "last_cmd": self.commands[-1] if self.commands else -1}
        m = Message("", self.n, self.n * 1_000_000, payload)
        m = m.with_qos(self.qos_at.get(self.n, QoS.PERCEPTION))
        self.n += 1
        return [("out", m)]

    def process(self, port, message):
        self.commands.append(int(message.payload["x"]))
        return ()


class Frames(Source):
    """``count`` 640x480x3 uint8 frames on ``frames``."""

    outputs = ("frames",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, count: int) -> None:
        self.count, self.n = count, 0

    def poll(self, now):
        if self.n >= self.count:
            return None
        image = np.full((480, 640, 3), self.n % 256, np.uint8)
        self.n += 1
        return [("frames", Message("", self.n, self.n, {"image": image}))]


def xs(summary_stats, sink: str) -> list[int]:
    return [int(m.payload["x"]) for m in sink_messages(summary_stats, sink)]


def sink_messages(stats, sink: str) -> list[Message]:
    return [m for s in stats if s["operator"] == sink for m in s["snapshot"]]


def sink_node(name, **kw):
    return {"placement": {"edge.role": "hub"}, **kw}


def test_actors_land_on_nodes_matching_their_selectors(ray_cluster):
    p = Pipeline("placed")
    p.source("src", Counter(limit=10), rate_hz=100, placement={"edge.role": "vehicle"})
    p.operator("mid", Pass(), replicas=2, placement={"edge.zone": "north", "edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "in(hub,cloud)"})
    p.connect("src", "mid")
    p.connect("mid", "out")
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    roles = {name: info["labels"]["edge.role"] for name, info in runtime.placed.items()}
    assert roles == {
        "placed/src#0": "vehicle",
        "placed/mid#0": "rsu",
        "placed/mid#1": "rsu",
        "placed/out#0": "hub",
    }
    assert summary.sinks == {"out": 10}
    assert summary.identity_holds()


class Yielding(Pass):
    """``Pass`` that gives way on shared cores (``Resources.niceness``)."""

    resources = Resources(num_cpus=0.1, niceness=3)


def test_an_operator_s_niceness_is_added_to_every_thread_of_its_replica(ray_cluster):
    p = Pipeline("niceness")
    p.source("src", Counter(limit=20), rate_hz=200)
    p.operator("plain", Pass())
    p.operator("yields", Yielding())
    p.sink("out", ListSink())
    p.connect("src", "plain")
    p.connect("plain", "yields")
    p.connect("yields", "out")
    runtime = Runtime(p)
    runtime.deploy()
    base = runtime.placed["niceness/plain#0"]["nice"]
    assert base == WORKER_NICENESS  # the fleet's Ray setting, not Ray's default 15
    yields = runtime.placed["niceness/yields#0"]
    assert yields["nice"] == min(19, base + 3)
    threads = os.listdir(f"/proc/{yields['pid']}/task")  # the local cluster: this machine
    assert {os.getpriority(os.PRIO_PROCESS, int(t)) for t in threads} == {min(19, base + 3)}
    runtime.start()
    runtime.wait(timeout_s=60)
    summary = runtime.finish()
    assert summary.sinks == {"out": 20} and summary.identity_holds()


def test_slow_sink_bounds_in_flight_and_block_loses_nothing(ray_cluster):
    p = Pipeline("backpressure")
    p.source("src", Counter(limit=120), placement={"edge.role": "vehicle"})  # as fast as allowed
    p.sink("out", SlowSink(0.005), placement={"edge.role": "hub"})
    p.connect("src", "out", policy="block", window=4)
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=120)
    source = next(s for s in runtime.stats if s["operator"] == "src")
    assert source["peak_in_flight"]["src.out->out.in"] <= 2 * 4
    assert xs(runtime.stats, "out") == list(range(120))
    assert summary.edges["src.out->out.in"].dropped == {}
    assert summary.identity_holds()


def test_latest_only_drops_and_counts(ray_cluster):
    p = Pipeline("latest")
    p.source("src", Counter(limit=100), placement={"edge.role": "vehicle"})
    p.sink("out", SlowSink(0.01), placement={"edge.role": "hub"})
    p.connect("src", "out", policy="latest-only", window=1)
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=120)
    account = summary.edges["src.out->out.in"]
    got = xs(runtime.stats, "out")
    assert account.sent == 100
    assert account.dropped["latest-only"] == 100 - len(got) > 0
    assert got == sorted(got) and got[-1] == 99  # the newest always survives
    assert summary.identity_holds()


def test_emergency_overtakes_a_full_queue_of_frames(ray_cluster):
    p = Pipeline("qos")
    p.source(
        "src", Counter(limit=40, qos_at={30: QoS.EMERGENCY}), placement={"edge.role": "vehicle"}
    )
    p.sink("out", SlowSink(0.02), placement={"edge.role": "hub"})
    p.connect("src", "out", policy="block", window=8)
    runtime = Runtime(p)
    runtime.run(timeout_s=120)
    got = xs(runtime.stats, "out")
    assert sorted(got) == list(range(40))
    assert got.index(30) < 29  # served ahead of frames queued before it


def test_killing_an_operator_mid_stream_loses_nothing(ray_cluster):
    n = 300
    p = Pipeline("kill")
    p.source("src", Counter(limit=n), rate_hz=300, placement={"edge.role": "vehicle"})
    p.operator("mid", Pass(), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "mid", window=8)
    p.connect("mid", "out", window=8)
    runtime = Runtime(p)
    runtime.deploy()
    runtime.start()
    sink = runtime.actors["kill/out#0"]
    _wait_progress(sink, n // 4)  # the stream is flowing
    ray.kill(runtime.actors["kill/mid#0"], no_restart=False)
    runtime.wait(timeout_s=120)
    summary = runtime.finish()
    got = xs(runtime.stats, "out")
    assert sorted(got) == list(range(n))  # nothing lost, no duplicates recorded
    assert summary.identity_holds()
    assert summary.edges["src.out->mid.in"].resent > 0


def test_poisoned_message_is_dead_lettered_and_stream_continues(ray_cluster):
    p = Pipeline("poison")
    p.source("src", ListSource([{"x": i} for i in range(20)]), placement={"edge.role": "vehicle"})
    p.operator("check", Poison(bad=7), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "check")
    p.connect("check", "out")
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    assert xs(runtime.stats, "out") == [i for i in range(20) if i != 7]
    assert summary.dead_lettered == {"check": 1}
    assert summary.edges["src.out->check.in"].dead_lettered == 1
    check = next(s for s in runtime.stats if s["operator"] == "check")
    assert "ValueError: poisoned x=7" in check["dead_letters"][0][2]
    assert summary.identity_holds()


def test_frames_travel_by_reference(ray_cluster):
    p = Pipeline("byref")
    p.source("cam", Frames(12), placement={"edge.role": "vehicle"})
    p.operator("a", Pass(), placement={"edge.role": "rsu"})
    p.operator("b", Pass(), placement={"edge.role": "hub"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("cam", "a")
    p.connect("a", "b")
    p.connect("b", "out")
    runtime = Runtime(p)
    runtime.run(timeout_s=60)
    puts = {s["operator"]: s["puts"] for s in runtime.stats}
    assert puts == {"cam": 12, "a": 0, "b": 0, "out": 0}
    images = [m.payload["image"] for m in sink_messages(runtime.stats, "out")]
    assert len(images) == 12 and images[3].shape == (480, 640, 3)


def test_feedback_edge_delivers(ray_cluster):
    p = Pipeline("feedback")
    p.source("src", Counter(limit=30), rate_hz=100, placement={"edge.role": "vehicle"})
    p.operator("ctl", Pass(), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "ctl")
    p.connect("ctl", "out")
    p.connect("ctl.out", "src.cmd", feedback=True, policy="latest-only", window=1)
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    last_cmds = [int(m.payload["last_cmd"]) for m in sink_messages(runtime.stats, "out")]
    assert max(last_cmds) >= 0  # the source saw commands sent back along the feedback edge
    assert summary.identity_holds()


def test_topic_between_two_pipelines(ray_cluster):
    sub = Pipeline("listener")
    sub.sink("inbox", ListSink(), placement={"edge.role": "hub"})
    sub.subscribe("v2v/emergency", "inbox")
    listener = Runtime(sub)  # each run in its own namespace: topics still connect them
    listener.deploy()
    listener.start()

    pub = Pipeline("talker")
    pub.source("src", ListSource([{"x": i} for i in range(10)]), placement={"edge.role": "vehicle"})
    pub.operator("alert", Pass(), placement={"edge.role": "vehicle"})
    pub.connect("src", "alert")
    pub.publish("alert.out", "v2v/emergency")
    sink = listener.actors["listener/inbox#0"]
    Runtime(pub).run(timeout_s=60)
    broker = ray.get_actor("edgeray/topic/v2v/emergency", namespace=TOPIC_NAMESPACE)
    _wait_progress(sink, 10, lambda: ray.get(broker.accounts.remote()))
    listener.stop()
    listener.wait(timeout_s=30)
    listener.finish()
    assert sorted(xs(listener.stats, "inbox")) == list(range(10))


def test_stop_drains_and_flushes(ray_cluster):
    p = Pipeline("stopper")
    p.source("src", Counter(), rate_hz=200, placement={"edge.role": "vehicle"})  # endless
    p.sink("out", SlowSink(0.002), placement={"edge.role": "hub"})
    p.connect("src", "out", window=8)
    runtime = Runtime(p)
    runtime.deploy()
    sink = runtime.actors["stopper/out#0"]
    stopper = threading.Thread(
        target=lambda: (_wait_progress(sink, 50), runtime.stop("test")), daemon=True
    )
    stopper.start()
    summary = runtime.run(timeout_s=120)
    account = summary.edges["src.out->out.in"]
    assert summary.stopped_by == "test"
    assert account.in_flight == 0 and account.sent == account.delivered
    assert xs(runtime.stats, "out") == list(range(account.sent))


def _wait_progress(actor, n: int, explain=lambda: "", timeout_s: float = 60) -> None:
    """Poll an actor's processed count (a state query, not a sleep) until it reaches ``n``."""
    deadline = time.monotonic() + timeout_s
    while (got := ray.get(actor.progress.remote())) < n:
        assert time.monotonic() < deadline, f"only {got} of {n} processed: {explain()}"


def test_keyed_replicas_with_their_own_placement(ray_cluster):
    items = [{"x": i, "zone": ["north", "hub"][i % 2]} for i in range(20)]
    p = Pipeline("keyed")
    p.source("src", ListSource(items), placement={"edge.role": "vehicle"})
    p.operator(
        "per_zone",
        Pass(),
        key_by="zone",
        keys={"north": {"edge.zone": "north"}, "hub": {"edge.role": "hub"}},
    )
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "per_zone")
    p.connect("per_zone", "out")
    runtime = Runtime(p)
    summary = runtime.run(timeout_s=60)
    assert runtime.placed["keyed/per_zone#north"]["labels"]["edge.zone"] == "north"
    assert runtime.placed["keyed/per_zone#hub"]["labels"]["edge.role"] == "hub"
    processed = {s["actor"]: s["processed"] for s in runtime.stats}
    assert processed["keyed/per_zone#north"] == processed["keyed/per_zone#hub"] == 10
    assert summary.sinks == {"out": 20}


def test_unplaceable_operator_is_reported_and_its_inputs_dropped(ray_cluster):
    @ray.remote(num_cpus=0, resources={"camera": 1})
    class CameraHog:
        def ping(self):
            return True

    hog = CameraHog.remote()
    ray.get(hog.ping.remote())  # the only camera is now taken
    try:

        class NeedsCamera(Pass):
            resources = Resources(num_cpus=0.1, custom={"camera": 1})

        p = Pipeline("nocamera")
        p.source("src", Counter(limit=20), placement={"edge.role": "rsu"})
        p.operator("cam_op", NeedsCamera())
        p.sink("out", ListSink(), placement={"edge.role": "hub"})
        p.connect("src", "cam_op")
        p.connect("cam_op", "out")
        summary = Runtime(p, placement_timeout_s=3).run(timeout_s=60)
    finally:
        ray.kill(hog)
    assert summary.unplaceable == ["nocamera/cam_op#0"]
    assert summary.edges["src.out->cam_op.in"].dropped == {"unplaceable": 20}
    assert summary.identity_holds()
