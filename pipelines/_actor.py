"""``OperatorActor``: one replica of one operator as a Ray actor (an asyncio actor).

Receiving: ``push`` puts a message into the inbox (ordered by QoS class, then
arrival) and answers once the message is settled: processed and its outputs
handed to the outgoing links (``delivered``), or ``dead``, ``duplicate``,
``dropped:<reason>``. That answer is the link's acknowledgement, so a slow
consumer holds its producers' windows full and back-pressure reaches the
sources. Operator code runs on one worker thread, never two calls at once.

Frames: a source's large arrays are put into the object store once and travel
as ``ObjectRef``; a consumer resolves them (read-only, zero-copy) and, when an
output carries the same array on, the output carries the same reference.

Restarts: every actor gets the whole pipeline and plan in its constructor and
looks its consumers up by name, so Ray can restart it anywhere its selector
allows (``max_restarts=-1``). A restarted actor asks its producers which ends
of stream they had already delivered to it, and a restarted source starts
again from its first message (sinks discard what they have already seen).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import count
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError

from models import ModelResolver
from operators import Context, EndOfStream, Message
from pipelines._channel import Link, Resequencer
from pipelines._graph import Edge, Pipeline
from pipelines._host import Host
from pipelines._metrics import RayMetrics
from pipelines._plan import TOPIC_NAMESPACE, TOPIC_PREFIX, make_plan, out_links, topic_actor_name
from pipelines._policies import too_old
from pipelines._routing import Router

#: Arrays at least this big go into the object store and travel by reference.
BY_REFERENCE_BYTES = 64 * 1024
#: End-to-end latency samples a sink keeps for the summary.
LATENCY_SAMPLES = 100_000
_EOS_RANK = 1 << 30


@dataclass(frozen=True)
class RunConfig:
    namespace: str
    event_time: bool = False
    unplaceable: frozenset[str] = frozenset()


class OperatorActor:
    def __init__(self, pipeline: Pipeline, actor: str, config: RunConfig) -> None:
        self.p, self.actor, self.config = pipeline, actor, config
        self.plan = make_plan(pipeline, config.unplaceable)
        me = self.plan.replica(actor)
        self.spec = pipeline.specs[me.operator]
        self.role = self.spec.role
        rt = ray.get_runtime_context()
        self.labels = dict(rt.get_node_labels())
        self.node_id = rt.get_node_id()
        self.event_now = 0
        version = str(self.spec.operator.version)
        self.metrics = RayMetrics(pipeline=pipeline.name, operator=self.spec.name, version=version)
        ctx = Context(
            pipeline=pipeline.name,
            operator=self.spec.name,
            replica=me.index,
            node=self.labels.get("edge.node", self.node_id[:8]),
            labels=self.labels,
            clock=self.now,
            logger=logging.getLogger(f"edgeray.{actor}"),
            metrics=self.metrics,
            models=ModelResolver.at(pipeline.models),  # touches nothing until a model is used
        )
        self.host = Host(self.spec, me.index, ctx, wall=time.time_ns)
        self.host.setup()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="operator")
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.PriorityQueue = asyncio.PriorityQueue()
        self.resequencers: dict[tuple[str, str], Resequencer] = {}
        self.order = count()
        self.handles: dict[str, Any] = {}
        self.edges = {e.name: e for e in pipeline.edges}
        self.topic_links: dict[str, list[Link]] = {}
        self.links = self._make_links()
        self.routers = {
            e.dst: Router(pipeline.specs[e.dst]) for e in pipeline.out_edges(me.operator)
        }
        # (source replica, producer actor, edge): one end per link, so two edges from the same
        # producer (e.g. its lidar and ego ports into one consumer) each count
        self.eos_seen: set[tuple[str, str, str]] = set()
        self.done = asyncio.Event()
        self.stopping = False
        self.source_ended = asyncio.Event()
        self.processed = self.puts = 0
        self.latency_ms: list[float] = []
        self.tasks: set[asyncio.Task] = set()
        with warnings.catch_warnings():  # Ray's property trips its own deprecation warning
            warnings.simplefilter("ignore", DeprecationWarning)
            reconstructed = rt.was_current_actor_reconstructed
        self._next_tick: int | None = None  # event-time ticks
        self._spawn(self._run(recover=reconstructed))
        if reconstructed:  # Ray restarted this replica: carry on without the driver
            self._start_loops()

    # -- called by the driver -------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        """Where this replica runs, as seen from inside it."""
        return {"actor": self.actor, "node_id": self.node_id, "labels": self.labels,
                "pid": os.getpid()}  # fmt: skip

    async def start(self, unplaceable: list[str]) -> None:
        """Mark links to replicas that could not be placed, then start polling / ticking."""
        if unplaceable:
            self.config = replace(self.config, unplaceable=frozenset(unplaceable))
            self.plan = make_plan(self.p, self.config.unplaceable)
            self._check_done()
        for links in self.links.values():
            for dst, link in links.items():
                if dst in unplaceable:
                    link.mark_unplaceable()
        self._start_loops()

    def _start_loops(self) -> None:
        if self.role == "source":
            self._spawn(self._source_loop())
        if self.spec.operator.tick_period_ns and not self.config.event_time:
            self._spawn(self._tick_loop())

    async def stop(self) -> None:
        """Graceful stop: a source stops polling and sends end-of-stream; topic inputs close."""
        self.stopping = True
        self._check_done()

    async def wait_done(self) -> bool:
        """Return once this replica has seen the end of every source it depends on."""
        await self.done.wait()
        return True

    async def wait_source_ended(self) -> bool:
        await self.source_ended.wait()
        return True

    async def drain(self) -> None:
        """Wait until every outgoing link has settled everything it was given."""
        for links in self.links.values():
            for link in links.values():
                await link.drained()

    async def finish(self) -> dict[str, Any]:
        """Flush a sink, release the operator, and report this replica's figures."""
        await self.drain()
        if self.role == "sink" and hasattr(self.host.op, "flush"):
            await self.loop.run_in_executor(self.pool, self.host.op.flush)
        stats = self.stats()
        if self.role == "sink":
            stats["snapshot"] = await self.loop.run_in_executor(self.pool, self.host.op.snapshot)
        await self.loop.run_in_executor(self.pool, self.host.op.teardown)
        return stats

    def stats(self) -> dict[str, Any]:
        accounts = {}
        for key, links in self.links.items():
            for link in links.values():
                accounts[key] = (
                    accounts[key] + link.account() if key in accounts else link.account()
                )
        return {
            "actor": self.actor,
            "operator": self.spec.name,
            "role": self.role,
            "node": self.labels.get("edge.node", self.node_id[:8]),
            "processed": self.processed,
            "puts": self.puts,
            "dead_lettered": self.host.dead_lettered,
            "dead_letters": [(d.port, d.key, d.cause) for d in self.host.dead_letters],
            "duplicates": self.host.duplicates,
            "edges": accounts,
            "peak_in_flight": {
                key: max(link.peak for link in links.values()) for key, links in self.links.items()
            },
            "latency_ms": self.latency_ms,
        }

    async def progress(self) -> int:
        return self.processed

    async def eos_delivered_to(self, actor: str) -> list[tuple[str, str, str]]:
        """Ends of stream this replica's links have delivered to ``actor`` (for its recovery)."""
        out = []
        for edge, links in self.links.items():
            link = links.get(actor)
            if link is not None:
                out += [(src, self.actor, edge) for src in link.eos_delivered]
        return out

    # -- called by producers --------------------------------------------------------
    async def push(
        self, edge: str, port: str, item: Message | EndOfStream, sender: str, seq: int, low: int
    ) -> str:
        future = self.loop.create_future()
        reseq = self.resequencers.setdefault((edge, sender), Resequencer())
        for entry in reseq.arrive(seq, low, (edge, port, item, sender, future)):
            rank = _EOS_RANK if isinstance(entry[2], EndOfStream) else -int(entry[2].qos)
            self.inbox.put_nowait((rank, next(self.order), *entry))
        return await future

    # -- internals ------------------------------------------------------------------
    def now(self) -> int:
        return self.event_now if self.config.event_time else time.time_ns()

    def _spawn(self, coro) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _make_links(self) -> dict[str, dict[str, Link]]:
        me = self.spec.name
        links: dict[str, dict[str, Link]] = {}
        for e in self.p.out_edges(me):
            links[e.name] = {
                r.actor: self._link(e, r.actor) for r in self.plan.replicas[e.dst]
            }  # fmt: skip
        for t in self.p.publishes:
            if t.operator == me:
                edge = Edge(me, t.port, f"topic:{t.topic}", "in", policy="drop-oldest", window=64)
                link = self._link(edge, topic_actor_name(t.topic))
                links[edge.name] = {topic_actor_name(t.topic): link}
                self.topic_links.setdefault(t.port, []).append(link)
        return links

    def _link(self, edge: Edge, dst: str) -> Link:
        async def push(item: Message | EndOfStream, seq: int, low: int) -> str:
            handle = self._handle(dst)
            return await handle.push.options(enable_task_events=False).remote(
                edge.name, edge.dst_port, item, self.actor, seq, low
            )

        return Link(edge, push, retryable=(RayActorError,), now=self.now,
                    event_time=self.config.event_time, on_change=self._gauge,
                    on_drop=self._dropped)  # fmt: skip

    def _gauge(self, link: Link) -> None:
        self.metrics.gauge("in_flight", link.in_flight, edge=link.edge.name)

    def _dropped(self, link: Link, reason: str) -> None:
        # Drops the link decides (policy, rate limit, unplaceable, unroutable, lost consumer);
        # a consumer counts its own deadline drops, so each drop is one series increment.
        self.metrics.count("dropped", reason=reason, edge=link.edge.name)

    def _handle(self, name: str):
        handle = self.handles.get(name)
        if handle is None:
            namespace = TOPIC_NAMESPACE if name.startswith(TOPIC_PREFIX) else self.config.namespace
            handle = self.handles[name] = ray.get_actor(name, namespace=namespace)
        return handle

    async def _run(self, recover: bool) -> None:
        if recover:
            await self._recover_eos()
        self._check_done()
        while True:
            _, _, edge, port, item, sender, future = await self.inbox.get()
            try:
                if isinstance(item, EndOfStream):
                    status = await self._end_of(item.source, sender, edge)
                else:
                    status, outputs = await self._process(edge, port, item)
                    if outputs:  # acknowledge once every output is settled downstream
                        self._spawn(_ack_when_settled(future, status, outputs))
                        continue
            except Exception:  # a runtime fault must not wedge the producer
                logging.getLogger("edgeray").exception("%s failed on %s", self.actor, edge)
                self.host.dead_lettered += 1
                status = "dead"
            if not future.done():
                future.set_result(status)

    async def _process(
        self, edge_name: str, port: str, message: Message
    ) -> tuple[str, list[asyncio.Future]]:
        edge = self.edges.get(edge_name)
        if self.role == "sink" and not self.host.first_time(port, message):
            return "duplicate", []
        self.event_now = max(self.event_now, message.event_ts)
        if edge is not None and too_old(message, edge.deadline_ns, self.now(),
                                        event_time=self.config.event_time):  # fmt: skip
            self.metrics.count("dropped", reason="deadline", edge=edge_name)
            return "dropped:deadline", []
        resolved, refs = await self._resolve(message)
        dead_before = self.host.dead_lettered
        started = time.perf_counter()
        outs = await self.loop.run_in_executor(self.pool, self.host.process, port, resolved)
        self.metrics.observe("processing_ms", (time.perf_counter() - started) * 1e3)
        self.metrics.count("messages_in", port=port)
        if self.host.dead_lettered > dead_before:
            self.metrics.count("dead_lettered")
            return "dead", []
        self.processed += 1
        if self.role == "sink":
            latency = (time.time_ns() - message.ingest_ts) / 1e6
            self.metrics.observe("e2e_latency_ms", latency)
            if len(self.latency_ms) < LATENCY_SAMPLES:
                self.latency_ms.append(latency)
        if self.config.event_time and self.spec.operator.tick_period_ns:
            outs = outs + await self._event_ticks()
        return "delivered", await self._emit(outs, refs)

    async def _resolve(self, message: Message) -> tuple[Message, dict[int, Any]]:
        """Replace ``ObjectRef`` payload values by their (read-only) arrays."""
        names = [k for k, v in message.payload.items() if isinstance(v, ray.ObjectRef)]
        if not names:
            return message, {}
        values = await asyncio.gather(*(message.payload[k] for k in names))
        payload = dict(message.payload)
        refs = {}
        for k, v in zip(names, values, strict=True):
            payload[k] = v
            refs[id(v)] = message.payload[k]
        return replace(message, payload=payload), refs

    def _by_reference(self, message: Message, refs: dict[int, Any]) -> Message:
        """Large arrays as ``ObjectRef``: the input's reference when passed on, else put once."""
        payload, changed = dict(message.payload), False
        for k, v in message.payload.items():
            if isinstance(v, np.ndarray) and v.nbytes >= BY_REFERENCE_BYTES:
                ref = refs.get(id(v))
                if ref is None:
                    ref = ray.put(v)
                    self.puts += 1
                payload[k], changed = ref, True
        return replace(message, payload=payload) if changed else message

    async def _emit(
        self, outs: list[tuple[str, Message]], refs: dict[int, Any]
    ) -> list[asyncio.Future]:
        """Hand outputs to their links; the futures settle when they are settled downstream."""
        settled = []
        for port, message in outs:
            message = self._by_reference(message, refs)
            self.metrics.count("messages_out", port=port)
            for e in out_links(self.p, self.spec.name, port):
                replica = self.routers[e.dst].route(message)
                dsts = self.plan.replicas[e.dst]
                if replica is None:
                    next(iter(self.links[e.name].values())).reject("unroutable")
                    continue
                settled.append(await self.links[e.name][dsts[replica].actor].send(message))
            for link in self.topic_links.get(port, ()):
                settled.append(await link.send(message))
        return settled

    async def _end_of(self, source: str, sender: str, edge: str) -> str:
        expected = self.plan.expected_eos.get(self.actor, {})
        self.eos_seen.add((source, sender, edge))
        if sum(1 for s, *_ in self.eos_seen if s == source) == expected.get(source, -1):
            self._forward_eos(source)
        self._check_done()
        return "delivered"

    def _forward_eos(self, source: str) -> None:
        for e in self.p.out_edges(self.spec.name):
            if not e.feedback:
                for link in self.links[e.name].values():
                    link.send_eos(EndOfStream(source))

    def _check_done(self) -> None:
        """Done: every source upstream has ended, and topic inputs (endless) are closed."""
        if self.role == "source":
            return
        expected = self.plan.expected_eos.get(self.actor, {})
        seen: dict[str, int] = {}
        for s, *_ in self.eos_seen:
            seen[s] = seen.get(s, 0) + 1
        subscribed = any(t.operator == self.spec.name for t in self.p.subscribes)
        ended = all(seen.get(s, 0) >= n for s, n in expected.items())
        if ended and (self.stopping or not subscribed):
            self.done.set()

    async def _recover_eos(self) -> None:
        producers = {
            r.actor
            for e in self.p.in_edges(self.spec.name, feedback=False)
            for r in self.plan.replicas[e.src]
            if r.actor not in self.config.unplaceable
        }
        answers = await asyncio.gather(
            *(self._handle(a).eos_delivered_to.remote(self.actor) for a in producers)
        )
        for pairs in answers:
            self.eos_seen.update(tuple(p) for p in pairs)
        expected = self.plan.expected_eos.get(self.actor, {})
        for source, n in expected.items():
            if sum(1 for s, *_ in self.eos_seen if s == source) == n:
                self._forward_eos(source)  # consumers count each producer's end once
        self._check_done()

    async def _source_loop(self) -> None:
        period = round(1e9 / self.spec.rate_hz) if self.spec.rate_hz else 0
        due = time.monotonic_ns()
        while not self.stopping:
            if period:
                wait = due - time.monotonic_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)  # pacing at the declared rate
                due = max(due + period, time.monotonic_ns() - period)
            outs = await self.loop.run_in_executor(self.pool, self.host.poll, self.now())
            if outs is None:
                break
            for _, m in outs:
                self.event_now = max(self.event_now, m.event_ts)
            self.processed += len(outs)
            if self.config.event_time and self.spec.operator.tick_period_ns:
                outs = outs + await self._event_ticks()
            await self._emit(outs, {})
            if not period:
                await asyncio.sleep(0)
        for e in self.p.out_edges(self.spec.name):
            if not e.feedback:
                for link in self.links[e.name].values():
                    link.send_eos(EndOfStream(self.actor))
        self.source_ended.set()
        self.done.set()

    async def _tick_loop(self) -> None:
        period = self.spec.operator.tick_period_ns
        while not self.done.is_set():
            await asyncio.sleep(period / 1e9)  # the operator's declared tick period
            outs = await self.loop.run_in_executor(self.pool, self.host.tick, self.now())
            await self._emit(outs, {})

    async def _event_ticks(self) -> list[tuple[str, Message]]:
        period = self.spec.operator.tick_period_ns
        if self._next_tick is None:
            self._next_tick = self.event_now + period
        outs: list[tuple[str, Message]] = []
        while self.event_now >= self._next_tick:
            tick_at = self._next_tick
            outs += await self.loop.run_in_executor(self.pool, self.host.tick, tick_at)
            self._next_tick += period
        return outs


async def _ack_when_settled(
    ack: asyncio.Future, status: str, outputs: list[asyncio.Future]
) -> None:
    await asyncio.gather(*outputs)
    if not ack.done():
        ack.set_result(status)
