"""Test harness: list sources and sinks, a fake clock and a local runner without Ray.

``run_local`` drives a whole pipeline in this process, in simulated time: the
clock jumps from one due poll or tick to the next, so a test of a 30 Hz source
over ten simulated minutes runs as fast as the operators do. Queues are
unbounded and lossless and serve higher QoS classes first; back-pressure,
drop policies, rate limits and deadlines belong to the Ray runtime.

>>> p = Pipeline("t")
>>> p.source("numbers", ListSource([{"x": i} for i in range(3)]), rate_hz=10)
'numbers'
>>> p.sink("out", ListSink())
'out'
>>> p.connect("numbers", "out")
>>> run = run_local(p)
>>> [m.payload["x"] for m in run.sink("out")], run.summary.duration_s
([0, 1, 2], 0.3)
"""

from __future__ import annotations

import copy
import heapq
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from models import ModelResolver
from operators import Context, Message, Outputs, Sink, Source
from pipelines._graph import Pipeline
from pipelines._host import DeadLetter, Host
from pipelines._routing import Router
from pipelines._summary import EdgeAccount, RunSummary

__all__ = ["FakeClock", "ListSink", "ListSource", "LocalRun", "Pipeline", "run_local"]


class FakeClock:
    """A clock in integer nanoseconds that moves only when told to."""

    def __init__(self, start_ns: int = 0) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ns: int) -> None:
        self.now_ns += ns


class ListSource(Source):
    """Emits the given payloads (or ready-made Messages) one per poll on port ``out``.

    Event time is ``seq * period_ns``. Finite: ends after the last item.
    """

    outputs = ("out",)

    def __init__(
        self, items: Sequence[Mapping[str, Any] | Message], *, period_ns: int = 100_000_000
    ) -> None:
        self.items = list(items)
        self.period_ns = period_ns
        self.position = 0

    def poll(self, now: int) -> Outputs | None:
        if self.position >= len(self.items):
            return None
        item = self.items[self.position]
        if not isinstance(item, Message):
            item = Message("", self.position, self.position * self.period_ns, dict(item))
        self.position += 1
        return [("out", item)]

    def snapshot(self) -> int:
        return self.position

    def restore(self, state: int) -> None:
        self.position = state


class ListSink(Sink):
    """Keeps every message it receives on port ``in`` in ``self.messages``."""

    inputs = ("in",)

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def process(self, port: str, message: Message) -> Outputs:
        self.messages.append(message)
        return ()

    def snapshot(self) -> list[Message]:
        return list(self.messages)

    def restore(self, state: list[Message]) -> None:
        self.messages = list(state)


@dataclass
class LocalRun:
    """What ``run_local`` returns: the summary, what each sink recorded, the dead letters."""

    summary: RunSummary
    received: dict[str, list[Message]]
    dead_letters: list[DeadLetter]
    hosts: dict[str, list[Host]] = field(repr=False)

    def sink(self, name: str) -> list[Message]:
        return self.received[name]


def run_local(
    pipeline: Pipeline,
    *,
    clock: FakeClock | None = None,
    until_ns: int | None = None,
    max_polls: int = 100_000,
) -> LocalRun:
    """Validate (graph only) and run ``pipeline`` in this process until its sources end.

    Stops early at simulated time ``until_ns`` or after ``max_polls`` source polls.
    """
    pipeline.validate()
    return _LocalRunner(pipeline, clock or FakeClock()).run(until_ns, max_polls)


class _LocalRunner:
    def __init__(self, p: Pipeline, clock: FakeClock) -> None:
        self.p, self.clock = p, clock
        self.event_now = 0
        self.hosts: dict[str, list[Host]] = {}
        models = ModelResolver.at(p.models)  # touches nothing until a model is used
        for spec in p.specs.values():
            n = len(spec.replica_ids())
            ops = [spec.operator] + [copy.deepcopy(spec.operator) for _ in range(n - 1)]
            self.hosts[spec.name] = [
                Host(
                    _with_op(spec, op), i,
                    Context(pipeline=p.name, operator=spec.name, replica=i, clock=self.now,
                            logger=logging.getLogger(f"edgeray.{p.name}.{spec.name}"),
                            models=models),
                    wall=clock,
                )
                for i, op in enumerate(ops)
            ]  # fmt: skip
        self.routers = {name: Router(spec) for name, spec in p.specs.items()}
        self.accounts: dict[str, dict[str, Any]] = {
            e.name: {"sent": 0, "delivered": 0, "dropped": {}, "dead": 0, "duplicates": 0}
            for e in p.edges
        }
        self.queue: list[tuple] = []
        self.order = count()
        self.received: dict[str, list[Message]] = {
            s.name: [] for s in p.specs.values() if s.role == "sink"
        }
        self.latency: list[float] = []
        self.emitted = {s.name: 0 for s in p.specs.values() if s.role == "source"}

    def now(self) -> int:
        """The pipeline's clock for ticks and ``ctx.clock``: event or wall time, as it says.

        Sources are polled with the wall clock in both modes (see ``run``)."""
        return self.event_now if self.p.time == "event" else self.clock()

    def run(self, until_ns: int | None, max_polls: int) -> LocalRun:
        for hosts in self.hosts.values():
            for h in hosts:
                h.setup()
        start = self.clock()
        sources = [h for name in self.emitted for h in self.hosts[name]]
        period = {h: _period(self.p.specs[h.spec.name].rate_hz) for h in sources}
        next_poll = {h: start for h in sources}
        tickers = [h for hs in self.hosts.values() for h in hs if h.op.tick_period_ns]
        # Event-time ticks follow the sources' clock: they start at the first event
        # seen and never decide when the (wall) clock jumps next.
        event = self.p.time == "event"
        next_tick = {} if event else {h: start + h.op.tick_period_ns for h in tickers}
        polls, stopped_by = 0, "end-of-stream"
        while next_poll:
            self._drain()
            due = min([*next_poll.values(), *([] if event else next_tick.values())])
            if until_ns is not None and due > until_ns:
                stopped_by = "until_ns"
                break
            if polls >= max_polls:
                stopped_by = "max_polls"
                break
            self.clock.now_ns = max(self.clock(), due)
            for h in [h for h, t in next_poll.items() if t <= due]:
                polls += 1
                # A poll happens at a wall-clock time: pacing (Replay's recorded pace) is
                # wall time; event time is what the source stamps, so it cannot drive it.
                outs = h.poll(self.clock())
                if outs is None:
                    del next_poll[h]
                    continue
                for _, m in outs:
                    self.event_now = max(self.event_now, m.event_ts)
                self.emitted[h.spec.name] += len(outs)
                self._emit(h, outs)
                next_poll[h] += period[h]
            if event and not next_tick and any(self.emitted.values()):
                next_tick = {h: self.event_now + h.op.tick_period_ns for h in tickers}
            for h in tickers:
                while h in next_tick and next_tick[h] <= self.now():
                    self._emit(h, h.tick(next_tick[h]))  # the tick's own time, as on Ray
                    next_tick[h] += h.op.tick_period_ns
        self._drain()
        for hosts in self.hosts.values():
            for h in hosts:
                if h.spec.role == "sink" and isinstance(h.op, Sink):
                    h.op.flush()
                h.op.teardown()
        return LocalRun(self._summary(start, stopped_by), self.received, self._dead(), self.hosts)

    def _emit(self, host: Host, outs: Iterable[tuple[str, Message]]) -> None:
        for port, message in outs:
            for e in self.p.out_edges(host.spec.name):
                if e.src_port != port:
                    continue
                account = self.accounts[e.name]
                account["sent"] += 1
                replica = self.routers[e.dst].route(message)
                if replica is None:
                    account["dropped"]["unroutable"] = account["dropped"].get("unroutable", 0) + 1
                    continue
                item = (-int(message.qos), next(self.order), e, replica, message)
                heapq.heappush(self.queue, item)

    def _drain(self) -> None:
        while self.queue:
            _, _, edge, replica, message = heapq.heappop(self.queue)
            host = self.hosts[edge.dst][replica]
            account = self.accounts[edge.name]
            if host.spec.role == "sink" and not host.first_time(edge.dst_port, message):
                account["delivered"] += 1  # delivered, then discarded as a duplicate
                account["duplicates"] += 1
                continue
            before = host.dead_lettered
            outs = host.process(edge.dst_port, message)
            if host.dead_lettered > before:
                account["dead"] += 1
                continue
            account["delivered"] += 1
            if host.spec.role == "sink":
                self.received[edge.dst].append(message)
                self.latency.append((self.clock() - message.ingest_ts) / 1e6)
            self._emit(host, outs)

    def _dead(self) -> list[DeadLetter]:
        return [d for hs in self.hosts.values() for h in hs for d in h.dead_letters]

    def _summary(self, start: int, stopped_by: str) -> RunSummary:
        edges = {
            name: EdgeAccount(
                a["sent"], a["delivered"], dict(a["dropped"]), a["dead"], duplicates=a["duplicates"]
            )
            for name, a in self.accounts.items()
        }
        dead = {n: sum(h.dead_lettered for h in hs) for n, hs in self.hosts.items()}
        return RunSummary(
            pipeline=self.p.name,
            duration_s=(self.clock() - start) / 1e9,
            sources=dict(self.emitted),
            sinks={n: len(v) for n, v in self.received.items()},
            edges=edges,
            dead_lettered={n: c for n, c in dead.items() if c},
            latency_ms=self.latency,
            stopped_by=stopped_by,
        )


def _period(rate_hz: float | None) -> int:
    return 0 if not rate_hz else round(1e9 / rate_hz)


def _with_op(spec, op):
    from dataclasses import replace

    return spec if spec.operator is op else replace(spec, operator=op)
