"""Replay at recorded pace in an event-time pipeline on the Ray cluster: nothing stalls.

The source actor polls on wall time in both time modes, so the recorded pace
advances although the pipeline's clock is the replayed event time; ticks
downstream still follow event time.
"""

from __future__ import annotations

import sys

import pytest
import ray

from operators import Message, Operator, Resources
from operators.recording import Replay, write_recording
from pipelines import Pipeline
from pipelines._runtime import Runtime
from pipelines.testing import ListSink

pytestmark = pytest.mark.system
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MS = 1_000_000


class Ticker(Operator):
    """Every tick (250 ms) emits one message on ``ticks`` carrying the tick time."""

    inputs = ("in",)
    outputs = ("ticks",)
    tick_period_ns = 250 * MS
    resources = Resources(num_cpus=0.1)

    def on_tick(self, now):
        yield "ticks", Message("ticker", now, now, {"now": now})


def test_recorded_pace_in_event_time_delivers_every_message_in_order(ray_cluster, tmp_path):
    # prepare: 20 frames 50 ms of event time apart, starting at event time 0, replayed at 100 Hz
    events = [k * 50 * MS for k in range(20)]
    recorded = [("out", Message("rec", k, t, {"k": k})) for k, t in enumerate(events)]
    write_recording(tmp_path, recorded)
    p = Pipeline("replay-event-time", time="event")
    p.source(
        "replay", Replay(tmp_path, pace="recorded"), rate_hz=100,
        placement={"edge.role": "vehicle"},
    )  # fmt: skip
    p.operator("tick", Ticker(), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.sink("ticks", ListSink(), placement={"edge.role": "hub"})
    p.connect("replay", "out")
    p.connect("replay", "tick")
    p.connect("tick.ticks", "ticks")
    runtime = Runtime(p)

    # execute: about 1 s of recorded time; the timeout only catches a stall
    summary = runtime.run(timeout_s=30)

    # assert: the replay ended on its own, every frame arrived in order, ticks on event time
    def received(sink: str) -> list[Message]:
        return [m for s in runtime.stats if s["operator"] == sink for m in s["snapshot"]]

    assert summary.stopped_by == "end-of-stream"
    assert [(m.source, m.seq, m.event_ts) for m in received("out")] == [
        ("rec", k, t) for k, t in enumerate(events)
    ]
    assert [m.payload["now"] for m in received("ticks")] == [250 * MS, 500 * MS, 750 * MS]
    assert summary.identity_holds()
