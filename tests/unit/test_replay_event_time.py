"""Replay at recorded pace in an event-time pipeline, under the local runner.

A source's ``poll(now)`` gets the processing clock (wall time, here a ``FakeClock``)
in every time mode, so recorded pace neither stalls nor jumps when the pipeline
runs on event time; ticks downstream keep following event time.
"""

from __future__ import annotations

import pytest

from operators import Context, Message, Operator
from operators.recording import Replay, write_recording
from pipelines.testing import FakeClock, ListSink, Pipeline, run_local

MS = 1_000_000
S = 1_000 * MS
START = 10 * S  # the FakeClock's first reading


class Ticker(Operator):
    """Emits one message per tick on ``ticks`` carrying the tick's ``now`` and ``ctx.clock()``."""

    inputs = ("in",)
    outputs = ("ticks",)

    def __init__(self, period_ns: int) -> None:
        self.tick_period_ns = period_ns
        self.clock = None

    def setup(self, ctx: Context) -> None:
        self.clock = ctx.clock

    def on_tick(self, now):
        yield "ticks", Message("ticker", now, now, {"now": now, "clock": self.clock()})


def replay_pipeline(tmp_path, events_ns: list[int], *, speed: float = 1.0) -> Pipeline:
    write_recording(
        tmp_path, [("out", Message("s", i, t, {"i": i})) for i, t in enumerate(events_ns)]
    )
    p = Pipeline("replay-event-time", time="event")
    p.source("replay", Replay(tmp_path, pace="recorded", speed=speed), rate_hz=100)
    p.sink("out", ListSink())
    p.connect("replay", "out")
    return p


@pytest.mark.parametrize(
    ("first_s", "speed", "expected_ms"),
    [
        (0, 1.0, [0, 100, 250, 1000]),  # event time starts at 0: today's pace stalled here
        (3, 1.0, [0, 100, 250, 1000]),  # event time starts at 3 s: today's pace jumped
        (3, 2.0, [0, 50, 130, 500]),  # 125 ms at speed 2 is due at the 130 ms poll
    ],
)
def test_recorded_pace_in_event_time_emits_at_the_recorded_offsets(
    tmp_path, first_s, speed, expected_ms
):
    # prepare: event times first, +100 ms, +250 ms, +1 s; polled every 10 ms from t=10 s
    events = [first_s * S + offset * MS for offset in (0, 100, 250, 1000)]
    p = replay_pipeline(tmp_path, events, speed=speed)

    # execute
    run = run_local(p, clock=FakeClock(start_ns=START), until_ns=START + 5 * S)

    # assert: every message, in order, each ingested at the poll its recorded offset falls in
    got = run.sink("out")
    assert [(m.seq, m.event_ts) for m in got] == list(enumerate(events))
    assert [(m.ingest_ts - START) / MS for m in got] == expected_ms
    assert run.summary.stopped_by == "end-of-stream"


def test_ticks_downstream_of_a_paced_replay_follow_event_time(tmp_path):
    # prepare: 21 frames 100 ms of event time apart (2 s), replayed 10x faster (200 ms of wall)
    p = replay_pipeline(tmp_path, [5 * S + k * 100 * MS for k in range(21)], speed=10.0)
    p.operator("tick", Ticker(500 * MS))
    p.sink("ticks", ListSink())
    p.connect("replay", "tick")
    p.connect("tick.ticks", "ticks")

    # execute
    run = run_local(p, clock=FakeClock(start_ns=START))

    # assert: a tick per 500 ms of event time, and ctx.clock() reads event time in them too
    ticks = [(m.payload["now"], m.payload["clock"]) for m in run.sink("ticks")]
    assert ticks == [(5 * S + k * 500 * MS, 5 * S + k * 500 * MS) for k in range(1, 5)]
    assert len(run.sink("out")) == 21
    assert run.summary.duration_s == pytest.approx(0.21)  # 21 polls at 100 Hz of wall time
