"""The driver: runs a validated pipeline on the Ray cluster it finds.

``run(pipeline)`` connects (``address``, ``RAY_ADDRESS``, or the current
connection), validates the graph against the live node table, starts one named
actor per replica (``<pipeline>/<operator>#<replica>``) with its label selector,
fallbacks and resources, reports replicas that cannot be placed within
``placement_timeout_s`` (their inputs are then dropped as ``unplaceable``),
starts the sources and waits until every sink has seen the end of every source
it depends on, or until ``stop()``, Ctrl-C, SIGTERM or ``timeout_s``. Stopping is
graceful: sources stop, what is in flight drains, sinks flush, actors exit, and
the summary is returned and printed.

Each run also starts its rollout controller (``pipelines._rollout``), through
which ``rollout()`` here, ``edgeray rollout`` and any other process move the
replicas of a running operator to a new version; replicas a rollout stopped
still count in the summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.rollout import ReplicaVersion
from pipelines._actor import OperatorActor, RunConfig, actor_options
from pipelines._errors import RuntimeFailure
from pipelines._graph import Pipeline
from pipelines._placement import Node
from pipelines._plan import TOPIC_NAMESPACE, make_plan, topic_actor_name
from pipelines._rollout import (
    ROLLOUT_NAMESPACE,
    RolloutController,
    RolloutRequest,
    controller_name,
    rollout,
)
from pipelines._summary import EdgeAccount, RunSummary
from pipelines._topics import TopicBroker

log = logging.getLogger("edgeray.runtime")

#: How often the driver looks at progress, stop requests and deadlines while it waits.
POLL_S = 0.25


def live_nodes() -> list[Node]:
    """The node table of the connected cluster."""
    return [
        Node(
            node_id=n["NodeID"],
            labels=dict(n.get("Labels") or {}),
            resources=dict(n.get("Resources") or {}),
            alive=bool(n.get("Alive")),
        )
        for n in ray.nodes()
    ]


def connect(address: str | None = None) -> None:
    """Connect to Ray (``address``, else ``RAY_ADDRESS``, else a new local instance)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=target, log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as err:
        raise RuntimeFailure(
            f"cannot reach a Ray cluster at {target!r}: {err}. Start one with "
            "`edgeray up cluster/fleets/local.toml` and export what `edgeray env` prints"
        ) from err


class Runtime:
    """One run of one pipeline on Ray; ``run()`` returns its ``RunSummary``."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        address: str | None = None,
        placement_timeout_s: float = 30.0,
        drain_timeout_s: float = 60.0,
        namespace: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.p = pipeline
        self.address = address
        self.placement_timeout_s = placement_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.namespace = namespace or f"edgeray-{pipeline.name}-{uuid.uuid4().hex[:8]}"
        self.on_progress = on_progress
        self.actors: dict[str, Any] = {}
        self.brokers: dict[str, Any] = {}
        self.controller: Any = None
        self.unplaceable: list[str] = []
        self._stop = threading.Event()
        self._stopped_by = "end-of-stream"
        self._drain_timed_out = False
        self._started = 0.0

    # -- control --------------------------------------------------------------------
    def stop(self, reason: str = "stop()") -> None:
        """Ask for a graceful stop (safe from any thread or a signal handler)."""
        if not self._stop.is_set():
            self._stopped_by = reason
            self._stop.set()

    def deploy(self, nodes: Sequence[Node] | None = None) -> None:
        """Validate against the live node table, start every actor, wait until placed."""
        connect(self.address)
        self.p.validate(live_nodes() if nodes is None else nodes)
        plan = make_plan(self.p)
        versions = {s.name: ReplicaVersion.of(s.operator).label for s in self.p.specs.values()}
        config = RunConfig(
            namespace=self.namespace,
            event_time=self.p.time == "event",
            versions=versions,
            restart_timeout_s=self.placement_timeout_s,
        )
        remote = ray.remote(OperatorActor)
        for spec in self.p.specs.values():
            for r in plan.replicas[spec.name]:
                options = actor_options(spec, r.index, r.actor, self.namespace)
                self.actors[r.actor] = remote.options(**options).remote(self.p, r.actor, config)
        self.placed = self._wait_placed()
        self._subscribe_topics()
        self._start_controller(replace(config, unplaceable=frozenset(self.unplaceable)))

    def rollout(self, request: RolloutRequest, timeout_s: float | None = None) -> dict[str, Any]:
        """Roll ``request`` out in this running pipeline; its record once it ended."""
        return rollout(self.p.name, request, timeout_s=timeout_s)

    def start(self) -> None:
        self._started = time.perf_counter()
        ray.get([a.start.remote(self.unplaceable) for a in self._live().values()])

    def run(
        self, timeout_s: float | None = None, nodes: Sequence[Node] | None = None
    ) -> RunSummary:
        """Deploy, start, wait for the end (or a stop), drain, and summarise."""
        try:
            if not self.actors:
                self.deploy(nodes)
            restore = self._install_signal_handlers()  # after ray.init, which installs its own
            try:
                self.start()
                self.wait(timeout_s)
                summary = self.finish()
            finally:
                restore()
        except BaseException:
            self._kill_all()
            raise
        print(summary.format(), flush=True)
        return summary

    def finish(self) -> RunSummary:
        """Drain, flush and stop every actor; collect the figures."""
        live = self._live()
        self._unsubscribe_topics()
        try:
            stats = self._finish_each(live) + self._retired_stats()
        except ray.exceptions.GetTimeoutError as err:
            self._kill_all()
            raise RuntimeFailure(
                f"pipeline {self.p.name!r} did not flush within {self.drain_timeout_s} s; "
                "its actors were stopped. Look for a sink stuck in flush() in the actor logs"
            ) from err
        duration = time.perf_counter() - self._started
        self._kill_all()
        return self._summary(stats, duration)

    def _finish_each(self, live: dict[str, Any]) -> list[dict]:
        """Every actor's ``finish()``, within ``drain_timeout_s`` in all.

        An actor that Ray is restarting (its node went away) is asked again once it is
        back, since the call never reached it; one that is not running at the deadline
        is reported unplaceable (its own figures are lost with it; its producers' links
        account for what they sent it). ``GetTimeoutError`` when a running actor does
        not finish in time.
        """
        deadline = time.monotonic() + self.drain_timeout_s
        # after a drain that timed out, what is unsettled now stays so: report it at once
        drain_s = 0.0 if self._drain_timed_out else self.drain_timeout_s / 2
        pending, stats = dict(live), []
        while pending:
            calls = {name: actor.finish.remote(drain_s) for name, actor in pending.items()}
            for name, ref in calls.items():
                try:
                    stats.append(ray.get(ref, timeout=max(deadline - time.monotonic(), 0.0)))
                    del pending[name]
                except ray.exceptions.RayActorError:
                    continue  # died or restarting: asked again in the next pass
                except ray.exceptions.GetTimeoutError:
                    if _running(pending[name]):
                        raise
            if pending and time.monotonic() >= deadline:
                log.error("%s did not come back before the end of the run", ", ".join(pending))
                self.unplaceable += sorted(pending)
                break
            if pending:  # wait for the restarts Ray is doing (no event to wait on)
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        return stats

    def _kill_all(self) -> None:
        for actor in {**self.actors, **self._live()}.values():
            ray.kill(actor, no_restart=True)
        if self.controller is not None:
            ray.kill(self.controller, no_restart=True)
            self.controller = None

    def _start_controller(self, config: RunConfig) -> None:
        # on the driver's node, and only there: an edge node may leave mid-run, and a soft
        # affinity lets Ray put a zero-CPU actor on any node (seen on a local fleet)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        options = {"name": controller_name(self.p.name), "namespace": ROLLOUT_NAMESPACE,
                   "num_cpus": 0, "max_concurrency": 16,
                   "scheduling_strategy": here}  # fmt: skip
        try:
            ray.get_actor(options["name"], namespace=ROLLOUT_NAMESPACE)
        except ValueError:
            pass
        else:
            raise RuntimeFailure(
                f"a pipeline called {self.p.name!r} is already running on this cluster; stop "
                "it first, or give this one another name (rollouts find a pipeline by name)"
            )
        remote = ray.remote(RolloutController).options(**options)
        self.controller = remote.remote(self.p, config, self.placed)

    def _retired_stats(self) -> list[dict]:
        if self.controller is None:
            return []
        return ray.get(self.controller.retired_stats.remote())

    # -- internals ------------------------------------------------------------------
    def _live(self) -> dict[str, Any]:
        """Every replica running now: rollouts replace some of those ``deploy`` started."""
        if self.controller is None:
            return {n: a for n, a in self.actors.items() if n not in self.unplaceable}
        names = ray.get(self.controller.actors.remote())
        return {n: self.actors.get(n) or ray.get_actor(n, namespace=self.namespace) for n in names}

    def _wait_placed(self) -> dict[str, dict]:
        refs = {a.ready.remote(): name for name, a in self.actors.items()}
        ready, pending = ray.wait(
            list(refs), num_returns=len(refs), timeout=self.placement_timeout_s
        )
        placed = {refs[r]: info for r, info in zip(ready, ray.get(ready), strict=True)}
        for ref in pending:
            name = refs[ref]
            self.unplaceable.append(name)
            ray.kill(self.actors[name], no_restart=True)
            log.error(
                "%s could not be placed within %.0f s; its inputs are dropped as 'unplaceable'",
                name,
                self.placement_timeout_s,
            )
        return placed

    def _subscribe_topics(self) -> None:
        """Create (or find) each topic's broker and subscribe this run's inputs to it."""
        plan = make_plan(self.p)
        self.brokers = {}
        for t in {t.topic for t in self.p.publishes} | {t.topic for t in self.p.subscribes}:
            options = {"name": topic_actor_name(t), "namespace": TOPIC_NAMESPACE,
                       "get_if_exists": True, "lifetime": "detached", "num_cpus": 0}  # fmt: skip
            self.brokers[t] = ray.remote(TopicBroker).options(**options).remote(t)
        for sub in self.p.subscribes:
            actors = [r.actor for r in plan.replicas[sub.operator]]
            subscribe = self.brokers[sub.topic].subscribe.remote
            ray.get(subscribe(self._subscription(sub), actors, sub.port, self.namespace))

    def _subscription(self, sub) -> str:
        return f"{self.namespace}/{sub.operator}.{sub.port}"

    def _unsubscribe_topics(self) -> None:
        ray.get(
            [
                self.brokers[sub.topic].unsubscribe.remote(self._subscription(sub))
                for sub in self.p.subscribes
            ]
        )

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the run ends by end-of-stream, a stop, or ``timeout_s``.

        A replica Ray is restarting (its node went away) answers nothing until it is
        back: what the driver asks of it (its end, the stop) is asked again then.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        live = self._live()
        roles = {n: self.p.specs[_op(n)].role for n in live}
        sinks = {n: a for n, a in live.items() if roles[n] == "sink"}
        sources = {n: a for n, a in live.items() if roles[n] == "source"}

        def ask(name: str) -> tuple[ray.ObjectRef, str]:  # every sink done, every source ended
            actor = live[name]
            call = actor.wait_done if roles[name] == "sink" else actor.wait_source_ended
            return call.remote(), name

        waiting = dict(ask(n) for n in [*sinks, *sources])
        unanswered: set[str] = set()  # asked while restarting: ask again at the next poll
        to_stop: set[str] = set()  # told to stop while restarting: tell again
        stop_sent, drain_deadline = False, float("inf")
        while waiting or unanswered:
            if waiting:
                done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=POLL_S)
            else:  # only replicas Ray is restarting: nothing to wait on but the next poll
                done = []
                time.sleep(POLL_S)
            waiting |= dict(ask(n) for n in unanswered)  # asked again a poll later
            unanswered.clear()
            for ref in done:
                name = waiting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:  # died or restarting: it forgot the stop
                    unanswered.add(name)
                    if stop_sent:
                        to_stop.add(name)
            if deadline is not None and time.monotonic() > deadline:
                self.stop(f"timeout ({timeout_s} s)")
            if self._stop.is_set() and not stop_sent:
                stop_sent = True
                drain_deadline = time.monotonic() + self.drain_timeout_s
                to_stop = set(self._live())
            to_stop = self._tell_stop(to_stop)
            if stop_sent and time.monotonic() > drain_deadline:
                log.error(
                    "%s did not drain within %.0f s of the stop; finishing without it",
                    self.p.name,
                    self.drain_timeout_s,
                )
                self._stopped_by += " (drain timed out)"
                self._drain_timed_out = True
                return
            if self.on_progress is not None and sinks:
                self.on_progress(sum(_answers([a.progress.remote() for a in sinks.values()])))

    def _tell_stop(self, names: set[str]) -> set[str]:
        """Send ``stop`` to these replicas; the names of those that could not take it."""
        if not names:
            return set()
        live = self._live()
        calls = {live[n].stop.remote(): n for n in names if n in live}
        failed = set()
        for ref, name in calls.items():
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:  # restarting: told again at the next poll
                failed.add(name)
        return failed

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            self.stop(signal.Signals(signum).name)

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    def _summary(self, stats: list[dict], duration: float) -> RunSummary:
        edges: dict[str, EdgeAccount] = {}
        sources, sinks, dead = {}, {}, {}
        latency: list[float] = []
        for s in stats:
            for name, account in s["edges"].items():
                edges[name] = edges[name] + account if name in edges else account
            op = s["operator"]
            if s["role"] == "source":
                sources[op] = sources.get(op, 0) + s["processed"]
            if s["role"] == "sink":
                sinks[op] = sinks.get(op, 0) + s["processed"]
                latency += s["latency_ms"]
            if s["dead_lettered"]:
                dead[op] = dead.get(op, 0) + s["dead_lettered"]
        self.stats = stats
        return RunSummary(
            pipeline=self.p.name,
            duration_s=duration,
            sources=sources,
            sinks=sinks,
            edges=edges,
            dead_lettered=dead,
            latency_ms=latency,
            stopped_by=self._stopped_by,
            unplaceable=list(self.unplaceable),
            placement={
                actor: info["labels"].get("edge.node", info["node_id"][:8])
                for actor, info in self.placed.items()
            },
        )


def _running(actor, timeout_s: float = 2.0) -> bool:
    """Whether ``actor`` answers at all (Ray may be waiting for a node to restart it on)."""
    try:
        ray.get(actor.ready.remote(), timeout=timeout_s)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False
    return True


def _answers(refs: list[ray.ObjectRef]) -> list[Any]:
    """The values of ``refs`` whose actor answered (one Ray is restarting does not)."""
    values = []
    for ref in refs:
        with contextlib.suppress(ray.exceptions.RayActorError):
            values.append(ray.get(ref))
    return values


def _op(actor: str) -> str:
    return actor.split("/", 1)[1].rsplit("#", 1)[0]


def run(
    pipeline: Pipeline,
    *,
    address: str | None = None,
    nodes: Sequence[Node] | None = None,
    timeout_s: float | None = None,
    placement_timeout_s: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Run ``pipeline`` on Ray until its sources end (or a stop) and return the summary."""
    runtime = Runtime(
        pipeline, address=address, placement_timeout_s=placement_timeout_s, on_progress=on_progress
    )
    return runtime.run(timeout_s, nodes)
