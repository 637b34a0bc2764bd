"""``pipelines.testing.run_local``: the operator contract driven in one process, no Ray.

Time is simulated (``FakeClock``): every figure below follows from the rates
and periods the pipeline declares, not from how fast this machine is.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from operators import (
    PART_SPAN,
    Context,
    Field,
    Lineage,
    MalformedMessage,
    Message,
    Operator,
    Port,
    QoS,
    Sink,
    Source,
)
from pipelines import DeadLetter, EdgeAccount, OperatorSpec, Pipeline
from pipelines._host import Host
from pipelines.testing import FakeClock, ListSink, ListSource, run_local

MS = 1_000_000
S = 1_000_000_000
#: How a dead letter's cause names a contract violation.
MALFORMED = "operators._errors.MalformedMessage: "


# -- operators used by the tests ---------------------------------------------------------------
class Relay(Operator):
    """``in`` → ``out`` unchanged."""

    inputs = ("in",)
    outputs = ("out",)

    def process(self, port, message):
        yield "out", message


class Worker(Operator):
    """Tags each message with the replica that handled it (``ctx.replica``)."""

    inputs = ("in",)
    outputs = ("out",)

    def __init__(self) -> None:
        self.replica = -1
        self.handled: list[tuple[str, int]] = []

    def setup(self, ctx: Context) -> None:
        self.replica = ctx.replica

    def process(self, port, message):
        self.handled.append((message.source, message.seq))
        yield "out", message.derive({**message.payload, "replica": self.replica})


class Flaky(Operator):
    """Raises on the payloads listed in ``fail_on``."""

    inputs = ("in",)
    outputs = ("out",)

    def __init__(self, fail_on: set[int]) -> None:
        self.fail_on = fail_on

    def process(self, port, message):
        if message.payload["x"] in self.fail_on:
            raise ValueError(f"boom on {message.payload['x']}")
        yield "out", message


class Splitter(Operator):
    """Yields ``n`` outputs per input (e.g. one crop per detected box)."""

    inputs = ("in",)
    outputs = ("out",)
    version = "2.1"

    def __init__(self, n: int) -> None:
        self.n = n

    def process(self, port, message):
        for i in range(self.n):
            yield "out", message.derive({"i": i})


class Burst(Source):
    """Emits the given messages all in one poll, then ends."""

    outputs = ("out",)

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.done = False

    def poll(self, now):
        if self.done:
            return None
        self.done = True
        return [("out", m) for m in self.messages]


class Counter(Source):
    """An endless source: one message per poll, forever."""

    outputs = ("out",)

    def __init__(self) -> None:
        self.n = 0

    def poll(self, now):
        self.n += 1
        return [("out", Message("", self.n - 1, now, {"x": self.n - 1}))]


class Fusion(Operator):
    """Fuses each camera frame with the latest lidar scan; the scan goes into the lineage."""

    inputs = ("camera", "lidar")
    outputs = ("fused",)

    def __init__(self) -> None:
        self.lidar: Message | None = None

    def process(self, port, message):
        if port == "lidar":
            self.lidar = message
            return
        merged = () if self.lidar is None else (self.lidar,)
        yield "fused", message.derive({"frame": message.seq}, merged=merged)


class Heartbeat(Operator):
    """Emits a heartbeat on ``beat`` every ``tick_period_ns``; records when it was called."""

    inputs = ("in",)
    outputs = ("beat",)

    def __init__(self, period_ns: int) -> None:
        self.tick_period_ns = period_ns
        self.ticks: list[int] = []
        self.clock_at_tick: list[int] = []
        self.clock = None

    def setup(self, ctx: Context) -> None:
        self.clock = ctx.clock

    def on_tick(self, now):
        self.ticks.append(now)
        self.clock_at_tick.append(self.clock())
        yield "beat", Message("heartbeat", len(self.ticks), now, {"now": now})


class DelayOne(Operator):
    """Holds each message until the next one arrives (a one-frame buffer)."""

    inputs = ("in",)
    outputs = ("out",)

    def __init__(self) -> None:
        self.held: Message | None = None

    def process(self, port, message):
        held, self.held = self.held, message
        if held is not None:
            yield "out", held


class Lifecycle(Sink):
    """A sink that records the calls the runtime makes on it."""

    inputs = ("in",)

    def __init__(self) -> None:
        self.calls: list[str] = []

    def setup(self, ctx):
        self.calls.append("setup")

    def process(self, port, message):
        self.calls.append("process")

    def flush(self):
        self.calls.append("flush")

    def teardown(self):
        self.calls.append("teardown")


def chain(*ops: tuple[str, Operator], items=10, rate_hz=10.0, **kw) -> Pipeline:
    """``src -> op1 -> op2 -> ... -> out`` over ``ListSource([{"x": i}])``."""
    p = Pipeline("t", **kw)
    p.source("src", ListSource([{"x": i} for i in range(items)]), rate_hz=rate_hz)
    previous = "src"
    for name, op in ops:
        p.operator(name, op)
        p.connect(previous, name)
        previous = name
    p.sink("out", ListSink())
    p.connect(previous, "out")
    return p


def xs(messages: list[Message], field: str = "x") -> list:
    return [m.payload[field] for m in messages]


# -- ordering, identity, end of stream -------------------------------------------------------------
def test_messages_arrive_in_order_with_source_identity_and_times():
    # prepare
    p = chain(("relay", Relay()), items=20)

    # execute
    run = run_local(p, clock=FakeClock(start_ns=5 * S))

    # assert
    got = run.sink("out")
    assert xs(got) == list(range(20))
    assert [m.key for m in got] == [("src@local", i, 0) for i in range(20)]
    assert [m.event_ts for m in got] == [i * 100 * MS for i in range(20)]
    assert [m.ingest_ts for m in got] == [5 * S + i * 100 * MS for i in range(20)]
    assert run.summary.sources == {"src": 20}
    assert run.summary.sinks == {"out": 20}
    assert run.summary.stopped_by == "end-of-stream"
    assert run.summary.duration_s == 2.0  # 20 polls at 10 Hz, then the end-of-stream poll
    assert run.dead_letters == []


def test_sink_lifecycle_setup_process_flush_teardown():
    # prepare
    sink = Lifecycle()
    p = Pipeline("t")
    p.source("src", ListSource([{"x": 1}, {"x": 2}]))
    p.sink("out", sink)
    p.connect("src", "out")

    # execute
    run_local(p)

    # assert
    assert sink.calls == ["setup", "process", "process", "flush", "teardown"]


# -- QoS ---------------------------------------------------------------------------------------
def test_higher_qos_class_is_served_first_when_queued():
    # prepare: one poll queues five messages of mixed classes at once
    classes = [QoS.TELEMETRY, QoS.PERCEPTION, QoS.EMERGENCY, QoS.CONTROL, QoS.TELEMETRY]
    burst = [Message("", i, 0, {"x": i}).with_qos(q) for i, q in enumerate(classes)]
    p = Pipeline("qos")
    p.source("src", Burst(burst))
    p.operator("relay", Relay())
    p.sink("out", ListSink())
    p.connect("src", "relay")
    p.connect("relay", "out")

    # execute
    run = run_local(p)

    # assert: emergency, control, perception, then telemetry in arrival order
    got = run.sink("out")
    assert xs(got) == [2, 3, 1, 0, 4]
    assert [m.qos for m in got] == sorted(classes, reverse=True)


def test_emergency_source_overtakes_telemetry_polled_at_the_same_time():
    # prepare
    p = Pipeline("qos")
    telemetry = [Message("tele", i, 0, {"x": i}).with_qos(QoS.TELEMETRY) for i in range(3)]
    alerts = [Message("v2v", i, 0, {"x": 100 + i}).with_qos(QoS.EMERGENCY) for i in range(3)]
    p.source("tele", ListSource(telemetry), rate_hz=10)
    p.source("alerts", ListSource(alerts), rate_hz=10)
    p.sink("out", ListSink())
    p.connect("tele", "out")
    p.connect("alerts", "out")

    # execute
    run = run_local(p)

    # assert
    assert xs(run.sink("out")) == [100, 0, 101, 1, 102, 2]


# -- replicas ------------------------------------------------------------------------------------
def test_round_robin_over_replicas():
    # prepare
    p = Pipeline("rr")
    p.source("src", ListSource([{"x": i} for i in range(10)]))
    p.operator("w", Worker(), replicas=3)
    p.sink("out", ListSink())
    p.connect("src", "w")
    p.connect("w", "out")

    # execute
    run = run_local(p)

    # assert
    assert xs(run.sink("out"), "replica") == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    workers = [h.op for h in run.hosts["w"]]
    assert len({id(w) for w in workers}) == 3  # each replica is its own instance
    assert [len(w.handled) for w in workers] == [4, 3, 3]
    assert [h.replica for h in run.hosts["w"]] == ["0", "1", "2"]


def test_keyed_by_source_sends_each_key_to_one_replica_in_order():
    # prepare
    p = Pipeline("keyed")
    for name in ("cam-a", "cam-b", "cam-c", "cam-d"):
        p.source(name, ListSource([{"x": i} for i in range(6)]), rate_hz=10)
    p.operator("w", Worker(), replicas=2, key_by="source")
    p.sink("out", ListSink())
    for name in ("cam-a", "cam-b", "cam-c", "cam-d"):
        p.connect(name, "w")
    p.connect("w", "out")

    # execute
    run = run_local(p)

    # assert
    got = run.sink("out")
    replicas_of: dict[str, set[int]] = {}
    for m in got:
        replicas_of.setdefault(m.source, set()).add(m.payload["replica"])
    assert sorted(replicas_of) == ["cam-a@local", "cam-b@local", "cam-c@local", "cam-d@local"]
    assert all(len(r) == 1 for r in replicas_of.values())
    for w in (h.op for h in run.hosts["w"]):
        for source in {s for s, _ in w.handled}:
            assert [q for s, q in w.handled if s == source] == list(range(6))


def test_keyed_by_payload_field():
    # prepare
    items = [{"ix": np.int64(i % 3), "x": i} for i in range(12)]
    p = Pipeline("keyed")
    p.source("src", ListSource(items))
    p.operator("w", Worker(), replicas=2, key_by="ix")
    p.sink("out", ListSink())
    p.connect("src", "w")
    p.connect("w", "out")

    # execute
    run = run_local(p)

    # assert
    replicas_of: dict[int, set[int]] = {}
    for m in run.sink("out"):
        replicas_of.setdefault(int(m.payload["ix"]), set()).add(m.payload["replica"])
    assert sorted(replicas_of) == [0, 1, 2]
    assert all(len(r) == 1 for r in replicas_of.values())


def test_per_key_replicas_and_unroutable_keys():
    # prepare: one controller per declared camera; "cam-x" has no replica
    p = Pipeline("city")
    for name in ("cam-a", "cam-b", "cam-x"):
        p.source(name, ListSource([{"x": i} for i in range(4)]), rate_hz=10)
    p.operator(
        "ctl",
        Worker(),
        keys={"cam-b@local": {"edge.node": "rsu-2"}, "cam-a@local": {"edge.node": "rsu-1"}},
    )
    p.sink("out", ListSink())
    for name in ("cam-a", "cam-b", "cam-x"):
        p.connect(name, "ctl")
    p.connect("ctl", "out")

    # execute
    run = run_local(p)

    # assert: replicas follow the order of keys
    got = run.sink("out")
    assert {m.payload["replica"] for m in got if m.source == "cam-b@local"} == {0}
    assert {m.payload["replica"] for m in got if m.source == "cam-a@local"} == {1}
    assert [h.replica for h in run.hosts["ctl"]] == ["cam-b@local", "cam-a@local"]
    assert not any(m.source == "cam-x@local" for m in got)
    unroutable = run.summary.edges["cam-x.out->ctl.in"]
    assert unroutable == EdgeAccount(sent=4, delivered=0, dropped={"unroutable": 4})
    assert run.summary.dropped == {"unroutable": 4}
    assert run.summary.identity_holds()


# -- failures ------------------------------------------------------------------------------
def test_exception_in_process_is_dead_lettered_and_the_stream_continues(caplog):
    # prepare
    p = chain(("f", Flaky({3, 7})))

    # execute
    with caplog.at_level(logging.WARNING, logger="edgeray"):
        run = run_local(p)

    # assert
    assert xs(run.sink("out")) == [0, 1, 2, 4, 5, 6, 8, 9]
    first, second = run.dead_letters
    assert first == DeadLetter(
        operator="f",
        replica="0",
        port="in",
        key=("src@local", 3, 0),
        cause="ValueError: boom on 3",
        message=first.message,
    )
    assert first.message.payload == {"x": 3}
    assert second.cause == "ValueError: boom on 7"
    assert run.summary.dead_lettered == {"f": 2}
    assert run.summary.edges["src.out->f.in"] == EdgeAccount(sent=10, delivered=8, dead_lettered=2)
    assert run.summary.identity_holds()
    assert "dead letter at f#0 port in key ('src@local', 3, 0): ValueError: boom on 3" in (
        caplog.text
    )


def test_message_breaking_the_declared_schema_is_dead_lettered():
    # prepare
    class Detector(Operator):
        """Needs uint8 HxWx3 images on ``frames``."""

        inputs = (Port("frames", {"img": Field("uint8", (None, None, 3))}),)
        outputs = ("out",)

        def process(self, port, message):
            yield "out", message

    items = [
        {"img": np.zeros((2, 2, 3), np.uint8)},
        {"img": np.zeros((2, 2, 3), np.float32)},
        {"img": np.zeros((2, 2), np.uint8)},
        {"image": np.zeros((2, 2, 3), np.uint8)},
        {"img": np.zeros((4, 5, 3), np.uint8)},
    ]
    p = Pipeline("schema")
    p.source("src", ListSource(items))
    p.operator("det", Detector())
    p.sink("out", ListSink())
    p.connect("src", "det.frames")
    p.connect("det", "out")

    # execute
    run = run_local(p)

    # assert
    assert [m.seq for m in run.sink("out")] == [0, 4]
    assert [d.cause for d in run.dead_letters] == [
        f"{MALFORMED}operator 'det#0': payload field 'img' is float32[2, 2, 3], "
        "expected uint8[None, None, 3]",
        f"{MALFORMED}operator 'det#0': payload field 'img' is uint8[2, 2], "
        "expected uint8[None, None, 3]",
        f"{MALFORMED}operator 'det#0': payload field 'img' missing or not an array "
        "(expected uint8)",
    ]
    assert [d.key for d in run.dead_letters] == [("src@local", i, 0) for i in (1, 2, 3)]
    assert run.summary.dead_lettered == {"det": 3}
    assert run.summary.identity_holds()


def test_operator_yielding_a_non_message_is_dead_lettered_with_how_to_fix():
    # prepare
    class Sloppy(Operator):
        """Returns a dict instead of a Message for odd inputs."""

        inputs = ("in",)
        outputs = ("out",)

        def process(self, port, message):
            if message.payload["x"] % 2:
                yield "out", {"x": message.payload["x"]}
            else:
                yield "out", message

    p = chain(("sloppy", Sloppy()), items=4)

    # execute
    run = run_local(p)

    # assert
    assert xs(run.sink("out")) == [0, 2]
    assert [d.cause for d in run.dead_letters] == [
        f"{MALFORMED}operator 'sloppy#0': output 0 is ('out', {{'x': {x}}}); return "
        "(output_port, Message) pairs, e.g. yield 'out', message.derive({...})"
        for x in (1, 3)
    ]
    assert run.summary.edges["src.out->sloppy.in"].dead_lettered == 2
    assert run.summary.identity_holds()


def test_output_on_an_undeclared_port_is_dead_lettered():
    # prepare
    class Typo(Operator):
        """Yields on ``outt``."""

        inputs = ("in",)
        outputs = ("out",)

        def process(self, port, message):
            yield "outt", message

    run = run_local(chain(("typo", Typo()), items=2))

    # assert
    assert run.sink("out") == []
    assert run.dead_letters[0].cause == (
        f"{MALFORMED}operator 'typo#0': output on undeclared port 'outt' (declared: out)"
    )


def test_host_dead_letters_a_non_message_and_an_undeclared_input():
    # prepare
    spec = OperatorSpec("k", ListSink(), "sink")
    host = Host(spec, 0, Context(), wall=FakeClock())

    # execute
    not_a_message = host.process("in", {"x": 1})
    wrong_port = host.process("side", Message("s", 0, 0))

    # assert
    assert not_a_message == [] and wrong_port == []
    assert host.dead_lettered == 2
    first, second = host.dead_letters
    assert first.cause == f"{MALFORMED}operator 'k#0': expected a Message on 'in', got dict"
    assert first.key is None and first.message == {"x": 1}
    assert second.cause == (
        f"{MALFORMED}operator 'k#0': message on undeclared input 'side' (declared: in)"
    )
    assert second.key == ("s", 0, 0)
    assert isinstance(MalformedMessage("x"), Exception)


def test_source_that_raises_is_dead_lettered_and_polled_again():
    # prepare
    class Glitchy(Source):
        """Fails on its second poll."""

        outputs = ("out",)

        def __init__(self):
            self.polls = 0

        def poll(self, now):
            self.polls += 1
            if self.polls == 2:
                raise OSError("camera unplugged")
            if self.polls > 4:
                return None
            return [("out", Message("", self.polls, now, {"x": self.polls}))]

    p = Pipeline("t")
    p.source("cam", Glitchy())
    p.sink("out", ListSink())
    p.connect("cam", "out")

    # execute
    run = run_local(p)

    # assert
    assert xs(run.sink("out")) == [1, 3, 4]
    [dead] = run.dead_letters
    assert (dead.port, dead.key, dead.cause) == ("<poll>", None, "OSError: camera unplugged")


# -- stamping, parts, lineage ---------------------------------------------------------------------
def test_outputs_are_stamped_with_producer_version_and_part_numbers():
    # prepare: each frame yields 3 boxes, each box 2 crops
    p = chain(("boxes", Splitter(3)), ("crops", Splitter(2)), items=2)

    # execute
    run = run_local(p)

    # assert
    got = run.sink("out")
    assert len(got) == 12
    assert {(m.meta.producer, m.meta.version) for m in got} == {("crops", "2.1")}
    assert [m.key for m in got[:6]] == [
        ("src@local", 0, box * PART_SPAN + crop) for box in range(3) for crop in range(2)
    ]
    assert len({m.key for m in got}) == 12
    assert run.summary.edges["crops.out->out.in"].duplicates == 0


def test_single_output_keeps_the_part_and_the_producer_is_the_last_operator():
    # prepare
    p = chain(("relay", Relay()), items=2)

    # execute
    run = run_local(p)

    # assert
    assert [(m.part, m.meta.producer, m.meta.version) for m in run.sink("out")] == [
        (0, "relay", "1"),
        (0, "relay", "1"),
    ]


def test_source_outputs_are_stamped_by_the_source():
    # prepare
    p = Pipeline("t")
    p.source("cam", ListSource([{"x": 0}]))
    p.sink("out", ListSink())
    p.connect("cam", "out")

    # execute
    [m] = run_local(p).sink("out")

    # assert
    assert (m.source, m.meta.producer, m.meta.version) == ("cam@local", "cam", "1")


def test_lineage_lists_merged_inputs():
    # prepare
    p = Pipeline("fusion")
    p.source("lidar", ListSource([{"points": np.zeros((4, 3))} for _ in range(3)]), rate_hz=10)
    p.source("camera", ListSource([{"img": np.zeros((2, 2, 3))} for _ in range(3)]), rate_hz=10)
    p.operator("fusion", Fusion())
    p.sink("out", ListSink())
    p.connect("lidar", "fusion.lidar")
    p.connect("camera", "fusion.camera")
    p.connect("fusion", "out")

    # execute
    run = run_local(p)

    # assert: each frame inherits the camera's identity and lists the lidar scan
    got = run.sink("out")
    assert [m.key for m in got] == [("camera@local", i, 0) for i in range(3)]
    assert [m.meta.lineage for m in got] == [(Lineage("lidar@local", i, 0),) for i in range(3)]
    assert all(m.meta.producer == "fusion" for m in got)


def test_derive_keeps_earlier_lineage_and_inherits_identity():
    # prepare
    parent = Message("cam", 4, 99, {"a": 1}, part=2, ingest_ts=7, truth={"t": 1})
    radar = Message("radar", 8, 98, part=1)
    lidar = Message("lidar", 3, 97)

    # execute
    once = parent.derive({"b": 2}, merged=(radar,))
    twice = once.derive({"c": 3}, merged=(lidar,), qos=QoS.CONTROL)

    # assert
    assert twice.meta.lineage == (Lineage("radar", 8, 1), Lineage("lidar", 3, 0))
    assert (twice.key, twice.event_ts, twice.ingest_ts, twice.truth) == (
        ("cam", 4, 2),
        99,
        7,
        {"t": 1},
    )
    assert twice.qos is QoS.CONTROL and once.qos is QoS.PERCEPTION


# -- time: ticks, until_ns, max_polls ------------------------------------------------------------
def test_on_tick_runs_at_its_period_in_wall_time():
    # prepare: 10 frames at 10 Hz (wall 0 .. 0.9 s, end of stream at 1.0 s), ticks every 250 ms
    heartbeat = Heartbeat(250 * MS)
    p = Pipeline("wall")
    p.source("src", ListSource([{"x": i} for i in range(10)], period_ns=S), rate_hz=10)
    p.operator("hb", heartbeat)
    p.sink("out", ListSink())
    p.connect("src", "hb")
    p.connect("hb.beat", "out")

    # execute
    run = run_local(p)

    # assert
    assert heartbeat.ticks == [250 * MS, 500 * MS, 750 * MS, 1000 * MS]
    assert heartbeat.clock_at_tick == heartbeat.ticks  # ctx.clock is the same clock
    assert xs(run.sink("out"), "now") == heartbeat.ticks
    assert all(m.meta.producer == "hb" for m in run.sink("out"))
    # tick outputs originate at the ticking operator: ingest time is when it ticked
    assert [m.ingest_ts for m in run.sink("out")] == heartbeat.ticks


def test_tick_outputs_without_a_source_are_named_after_the_operator():
    class Anonymous(Heartbeat):
        def on_tick(self, now):
            yield "beat", Message("", 0, now, {"now": now})

    p = Pipeline("anon")
    p.source("src", ListSource([{"x": i} for i in range(3)], period_ns=S), rate_hz=10)
    p.operator("hb", Anonymous(100 * MS))
    p.sink("out", ListSink())
    p.connect("src", "hb")
    p.connect("hb.beat", "out")

    run = run_local(p)

    assert {m.source for m in run.sink("out")} == {"hb@local"}


def test_on_tick_runs_at_its_period_in_event_time():
    # prepare: event time advances 1 s per frame while wall time advances 10 ms
    heartbeat = Heartbeat(2 * S)
    p = Pipeline("replay", time="event")
    p.source("src", ListSource([{"x": i} for i in range(10)], period_ns=S), rate_hz=100)
    p.operator("hb", heartbeat)
    p.sink("out", ListSink())
    p.connect("src", "hb")
    p.connect("hb.beat", "out")

    # execute
    run = run_local(p)

    # assert: event times 0..9 s; ticks every 2 s of event time
    assert heartbeat.ticks == [2 * S, 4 * S, 6 * S, 8 * S]
    assert heartbeat.clock_at_tick == heartbeat.ticks
    assert run.summary.duration_s == pytest.approx(0.1)  # 10 polls at 100 Hz of wall time


def test_event_time_ticks_when_the_source_is_slower_than_the_tick_in_wall_time():
    # prepare: a source polled every 10 s of wall time, ticks every 2 s of event time
    heartbeat = Heartbeat(2 * S)
    p = Pipeline("replay", time="event")
    p.source("src", ListSource([{"x": i} for i in range(5)], period_ns=3 * S), rate_hz=0.1)
    p.operator("hb", heartbeat)
    p.sink("out", ListSink())
    p.connect("src", "hb")
    p.connect("hb.beat", "out")

    # execute
    run = run_local(p)

    # assert: event times 0, 3, 6, 9, 12 s; ticks due at 2, 4, ... run when event time passes,
    # each given its own due time while the clock reads the event time that let it run
    assert heartbeat.ticks == [2 * S, 4 * S, 6 * S, 8 * S, 10 * S, 12 * S]
    assert heartbeat.clock_at_tick == [3 * S, 6 * S, 6 * S, 9 * S, 12 * S, 12 * S]
    assert len(run.sink("out")) == 6


def test_event_time_ticks_start_at_the_first_event():
    # prepare: a recording whose event times are wall-clock nanoseconds of 2024
    start = 1_715_000_000 * S
    frames = [Message("rec", i, start + i * S, {"x": i}) for i in range(5)]
    heartbeat = Heartbeat(2 * S)
    p = Pipeline("replay", time="event")
    p.source("src", ListSource(frames), rate_hz=100)
    p.operator("hb", heartbeat)
    p.sink("out", ListSink())
    p.connect("src", "hb")
    p.connect("hb.beat", "out")

    # execute
    run_local(p)

    # assert
    assert heartbeat.ticks == [start + 2 * S, start + 4 * S]


def test_until_ns_stops_an_endless_source():
    # prepare
    p = Pipeline("endless")
    p.source("src", Counter(), rate_hz=10)
    p.sink("out", ListSink())
    p.connect("src", "out")

    # execute
    run = run_local(p, until_ns=S)

    # assert: polls at 0, 0.1, ..., 1.0 s
    assert run.summary.stopped_by == "until_ns"
    assert xs(run.sink("out")) == list(range(11))
    assert run.summary.duration_s == 1.0
    assert run.summary.identity_holds()


def test_max_polls_stops_an_endless_source():
    # prepare
    p = Pipeline("endless")
    p.source("src", Counter())  # no rate: as fast as it can
    p.sink("out", ListSink())
    p.connect("src", "out")

    # execute
    run = run_local(p, max_polls=25)

    # assert
    assert run.summary.stopped_by == "max_polls"
    assert run.summary.sources == {"src": 25}
    assert len(run.sink("out")) == 25


# -- accounting, de-dup, latency -------------------------------------------------------------------
def test_accounting_identity_holds_per_edge():
    # prepare: dead letters on one branch, unroutable drops on another, duplicates at the sink
    items = [Message("cam", i % 4, 0, {"x": i, "k": "a" if i % 3 else "z"}) for i in range(12)]
    p = Pipeline("accounting")
    p.source("src", ListSource(items))
    p.operator("f", Flaky({5, 6}))
    p.operator("keyed", Relay(), keys={"a": {}}, key_by="k")
    p.sink("out", ListSink())
    p.connect("src", "f")
    p.connect("src", "keyed")
    p.connect("f", "out")
    p.connect("keyed", "out")

    # execute
    run = run_local(p)

    # assert
    edges = run.summary.edges
    assert edges["src.out->f.in"] == EdgeAccount(sent=12, delivered=10, dead_lettered=2)
    assert edges["src.out->keyed.in"] == EdgeAccount(
        sent=12, delivered=8, dropped={"unroutable": 4}
    )
    assert edges["f.out->out.in"].sent == 10
    assert edges["f.out->out.in"].duplicates == 6
    assert edges["keyed.out->out.in"].duplicates == 8
    assert all(a.holds() for a in edges.values())
    assert all(a.in_flight == 0 for a in edges.values())
    assert run.summary.identity_holds()
    assert run.summary.sinks == {"out": 4}  # four unique (source, seq, part)
    assert "accounting (sent = delivered + dropped + dead-lettered + in-flight) holds" in (
        run.summary.format()
    )


def test_sink_deduplicates_by_source_seq_part_and_counts_duplicates():
    # prepare: a re-sent message and a second part of the same seq
    items = [
        Message("cam", 0, 0, {"x": "a"}),
        Message("cam", 1, 0, {"x": "b"}),
        Message("cam", 0, 0, {"x": "a again"}),
        Message("cam", 1, 0, {"x": "b part 1"}, part=1),
        Message("lidar", 0, 0, {"x": "other source"}),
    ]
    p = Pipeline("dedup")
    p.source("src", ListSource(items))
    p.sink("out", ListSink())
    p.connect("src", "out")

    # execute
    run = run_local(p)

    # assert
    assert xs(run.sink("out")) == ["a", "b", "b part 1", "other source"]
    account = run.summary.edges["src.out->out.in"]
    assert account == EdgeAccount(sent=5, delivered=5, duplicates=1)
    assert run.hosts["out"][0].duplicates == 1
    assert run.summary.messages == 4


def test_end_to_end_latency_is_measured_from_ingest_time_not_event_time():
    # prepare: event time runs 1 s per frame, the source is polled at 10 Hz of wall time,
    # and the operator holds each frame until the next arrives: 100 ms of wall time
    p = Pipeline("latency")
    p.source("src", ListSource([{"x": i} for i in range(5)], period_ns=S), rate_hz=10)
    p.operator("delay", DelayOne())
    p.sink("out", ListSink())
    p.connect("src", "delay")
    p.connect("delay", "out")

    # execute
    run = run_local(p, clock=FakeClock(start_ns=1_000 * S))

    # assert
    assert xs(run.sink("out")) == [0, 1, 2, 3]
    assert list(run.summary.latency_ms) == [100.0, 100.0, 100.0, 100.0]
    assert run.summary.latency_percentile(99) == 100.0


def test_latency_is_zero_when_nothing_waits():
    # prepare
    p = chain(("relay", Relay()), items=3)

    # execute
    run = run_local(p)

    # assert
    assert list(run.summary.latency_ms) == [0.0, 0.0, 0.0]


def test_run_local_validates_first():
    # prepare
    p = chain(("relay", Relay()))
    p.connect("relay.out", "nowhere.in")

    # execute / assert
    with pytest.raises(Exception, match=r"no operator 'nowhere' in the pipeline"):
        run_local(p)


def test_sink_keeps_same_keyed_messages_arriving_on_different_ports():
    # prepare: a command derived from a reading shares its key; a sink records both streams
    class Both(ListSink):
        inputs = ("readings", "commands")

    p = Pipeline("two-streams")
    p.source("src", ListSource([{"x": i} for i in range(3)]), rate_hz=10)
    p.operator("cmd", Relay())
    p.sink("log", Both())
    p.connect("src", "cmd")
    p.connect("src", "log.readings")
    p.connect("cmd", "log.commands")

    # execute
    run = run_local(p)

    # assert: nothing discarded as a duplicate, each key recorded once per port
    assert len(run.sink("log")) == 6
    assert run.summary.edges["cmd.out->log.commands"].duplicates == 0
