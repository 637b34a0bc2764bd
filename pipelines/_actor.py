"""``OperatorActor``: one replica of one operator as a Ray actor (an asyncio actor).

Receiving: ``push`` puts a message into the inbox (ordered by QoS class, then
arrival) and answers once the message is settled: processed and its outputs
handed to the outgoing links (``delivered``), or ``dead``, ``duplicate``,
``dropped:<reason>``. That answer is the link's acknowledgement, so a slow
consumer holds its producers' windows full and back-pressure reaches the
sources.

Operator code runs one call at a time: on a worker thread, or, for an operator
whose calls take well under a millisecond, on the event loop's thread (a thread hop
costs more than such a call).

Frames: a source's large arrays are put into the object store once and travel
as ``ObjectRef``; a consumer resolves them (read-only, zero-copy) and, when an
output carries the same array on, the output carries the same reference.

Restarts: every actor gets the whole pipeline and plan in its constructor and
looks its consumers up by name, so Ray can restart it anywhere its selector
allows (``max_restarts=-1``). A restarted actor asks its producers which ends
of stream they had already delivered to it, and a restarted source starts
again from its first message (sinks discard what they have already seen).

Rollouts (``pipelines._rollout``): a replica started to take over a slot of the
plan (``Incoming``) runs another operator instance (new model, code or config)
under a name that carries its version, ``<pipeline>/<operator>#<slot>@<version>``;
it boots below the stream (``hold_boot`` in the replica it replaces, see
``pipelines._replica_start``), starts paused, is warmed with a real input of its slot (or its
model's signature input where the slot had no traffic yet: ``warm``), and takes traffic once
every producer has ``retarget``-ed the slot to it and the replica it replaces
has drained and handed its state over (``handover`` -> ``resume``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import count
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayError

from models import ModelResolver
from operators import Context, EndOfStream, Message, Operator
from pipelines._channel import RESEND_BACKOFF_S, Header, Link, Resequencer
from pipelines._graph import Edge, OperatorSpec, Pipeline
from pipelines._host import Host
from pipelines._metrics import RayMetrics
from pipelines._placement import Placement
from pipelines._plan import TOPIC_NAMESPACE, TOPIC_PREFIX, make_plan, out_links, topic_actor_name
from pipelines._policies import too_old
from pipelines._replica_start import BootHold, set_niceness, warm_model
from pipelines._routing import Router

#: Arrays at least this big go into the object store and travel by reference.
BY_REFERENCE_BYTES = 64 * 1024
#: End-to-end latency samples a sink keeps for the summary.
LATENCY_SAMPLES = 100_000
#: The Ray namespace of rollout controllers (``pipelines._rollout``).
ROLLOUT_NAMESPACE = "edgeray-rollouts"
#: Recent processing times a replica keeps for its version's p99 (rollout gates).
RECENT_SAMPLES = 512
#: Operator calls quicker than this (moving average) run on the event loop's thread.
INLINE_MS = 0.5
#: Seconds between two samples of a link's ``in_flight`` gauge while it is busy.
GAUGE_S = 0.1
_EOS_RANK = 1 << 30


@dataclass(frozen=True)
class RunConfig:
    namespace: str
    event_time: bool = False
    unplaceable: frozenset[str] = frozenset()
    #: operator -> its replicas' version label (``cluster.rollout.ReplicaVersion``)
    versions: Mapping[str, str] = field(default_factory=dict)
    #: a consumer Ray cannot bring back within this long is treated as unplaceable
    restart_timeout_s: float = 30.0


@dataclass(frozen=True)
class Incoming:
    """A replica a rollout starts to take over ``slot`` (the plan's actor name of the slot).

    ``routes`` names the actor now serving each slot of every downstream operator
    (they may have been rolled too); ``quality_field`` is the output payload field
    whose mean is the version's quality signal (e.g. detection ``scores``).
    """

    slot: str
    operator: Operator
    version: str
    routes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    quality_field: str | None = None


class OperatorActor:
    def __init__(
        self, pipeline: Pipeline, actor: str, config: RunConfig, incoming: Incoming | None = None
    ) -> None:
        self.p, self.actor, self.config = pipeline, actor, config
        self.slot = actor if incoming is None else incoming.slot
        self.plan = make_plan(pipeline, config.unplaceable)
        me = self.plan.replica(self.slot)
        self.spec = pipeline.specs[me.operator]
        if incoming is not None:
            self.spec = replace(self.spec, operator=incoming.operator)
        self.role = self.spec.role
        rt = ray.get_runtime_context()
        self.labels = dict(rt.get_node_labels())
        self.node_id = rt.get_node_id()
        self.event_now = 0
        if incoming is not None:
            version = incoming.version
        else:
            version = config.versions.get(self.spec.name, str(self.spec.operator.version))
        self.version = version
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
        extra = self.spec.operator.resources.niceness
        if extra:  # before setup: threads the operator starts inherit it
            set_niceness(min(19, os.getpriority(os.PRIO_PROCESS, 0) + extra))
        self.host = Host(self.spec, me.index, ctx, wall=time.time_ns, version=version)
        self.host.setup()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="operator")
        self.pool_calls = 0  # operator calls on the worker thread, queued or running
        self.call_ms = 1.0  # moving average; on the worker thread until calls prove quick
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.PriorityQueue = asyncio.PriorityQueue()
        self.resequencers: dict[tuple[str, str], Resequencer] = {}
        self.order = count()
        self.handles: dict[str, Any] = {}
        self.gauged: dict[Link, float] = {}  # when each link's gauge was last set
        self.edges = {e.name: e for e in pipeline.edges}
        self.topic_links: dict[str, list[Link]] = {}
        # downstream operator -> the actor serving each of its slots now (rollouts move them)
        self.targets = {
            e.dst: [r.actor for r in self.plan.replicas[e.dst]]
            for e in pipeline.out_edges(me.operator)
        }
        if incoming is not None:
            self.targets |= {op: list(actors) for op, actors in incoming.routes.items()}
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
        # for rollouts: a replica taking over a slot waits (``running`` clear) for the state of
        # the one it replaces; its version's figures are read by ``rollout_stats``
        self.running = asyncio.Event()
        self.retiring = False
        self.first_input: tuple[str, Message] | None = None
        self.recent_ms: deque[float] = deque(maxlen=RECENT_SAMPLES)
        self.quality_field = None if incoming is None else incoming.quality_field
        self.quality_sum, self.quality_n = 0.0, 0
        self.boot_hold: BootHold | None = None  # while a replacement of it starts
        self.ticking = False
        with warnings.catch_warnings():  # Ray's property trips its own deprecation warning
            warnings.simplefilter("ignore", DeprecationWarning)
            reconstructed = rt.was_current_actor_reconstructed
        self._next_tick: int | None = None  # event-time ticks
        if incoming is None or reconstructed:
            self.running.set()
        self._spawn(self._run(recover=reconstructed))

    def __repr__(self) -> str:
        """What the Ray dashboard and log prefixes show: the actor's name and its version."""
        return self.actor if "@" in self.actor else f"{self.actor}@{self.version}"

    # -- called by the driver -------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        """Where this replica runs, as seen from inside it."""
        return {"actor": self.actor, "node_id": self.node_id, "labels": self.labels,
                "pid": os.getpid(), "nice": os.getpriority(os.PRIO_PROCESS, 0)}  # fmt: skip

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

    async def finish(self, drain_s: float | None = None) -> dict[str, Any]:
        """Flush a sink, release the operator, and report this replica's figures.

        Waits at most ``drain_s`` for the outgoing links to settle (a consumer may be on a
        node that is gone); what is still unsettled then is reported as in flight.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), drain_s)
        if self.role == "sink" and hasattr(self.host.op, "flush"):
            await self._operator(self.host.op.flush)
        stats = self.stats()
        if self.role == "sink":
            stats["snapshot"] = await self._operator(self.host.op.snapshot)
        await self._operator(self.host.op.teardown)
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
            "version": self.version,
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

    # -- called by a rollout (pipelines._rollout) -------------------------------------
    async def retarget(self, operator: str, slots: dict[int, str]) -> None:
        """Send ``operator``'s slots (index -> actor) to new actors from now on; return once
        everything that went to the actors they replace is settled."""
        for actor in slots.values():  # looked up and connected before frames wait on it
            with contextlib.suppress(ValueError, RayError):  # gone: its link will say so
                if actor not in self.handles:
                    self.handles[actor] = await asyncio.to_thread(
                        ray.get_actor, actor, namespace=self.config.namespace
                    )
                await self.handles[actor].__ray_ready__.remote()
        old = []
        for index, actor in slots.items():
            old.append(self.targets[operator][index])
            self.targets[operator][index] = actor
        for e in self.p.out_edges(self.spec.name):
            if e.dst == operator:
                for actor in slots.values():
                    self._link_to(e, actor)
                for actor in old:
                    if actor in self.links[e.name]:
                        await self.links[e.name][actor].drained()

    async def watch(self, field: str | None) -> None:
        """Average output payload ``field`` as this replica's quality signal from now on."""
        self.quality_field = field

    async def sample(self) -> tuple[str, Message] | None:
        """The first input this replica processed: a real one to warm a replacement with."""
        return self.first_input

    async def warm(
        self, sample: tuple[str, Message] | None, restore_nice: int | None = None
    ) -> dict[str, Any]:
        """Run the operator on a real input, outputs discarded (``sample``; ``None``: its
        slot had no traffic yet, so each model session runs on its signature's input); then
        go back to niceness ``restore_nice`` (the replaced replica's, after a ``BootHold``).

        An exception propagates: a version that cannot handle real input never gets traffic.
        """
        started = time.perf_counter()
        if sample is None:
            runs = await self._operator(warm_model, self.host.op)
            used = f"{runs} model session(s) on a signature input" if runs else "nothing"
        else:
            port, message = sample
            resolved, _ = await self._resolve(message)
            await self._operator(lambda: list(self.host.op.process(port, resolved) or ()))
            used = f"the first input of its slot ({message.source} #{message.seq})"
        took_ms = (time.perf_counter() - started) * 1e3
        for actors in self.targets.values():  # its consumers' handles, before traffic comes
            for actor in actors:
                self._handle(actor)
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        if restore_nice is not None:
            nice = set_niceness(restore_nice)
        return {"actor": self.actor, "pid": os.getpid(), "warmed_with": used,
                "ms": round(took_ms, 2), "nice": nice}  # fmt: skip

    async def hold_boot(self, timeout_s: float) -> dict[str, Any]:
        """While a replacement of this replica starts on this node, hold what the raylet
        starts at low priority (``pipelines._replica_start.BootHold``)."""
        self.boot_hold = BootHold()
        return asdict(self.boot_hold.start(timeout_s))

    async def release_boot(self) -> list[int]:
        """Stop ``hold_boot``; the pids it held."""
        hold, self.boot_hold = self.boot_hold, None
        return [] if hold is None else hold.release()

    async def pause(self) -> None:
        """Hold what arrives until ``resume`` (a slot switching back to this replica)."""
        self.running.clear()

    async def handover(self, *after: Any) -> Any:
        """Once nothing reaches this replica any more: settle its outputs, return its state.

        ``after``: the producers' ``retarget`` results (Ray runs this once they are in, with
        no round trip through the rollout controller between them)."""
        self.retiring = True  # ticks stop: a replica without traffic must not emit
        await self.drain()
        return await self._operator(self.host.op.snapshot)

    async def resume(self, state: Any) -> None:
        """Take over the state of the replica this one replaces (``None``: none) and start."""
        if state is not None:
            await self._operator(self.host.op.restore, state)
        self.retiring = False
        self.running.set()
        if self.spec.operator.tick_period_ns and not self.config.event_time and not self.ticking:
            self._spawn(self._tick_loop())

    async def retire(self) -> dict[str, Any]:
        """Release the operator and report this replica's figures (it gets no traffic)."""
        self.retiring = True
        await self.drain()
        stats = self.stats()
        await self._operator(self.host.op.teardown)
        return stats

    async def rollout_stats(self) -> dict[str, Any]:
        """This replica's figures for its version: frames, errors, recent latency, quality."""
        return {
            "frames": self.processed,
            "errors": self.host.dead_lettered,
            "recent_ms": list(self.recent_ms),
            "quality_sum": self.quality_sum,
            "quality_n": self.quality_n,
        }

    # -- called by producers --------------------------------------------------------
    async def push(self, item: Message | EndOfStream, header: Header) -> str:
        edge, port, sender, seq, low = header
        future = self.loop.create_future()
        reseq = self.resequencers.setdefault((edge, sender), Resequencer())
        for entry in reseq.arrive(seq, low, (edge, port, item, sender, future)):
            rank = _EOS_RANK if isinstance(entry[2], EndOfStream) else -int(entry[2].qos)
            self.inbox.put_nowait((rank, next(self.order), *entry))
        return await future

    # -- internals ------------------------------------------------------------------
    async def _operator(self, call, *args, quick: bool = False):
        """Run operator code, one call at a time: on the event loop's thread when ``quick``
        calls of this operator take under ``INLINE_MS`` and the worker thread is idle (a
        thread hop costs more than such a call), else on the worker thread, so that a slow
        call never holds up the pushes and acknowledgements the loop serves."""
        if quick and self.call_ms < INLINE_MS and not self.pool_calls:
            return self._timed(call, *args)
        self.pool_calls += 1
        try:
            if quick:
                return await self.loop.run_in_executor(self.pool, self._timed, call, *args)
            return await self.loop.run_in_executor(self.pool, call, *args)
        finally:
            self.pool_calls -= 1

    def _timed(self, call, *args):
        """``call(*args)``, its own duration kept in a moving average of ~10 calls (measured
        where it runs: a wait for the worker thread must not make a quick call look slow)."""
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            took_ms = (time.perf_counter() - started) * 1e3
            self.call_ms += (took_ms - self.call_ms) * 0.1

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
            links[e.name] = {actor: self._link(e, actor) for actor in self.targets[e.dst]}
        for t in self.p.publishes:
            if t.operator == me:
                edge = Edge(me, t.port, f"topic:{t.topic}", "in", policy="drop-oldest", window=64)
                link = self._link(edge, topic_actor_name(t.topic))
                links[edge.name] = {topic_actor_name(t.topic): link}
                self.topic_links.setdefault(t.port, []).append(link)
        return links

    def _link_to(self, edge: Edge, dst: str) -> Link:
        """The link of ``edge`` to actor ``dst`` (made on first use: a slot moved to it)."""
        links = self.links[edge.name]
        if dst not in links:
            links[dst] = self._link(edge, dst)
        return links[dst]

    def _link(self, edge: Edge, dst: str) -> Link:
        method = None

        def push(item: Message | EndOfStream, seq: int, low: int) -> ray.ObjectRef:
            nonlocal method
            if method is None:  # looked up on first use: the consumer may start after us
                method = self._handle(dst).push.options(enable_task_events=False)
            return method.remote(item, (edge.name, edge.dst_port, self.actor, seq, low))

        return Link(edge, push, retryable=(RayActorError,), now=self.now,
                    restarting=(ActorUnavailableError,),
                    give_up_s=self.config.restart_timeout_s,
                    event_time=self.config.event_time, on_change=self._gauge,
                    on_drop=self._dropped)  # fmt: skip

    def _gauge(self, link: Link) -> None:
        """The link's ``in_flight`` gauge: a sample, so at most every ``GAUGE_S`` while
        messages flow (a Ray metric call per message and link is measurable), and at once
        when the link empties (the value it rests at)."""
        now = time.monotonic()
        busy = link.queue or link.pushing  # cheaper than counting in_flight on every change
        if busy and now - self.gauged.get(link, 0.0) < GAUGE_S:
            return
        self.gauged[link] = now
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
        if recover:  # Ray restarted this replica: carry on without the driver
            serving = await self._serving()
            for op in self.targets:
                self.targets[op] = list(serving.get(op, self.targets[op]))
            await self._recover_eos(serving)
            self._start_loops()
        self._check_done()
        while True:
            await self.running.wait()
            _, _, edge, port, item, sender, future = await self.inbox.get()
            try:
                if isinstance(item, EndOfStream):
                    status = await self._end_of(item.source, sender, edge)
                else:
                    status, outputs = await self._process(edge, port, item)
                    if outputs:  # acknowledge once every output is settled downstream
                        _ack_when_settled(future, status, outputs)
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
        if self.first_input is None:
            self.first_input = (port, message)
        dead_before = self.host.dead_lettered
        started = time.perf_counter()
        outs = await self._operator(self.host.process, port, resolved, quick=True)
        took_ms = (time.perf_counter() - started) * 1e3
        self.metrics.observe("processing_ms", took_ms)
        self.recent_ms.append(took_ms)
        self.metrics.count("messages_in", port=port)
        if self.host.dead_lettered > dead_before:
            self.metrics.count("dead_lettered")
            return "dead", []
        self.processed += 1
        if self.quality_field is not None:
            self._observe_quality(outs)
        if self.role == "sink":
            latency = (time.time_ns() - message.ingest_ts) / 1e6
            self.metrics.observe("e2e_latency_ms", latency)
            if len(self.latency_ms) < LATENCY_SAMPLES:
                self.latency_ms.append(latency)
        if self.config.event_time and self.spec.operator.tick_period_ns:
            outs = outs + await self._event_ticks()
        return "delivered", await self._emit(outs, refs)

    def _observe_quality(self, outs: list[tuple[str, Message]]) -> None:
        for _, m in outs:
            value = m.payload.get(self.quality_field)
            if value is not None:
                values = np.asarray(value, np.float64)
                self.quality_sum += float(values.sum())
                self.quality_n += values.size

    async def _resolve(self, message: Message) -> tuple[Message, dict[int, Any]]:
        """Replace ``ObjectRef`` payload values by their (read-only) arrays."""
        names = [k for k, v in message.payload.items() if isinstance(v, ray.ObjectRef)]
        if not names:
            return message, {}
        if len(names) == 1:  # the common case: no gather (a task and a future fewer)
            values = [await message.payload[names[0]]]
        else:
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
                if replica is None:
                    next(iter(self.links[e.name].values())).reject("unroutable")
                    continue
                link = self._link_to(e, self.targets[e.dst][replica])
                settled.append(await link.send(message))
            for link in self.topic_links.get(port, ()):
                settled.append(await link.send(message))
        return settled

    async def _end_of(self, source: str, sender: str, edge: str) -> str:
        expected = self.plan.expected_eos.get(self.slot, {})
        self.eos_seen.add((source, sender, edge))
        if sum(1 for s, *_ in self.eos_seen if s == source) == expected.get(source, -1):
            self._forward_eos(source)
        self._check_done()
        return "delivered"

    def _forward_eos(self, source: str) -> None:
        for e in self.p.out_edges(self.spec.name):
            if not e.feedback:
                for actor in self.targets[e.dst]:  # the slots' current actors, not retired ones
                    self._link_to(e, actor).send_eos(EndOfStream(source))

    def _check_done(self) -> None:
        """Done: every source upstream has ended, and topic inputs (endless) are closed."""
        if self.role == "source":
            return
        expected = self.plan.expected_eos.get(self.slot, {})
        seen: dict[str, int] = {}
        for s, *_ in self.eos_seen:
            seen[s] = seen.get(s, 0) + 1
        subscribed = any(t.operator == self.spec.name for t in self.p.subscribes)
        ended = all(seen.get(s, 0) >= n for s, n in expected.items())
        if ended and (self.stopping or not subscribed):
            self.done.set()

    async def _serving(self) -> dict[str, list[str]]:
        """The actor serving each slot of every operator now (rollouts replace some)."""
        try:
            controller = ray.get_actor(controller_name(self.p.name), namespace=ROLLOUT_NAMESPACE)
        except ValueError:  # no rollout controller: every slot has its planned actor
            return {op: [r.actor for r in rs] for op, rs in self.plan.replicas.items()}
        return await controller.routes.remote()

    async def _recover_eos(self, serving: dict[str, list[str]]) -> None:
        producers = {
            actor
            for e in self.p.in_edges(self.spec.name, feedback=False)
            for actor in serving[e.src]
            if actor not in self.config.unplaceable
        }
        answers = await asyncio.gather(
            *(self._ask(lambda a=a: self._handle(a).eos_delivered_to.remote(self.actor), [])
              for a in producers)
        )  # fmt: skip
        for pairs in answers:
            self.eos_seen.update(tuple(p) for p in pairs)
        expected = self.plan.expected_eos.get(self.slot, {})
        for source, n in expected.items():
            if sum(1 for s, *_ in self.eos_seen if s == source) == n:
                self._forward_eos(source)  # consumers count each producer's end once
        self._check_done()

    async def _ask(self, call, otherwise: Any) -> Any:
        """``await call()``, again with a growing pause while its actor is restarting (as
        after a lost node); ``otherwise`` once that took longer than ``restart_timeout_s``."""
        deadline = time.monotonic() + self.config.restart_timeout_s
        pause, longest = RESEND_BACKOFF_S
        while True:
            try:
                return await call()
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    return otherwise
                await asyncio.sleep(pause)  # no event tells when Ray has it back
                pause = min(2 * pause, longest)

    async def _source_loop(self) -> None:
        period = round(1e9 / self.spec.rate_hz) if self.spec.rate_hz else 0
        due = time.monotonic_ns()
        while not self.stopping:
            if period:
                wait = due - time.monotonic_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)  # pacing at the declared rate
                due = max(due + period, time.monotonic_ns() - period)
            # polled on wall time in both modes: event time is what the source stamps
            outs = await self._operator(self.host.poll, time.time_ns(), quick=True)
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
                for actor in self.targets[e.dst]:
                    self._link_to(e, actor).send_eos(EndOfStream(self.actor))
        self.source_ended.set()
        self.done.set()

    async def _tick_loop(self) -> None:
        period = self.spec.operator.tick_period_ns
        self.ticking = True
        try:
            while not self.done.is_set() and not self.retiring:
                await asyncio.sleep(period / 1e9)  # the operator's declared tick period
                outs = await self._operator(self.host.tick, self.now(), quick=True)
                await self._emit(outs, {})
        finally:
            self.ticking = False

    async def _event_ticks(self) -> list[tuple[str, Message]]:
        period = self.spec.operator.tick_period_ns
        if self._next_tick is None:
            self._next_tick = self.event_now + period
        outs: list[tuple[str, Message]] = []
        while self.event_now >= self._next_tick:
            tick_at = self._next_tick
            outs += await self._operator(self.host.tick, tick_at, quick=True)
            self._next_tick += period
        return outs


def _ack_when_settled(ack: asyncio.Future, status: str, outputs: list[asyncio.Future]) -> None:
    """Resolve ``ack`` with ``status`` once every output future is done (callbacks: no task
    per message)."""
    left = len(outputs)

    def settled(_: asyncio.Future) -> None:
        nonlocal left
        left -= 1
        if not left and not ack.done():
            ack.set_result(status)

    for output in outputs:
        output.add_done_callback(settled)


def actor_options(spec: OperatorSpec, replica: int, name: str, namespace: str) -> dict[str, Any]:
    """Ray actor options for one replica: name, restarts, resources, label selector."""
    needs = spec.operator.resources
    options: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 1000,
        "num_cpus": needs.num_cpus,
    }
    if needs.memory:
        options["memory"] = needs.memory
    if needs.num_gpus:
        options["num_gpus"] = needs.num_gpus
    if needs.custom:
        options["resources"] = dict(needs.custom)
    placement = spec.replica_placement(replica) or Placement()
    selectors = placement.selectors()
    if selectors[0]:
        options["label_selector"] = selectors[0]
    if len(selectors) > 1:
        options["fallback_strategy"] = [{"label_selector": s} for s in selectors[1:]]
    return options


def controller_name(pipeline: str) -> str:
    """The name of a run's rollout controller: its pipeline's (one run per name at a time)."""
    return pipeline
