"""Rollouts of a running pipeline: the controller actor, the executor, the client calls.

How a rollout reaches a running pipeline: ``Runtime.deploy`` starts one
``RolloutController`` per run, a named actor called after the pipeline in the
``edgeray-rollouts`` namespace (``controller_name``), so any process connected
to the cluster (``edgeray rollout ...``, another driver, a federated round that
ends with a canary) finds it with ``ray.get_actor``. It knows the pipeline, the
run's namespace and which actor serves each slot (replica position) of every
operator; it runs one rollout per operator at a time on a thread of its own and
keeps every rollout's history for ``status()``. It lives as long as the run:
the driver stops it in ``finish()``.

A rollout: ``begin(RolloutRequest)`` builds the candidate operator (the
current one with a new model reference and/or parameters, or a whole new
instance), refuses a model that is corrupt, does not fit the operator's
signature, or cannot be opened (``RolloutRefused``: nothing has changed), then
drives a planner from ``cluster.rollout`` with ``RayExecutor``:

- ``Start``: a new replica per slot, on the slot's node (``ray.io/node-id``),
  named ``<pipeline>/<operator>#<slot>@<version>``. Its process boots below
  the stream: the replica it replaces holds every process the node's raylet
  starts meanwhile at nice 19 (``hold_boot``), and the new one returns to the
  old one's niceness once warm, where the OS lets it (``pipelines._replica_start``
  says why and what happens where it does not; the record's ``boot`` says per
  slot). It loads its model in ``setup`` and is warmed with the first real
  input the slot processed, or, where the slot had no traffic yet, with one
  inference of its model on the model signature's input. A replica that fails
  to start or to warm is stopped and the rollout refused. Blue-green starts
  the whole new set in one ``Start`` (all processes at once, each held below
  the stream on its node).
- ``Switch``: the new replica is paused; every producer retargets the slot to
  it at once (one call per producer, all slots together) and returns once what
  it sent to the old replica is settled; the old replica settles its outputs
  and hands its state over (``snapshot`` -> ``restore``); the new one resumes;
  the old one stops (or stays warm for a rollback). Nothing is dropped:
  frames wait in the producers' bounded windows while the slot switches. An
  operator with nothing to hand over (no ``snapshot``, no ticks) switches
  without that wait: the new replica runs before the producers retarget, so it
  takes the slot's frames at once while the old one finishes its own.
- ``Stop``: a replica kept warm stops; its figures join the run's summary.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import ray

from cluster.rollout import (
    ABTest,
    BlueGreen,
    Canary,
    Finish,
    Gate,
    Observed,
    Planner,
    ReplicaVersion,
    Rolling,
    RolloutError,
    RolloutRefused,
    Slot,
    Start,
    Stop,
    Switch,
    VersionMetrics,
    drive,
)
from models import EdgerayError, ModelRef, ModelResolver
from operators import Operator
from pipelines._actor import (
    ROLLOUT_NAMESPACE,
    Incoming,
    OperatorActor,
    RunConfig,
    actor_options,
    controller_name,
)
from pipelines._graph import Pipeline

STRATEGIES = ("rolling", "blue-green", "canary", "ab")
#: Seconds a new replica may take to be placed and set up before the rollout is refused.
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class RolloutRequest:
    """What to roll out to ``operator`` and how.

    The candidate is ``replacement`` (a whole new operator instance: new code)
    or the running operator with ``model`` (``NAME@VERSION|ALIAS``, resolved to
    a version before anything starts) and ``params`` (attribute -> value) set.
    ``strategy`` is one of ``STRATEGIES``; the other fields configure it and its
    gate (see ``cluster.rollout``); ``quality_field`` is the output payload
    field whose mean is the quality signal (e.g. detection ``scores``).
    """

    operator: str
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    replacement: Operator | None = None
    strategy: str = "rolling"
    batch: int = 1
    interval_s: float = 0.0
    share: float | None = None
    duration_s: float = 30.0
    window_s: float = 0.0
    min_frames: int = 20
    max_error_rate: float = 0.01
    max_p99_ratio: float | None = None
    min_quality_ratio: float | None = None
    quality_field: str | None = None
    poll_s: float = 0.2

    def planner(self, now: Callable[[], int]) -> Planner:
        gate = Gate(
            min_frames=self.min_frames,
            max_error_rate=self.max_error_rate,
            max_p99_ratio=self.max_p99_ratio,
            min_quality_ratio=self.min_quality_ratio,
        )
        if self.strategy == "rolling":
            interval = int(self.interval_s * 1e9)
            return Rolling(now=now, batch=self.batch, interval_ns=interval, gate=gate)
        if self.strategy == "blue-green":
            return BlueGreen(now=now, window_ns=int(self.window_s * 1e9), gate=gate)
        duration = int(self.duration_s * 1e9)
        if self.strategy == "canary":
            return Canary(now=now, share=self.share or 0.1, duration_ns=duration, gate=gate)
        if self.strategy == "ab":
            return ABTest(now=now, share=self.share or 0.5, duration_ns=duration)
        raise RolloutRefused(
            f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}",
            operator=self.operator,
        )


@dataclass
class _Slot:
    """One replica position of an operator: its node and the actor of each version there."""

    index: int
    plan_actor: str
    node_id: str
    node: str
    active: str
    actors: dict[str, str]  # version label -> actor name
    since_ns: int = 0


class RolloutController:
    """The per-run controller (a threaded Ray actor); see the module docstring."""

    def __init__(
        self,
        pipeline: Pipeline,
        config: RunConfig,
        placed: Mapping[str, Mapping[str, Any]],
    ) -> None:
        self.p, self.config = pipeline, config
        self.lock = threading.Lock()
        if any(
            ModelRef.looks_like(str(getattr(s.operator, "model", "")))
            for s in pipeline.specs.values()
        ):
            import onnxruntime  # noqa: F401  (a rollout's model check must not pay it mid-stream)

        self.slots: dict[str, list[_Slot]] = {}
        self.operators: dict[tuple[str, str], Operator] = {}  # (operator, version) -> instance
        for spec in pipeline.specs.values():
            label = config.versions.get(spec.name, str(spec.operator.version))
            self.operators[(spec.name, label)] = spec.operator
            slots = []
            for index, rid in enumerate(spec.replica_ids()):
                actor = f"{pipeline.name}/{spec.name}#{rid}"
                info = placed.get(actor)
                if info is None:  # unplaceable: never ran, nothing to roll
                    continue
                node = info["labels"].get("edge.node", info["node_id"][:8])
                slots.append(_Slot(index, actor, info["node_id"], node, label, {label: actor}))
            self.slots[spec.name] = slots
        self.retired: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.errors: dict[str, BaseException] = {}
        self.busy: set[str] = set()
        self.used_names = set(self.actors())
        # the replicas rollouts started: a Ray actor lives while a handle to it does
        self.handles: dict[str, Any] = {}
        self.generations = itertools.count(2)
        self.done: dict[str, threading.Event] = {}

    # -- queries ---------------------------------------------------------------------
    def actors(self) -> list[str]:
        """Every replica running now (serving a slot or kept warm)."""
        with self.lock:
            return [a for slots in self.slots.values() for s in slots for a in s.actors.values()]

    def retired_stats(self) -> list[dict[str, Any]]:
        """The final figures of every replica a rollout stopped (for the run's summary)."""
        with self.lock:
            return list(self.retired)

    def status(self) -> dict[str, Any]:
        """The versions serving each operator's slots, and every rollout's record."""
        with self.lock:
            serving = {
                op: [{"slot": s.plan_actor, "node": s.node, "active": s.active,
                      "warm": sorted(set(s.actors) - {s.active})} for s in slots]
                for op, slots in self.slots.items()
            }  # fmt: skip
            return {"pipeline": self.p.name, "serving": serving,
                    "rollouts": copy.deepcopy(self.history)}  # fmt: skip

    def routes(self) -> dict[str, list[str]]:
        """The actor serving each slot of every operator (its planned one where unplaced)."""
        routes = {}
        with self.lock:
            for op, spec in self.p.specs.items():
                actors = [f"{self.p.name}/{op}#{rid}" for rid in spec.replica_ids()]
                for s in self.slots[op]:
                    actors[s.index] = s.actors[s.active]
                routes[op] = actors
        return routes

    def operators_using(self, model: str) -> list[str]:
        """Operators whose model reference names ``model`` (a model name)."""
        with self.lock:
            serving = {(op, s.active) for op, slots in self.slots.items() for s in slots}
        refs = {op: str(getattr(self.operators[(op, v)], "model", "")) for op, v in serving}
        return sorted(
            op for op, ref in refs.items()
            if ModelRef.looks_like(ref) and ModelRef.parse(ref).name == model
        )  # fmt: skip

    # -- rollouts --------------------------------------------------------------------
    def begin(self, request: RolloutRequest) -> str:
        """Check the candidate, then run the rollout on a thread; returns its id."""
        op = request.operator
        spec = self.p.specs.get(op)
        if spec is None or spec.role != "operator":
            names = ", ".join(n for n, s in self.p.specs.items() if s.role == "operator")
            raise RolloutRefused(
                f"no operator {op!r} to roll out (sources and sinks are not rolled; its "
                f"operators: {names or 'none'})",
                pipeline=self.p.name,
            )
        if any(t.operator == op for t in self.p.subscribes):
            raise RolloutRefused(
                "it subscribes to a topic, whose broker addresses its replicas by name; roll "
                "out an operator downstream of the subscription instead",
                pipeline=self.p.name, operator=op,
            )  # fmt: skip
        with self.lock:
            if op in self.busy:
                raise RolloutRefused("a rollout of it is running", pipeline=self.p.name,
                                     operator=op)  # fmt: skip
            self.busy.add(op)
        try:
            try:
                planner = request.planner(time.monotonic_ns)
            except ValueError as err:  # a share or batch out of range
                raise RolloutRefused(str(err), pipeline=self.p.name, operator=op) from err
            candidate, label, baseline = self._versions(request)
        except BaseException:
            with self.lock:
                self.busy.discard(op)
            raise
        rid = uuid.uuid4().hex[:8]
        record = {"id": rid, "pipeline": self.p.name, "operator": op,
                  "strategy": request.strategy, "baseline": baseline, "candidate": label,
                  "state": "running", "reason": "", "actions": [], "metrics": {}, "boot": [],
                  "started_at": time.time(), "ended_at": None, "phases": []}  # fmt: skip
        with self.lock:
            self.operators[(op, label)] = candidate
            self.history.append(record)
            self.done[rid] = threading.Event()
        threading.Thread(target=self._run, args=(request, planner, record, baseline, label),
                         name=f"rollout-{rid}", daemon=True).start()  # fmt: skip
        return rid

    def wait(self, rid: str, timeout_s: float | None = None) -> dict[str, Any]:
        """The record of rollout ``rid`` once it ended (``RolloutError`` if it failed)."""
        if not self.done[rid].wait(timeout_s):
            raise RolloutError(f"rollout {rid} still running after {timeout_s} s")
        if rid in self.errors:
            raise self.errors[rid]
        with self.lock:
            return copy.deepcopy(next(r for r in self.history if r["id"] == rid))

    # -- internals -------------------------------------------------------------------
    def _run(
        self, request: RolloutRequest, planner: Planner, record: dict, baseline: str, label: str
    ) -> None:
        op = request.operator
        executor = None
        try:
            executor = RayExecutor(self, request, baseline, label, record)
            finish: Finish = drive(
                planner, executor, sleep=time.sleep,
                poll_s=request.poll_s, on_action=lambda a: record["actions"].append(_show(a)),
            )  # fmt: skip
            state, reason = finish.outcome, finish.reason
        except EdgerayError as err:
            self.errors[record["id"]] = err
            state, reason = "refused" if isinstance(err, RolloutRefused) else "failed", str(err)
            if executor is not None and executor.undo():
                reason += f"; the slots it had moved are back on {baseline}"
        except Exception as err:  # a Ray failure mid-rollout: reported, not swallowed
            self.errors[record["id"]] = RolloutError(
                f"{type(err).__name__}: {err}", pipeline=self.p.name, operator=op
            )
            state, reason = "failed", f"{type(err).__name__}: {err}"
        metrics, phases = {}, []
        if executor is not None:
            phases = executor.phases
            try:
                metrics = {v: asdict(m) for v, m in executor.observe().metrics.items()}
            except Exception as err:  # the figures are a report; the outcome stands without them
                metrics = {"unavailable": str(err)}
        with self.lock:
            record.update(state=state, reason=reason, metrics=metrics, ended_at=time.time(),
                          phases=phases)  # fmt: skip
            self.busy.discard(op)
        self.done[record["id"]].set()

    def _versions(self, request: RolloutRequest) -> tuple[Operator, str, str]:
        """The candidate operator, its version label, and the baseline version it replaces.

        Every slot normally runs one version, the baseline. After an A/B test the
        slots run two variants (the split stays so both can be compared); a rollout
        may then promote either variant to every slot, the other being the baseline:
        the request that started the test promotes its candidate, one that names the
        original model or parameters takes the test back.
        """
        op = request.operator
        with self.lock:
            active = sorted({s.active for s in self.slots[op]})
        if len(active) == 1:
            (baseline,) = active
            candidate, label = self._candidate(request, self.operators[(op, baseline)])
            if label == baseline:
                raise RolloutRefused(f"it already runs version {label}", pipeline=self.p.name,
                                     operator=op)  # fmt: skip
            return candidate, label, baseline
        changes = request.model is not None or request.params or request.replacement
        for variant in active if len(active) == 2 and changes else ():
            candidate, label = self._candidate(request, self.operators[(op, variant)])
            if label in active:
                (baseline,) = set(active) - {label}
                return candidate, label, baseline
        raise RolloutRefused(
            f"its slots run {len(active)} versions ({', '.join(active)}), e.g. after an A/B "
            "test; first promote one of them to every slot: repeat the model / parameters of "
            "the variant to keep, with the rolling or blue-green strategy",
            pipeline=self.p.name, operator=op,
        )  # fmt: skip

    def _candidate(self, request: RolloutRequest, current: Operator) -> tuple[Operator, str]:
        """The candidate operator and its version label; a model that will not do is refused."""
        candidate = copy.copy(request.replacement or current)
        for name, value in request.params.items():
            if not hasattr(candidate, name):
                raise RolloutRefused(
                    f"{type(candidate).__name__} has no parameter {name!r}",
                    pipeline=self.p.name, operator=request.operator,
                )  # fmt: skip
            setattr(candidate, name, value)
        if request.model is not None:
            if not hasattr(candidate, "model"):
                raise RolloutRefused(
                    f"{type(candidate).__name__} takes no model",
                    pipeline=self.p.name, operator=request.operator,
                )  # fmt: skip
            candidate.model = request.model
        ref = getattr(candidate, "model", None)
        if ref is not None and ModelRef.looks_like(str(ref)):
            candidate.model = self._check_model(str(ref), candidate, request.operator)
        return candidate, ReplicaVersion.of(candidate).label

    def _check_model(self, ref: str, operator: Operator, op: str) -> str:
        """Resolve, fetch (sha256), open and check ``ref`` against the operator's signature."""
        try:
            manifest, session = ModelResolver.at(self.p.models).session(
                ref, getattr(operator, "signature", None)
            )
        except EdgerayError as err:
            raise RolloutRefused(
                f"model {ref!r} refused before any replica switched: {err}",
                pipeline=self.p.name, operator=op,
            ) from err  # fmt: skip
        del session
        return manifest.ref


class RayExecutor:
    """``cluster.rollout.Executor`` on the controller's view of one operator's slots."""

    def __init__(
        self,
        ctl: RolloutController,
        request: RolloutRequest,
        baseline: str,
        candidate: str,
        record: dict[str, Any],
    ) -> None:
        self.ctl, self.request, self.record = ctl, request, record
        self.op, self.baseline, self.candidate = request.operator, baseline, candidate
        self.started_ns = time.monotonic_ns()
        #: (action, slots, wall-clock start, end) of every Start / Switch / Stop carried out
        self.phases: list[tuple[str, tuple[str, ...], float, float]] = []
        with ctl.lock:
            for s in ctl.slots[self.op]:
                s.since_ns = self.started_ns
        spec = ctl.p.specs[self.op]
        self.keyed = spec.key_by is not None
        actors = self._names(self.op)
        self._get([self._handle(a).watch.remote(request.quality_field) for a in actors])
        # Each version's figures count from here, so the variants are compared over one
        # period (a replica's own counters run from its start).
        figures = self._get([self._handle(a).rollout_stats.remote() for a in actors])
        self.offsets: dict[str, dict[str, Any]] = dict(zip(actors, figures, strict=True))

    # -- the Executor interface ------------------------------------------------------
    def observe(self) -> Observed:
        with self.ctl.lock:
            slots = [(s.index, s.node, s.active, dict(s.actors), s.since_ns)
                     for s in self.ctl.slots[self.op]]  # fmt: skip
        actors = [a for *_, replicas, _ in slots for a in replicas.values()]
        figures = self._get([self._handle(a).rollout_stats.remote() for a in actors])
        counted = {a: self._since_start(a, f) for a, f in zip(actors, figures, strict=True)}
        seen = tuple(
            Slot(str(index), node, active, frozenset(set(replicas) - {active}), since,
                 counted[replicas[active]]["frames"])
            for index, node, active, replicas, since in slots
        )  # fmt: skip
        by_version: dict[str, list[dict[str, Any]]] = {}
        for *_, replicas, _ in slots:
            for version, actor in replicas.items():
                by_version.setdefault(version, []).append(counted[actor])
        metrics = {v: _version_metrics(f) for v, f in by_version.items()}
        with self.ctl.lock:  # live in ``status()``: the versions side by side
            self.record["metrics"] = {v: asdict(m) for v, m in metrics.items()}
        return Observed(self.baseline, self.candidate, seen, metrics, self.started_ns, self.keyed)

    def start(self, action: Start) -> None:
        began = time.time()
        self._start(action)
        self.phases.append(("Start", action.slots, began, time.time()))

    def _start(self, action: Start) -> None:
        ctl, spec = self.ctl, self.ctl.p.specs[self.op]
        operator = ctl.operators[(self.op, action.version)]
        started: dict[int, tuple[str, Any]] = {}
        slots = self._slots(action.slots)
        routes = self._routes()
        remote = ray.remote(OperatorActor)
        # the replica now serving each slot: on the slot's node, it holds the new one's boot
        old = {s.index: self._handle(s.actors[s.active]) for s in slots}
        holds = dict(zip(old, self._get([a.hold_boot.remote(START_TIMEOUT_S)
                                         for a in old.values()]), strict=True))  # fmt: skip
        for s in slots:
            name = f"{s.plan_actor}@{action.version}"
            if name in ctl.used_names:  # a version back in a slot it left: a fresh name
                name = f"{name}~{next(ctl.generations)}"
            ctl.used_names.add(name)
            options = _pinned(spec, s.index, name, ctl.config.namespace, s.node_id)
            incoming = Incoming(s.plan_actor, operator, action.version, routes,
                                self.request.quality_field)  # fmt: skip
            started[s.index] = (name, remote.options(**options).remote(
                ctl.p, name, ctl.config, incoming))  # fmt: skip
        try:
            ready = [h.ready.remote() for _, h in started.values()]
            self._get(ready, timeout=START_TIMEOUT_S)
            held = self._release_boot(old)
            samples = self._get([a.sample.remote() for a in old.values()])
            warmed = self._get([
                started[s.index][1].warm.remote(x, holds[s.index]["restore_to"]
                                                if holds[s.index]["held"] else None)
                for s, x in zip(slots, samples, strict=True)
            ])  # fmt: skip
        except Exception as err:
            self._release_boot(old)
            for _, handle in started.values():
                ray.kill(handle, no_restart=True)
            raise RolloutRefused(
                f"version {action.version} could not start and warm up on slots "
                f"{', '.join(action.slots)}; the old version keeps serving: {_cause(err)}",
                pipeline=ctl.p.name, operator=self.op,
            ) from err  # fmt: skip
        with ctl.lock:
            for s in slots:
                name, handle = started[s.index]
                s.actors[action.version], ctl.handles[name] = name, handle
            self.record["boot"].extend(
                {"slot": str(s.index), "node": s.node, "held_pids": held[s.index],
                 "not_held_because": holds[s.index]["why"], **w}
                for s, w in zip(slots, warmed, strict=True)
            )  # fmt: skip

    def _release_boot(self, replicas: Mapping[int, Any]) -> dict[int, list[int]]:
        """End the ``hold_boot`` of ``replicas`` (slot -> handle); the pids each held."""
        return dict(zip(replicas, self._get([a.release_boot.remote() for a in replicas.values()]),
                        strict=True))  # fmt: skip

    def switch(self, action: Switch) -> None:
        began = time.time()
        self._switch(action)
        self.phases.append(("Switch", action.slots, began, time.time()))

    def _switch(self, action: Switch) -> None:
        ctl = self.ctl
        slots = [s for s in self._slots(action.slots) if s.active != action.version]
        old = {s.index: s.actors[s.active] for s in slots}
        new = {s.index: s.actors[action.version] for s in slots}
        producers = sorted({a for e in ctl.p.in_edges(self.op) for a in self._names(e.src)})
        if not any(_hands_over(ctl.operators[(self.op, s.active)]) for s in slots):
            # nothing to hand over: the new replicas take the slot's frames the moment the
            # producers retarget, while the old ones finish theirs
            self._get([self._handle(a).resume.remote(None) for a in new.values()])
            retargeted = [self._handle(p).retarget.remote(self.op, new) for p in producers]
            self._get([self._handle(a).handover.remote(*retargeted) for a in old.values()])
        else:
            self._get([self._handle(a).pause.remote() for a in new.values()])
            retargeted = [self._handle(p).retarget.remote(self.op, new) for p in producers]
            # retarget -> handover -> resume chained by their results: each step starts as
            # soon as Ray has the one before, not after a round trip through this controller
            # (frames for the slot wait at the new replica meanwhile)
            self._get([self._handle(new[i]).resume.remote(
                           self._handle(a).handover.remote(*retargeted))
                       for i, a in old.items()])  # fmt: skip
        now = time.monotonic_ns()
        with ctl.lock:
            for s in slots:
                s.active, s.since_ns = action.version, now
        if action.retire:
            self._retire({s.index: (old[s.index], _version_of(s, old[s.index])) for s in slots})

    def stop(self, action: Stop) -> None:
        began = time.time()
        self._stop(action)
        self.phases.append(("Stop", action.slots, began, time.time()))

    def _stop(self, action: Stop) -> None:
        slots = self._slots(action.slots)
        self._retire({s.index: (s.actors[action.version], action.version) for s in slots
                      if action.version in s.actors and s.active != action.version})  # fmt: skip

    def undo(self) -> bool:
        """After a failure mid-rollout: every slot back on the baseline, the candidate stopped.
        Whether any slot had moved."""
        seen = self.observe()
        moved = tuple(s.slot for s in seen.on(self.candidate))
        if moved:
            cold = tuple(s.slot for s in seen.on(self.candidate) if self.baseline not in s.warm)
            if cold:
                self.start(Start(cold, self.baseline))
            self.switch(Switch(moved, self.baseline))
        warm = tuple(s.slot for s in self.observe().warm(self.candidate))
        if warm:
            self.stop(Stop(warm, self.candidate))
        return bool(moved)

    # -- internals -------------------------------------------------------------------
    def _retire(self, replicas: Mapping[int, tuple[str, str]]) -> None:
        stats = self._get([self._handle(a).retire.remote() for a, _ in replicas.values()])
        for actor, _ in replicas.values():
            ray.kill(self._handle(actor), no_restart=True)
        with self.ctl.lock:
            self.ctl.retired.extend(stats)
            for actor, _ in replicas.values():
                self.ctl.handles.pop(actor, None)
            for s in self.ctl.slots[self.op]:
                if s.index in replicas:
                    s.actors.pop(replicas[s.index][1], None)

    def _since_start(self, actor: str, figures: dict[str, Any]) -> dict[str, Any]:
        """A replica's ``rollout_stats`` counted from the rollout's start (its counters run
        from its own start), so every version is measured over the same period."""
        offset = self.offsets.get(actor, {})
        counters = ("frames", "errors", "quality_sum", "quality_n")
        return figures | {k: figures[k] - offset.get(k, 0) for k in counters}

    def _slots(self, ids: tuple[str, ...]) -> list[_Slot]:
        with self.ctl.lock:
            return [s for s in self.ctl.slots[self.op] if str(s.index) in ids]

    def _routes(self) -> dict[str, list[str]]:
        """The actor serving each slot of every operator downstream of this one."""
        routes = self.ctl.routes()
        return {e.dst: routes[e.dst] for e in self.ctl.p.out_edges(self.op)}

    def _names(self, op: str) -> list[str]:
        with self.ctl.lock:
            return [a for s in self.ctl.slots[op] for a in s.actors.values()]

    def _handle(self, actor: str) -> Any:
        handle = self.ctl.handles.get(actor)
        return handle or ray.get_actor(actor, namespace=self.ctl.config.namespace)

    @staticmethod
    def _get(refs: list[Any], timeout: float | None = None) -> list[Any]:
        return ray.get(refs, timeout=timeout)


def _hands_over(operator: Operator) -> bool:
    """Whether a replica of ``operator`` has state to hand over when its slot switches: it
    keeps some (its class defines ``snapshot``) or it ticks (two replicas of a slot must
    not tick at once)."""
    return type(operator).snapshot is not Operator.snapshot or bool(operator.tick_period_ns)


def _version_metrics(figures: list[dict[str, Any]]) -> VersionMetrics:
    """One version's figures over its replicas' ``rollout_stats`` (counted from the start)."""
    recent = [ms for f in figures for ms in f["recent_ms"]]
    n = sum(f["quality_n"] for f in figures)
    return VersionMetrics(
        frames=sum(f["frames"] for f in figures),
        errors=sum(f["errors"] for f in figures),
        p99_ms=float(np.percentile(recent, 99)) if recent else None,
        quality=sum(f["quality_sum"] for f in figures) / n if n else None,
    )


def _version_of(slot: _Slot, actor: str) -> str:
    return next(v for v, a in slot.actors.items() if a == actor)


def _pinned(spec, replica: int, name: str, namespace: str, node_id: str) -> dict[str, Any]:
    """Actor options of a replacement: the slot's options, pinned to the slot's node."""
    options = actor_options(spec, replica, name, namespace)
    options.pop("fallback_strategy", None)
    options["label_selector"] = {"ray.io/node-id": node_id}
    return options


def _cause(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:400]}"


def _show(action: Any) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in asdict(action).items())
    now = time.time()
    stamp = f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d}"
    return f"{stamp} {type(action).__name__}({fields})"


# -- clients ---------------------------------------------------------------------------------
def controller(pipeline: str) -> Any:
    """The rollout controller of the running pipeline ``pipeline``."""
    try:
        return ray.get_actor(controller_name(pipeline), namespace=ROLLOUT_NAMESPACE)
    except ValueError as err:
        running = ", ".join(running_pipelines()) or "none"
        raise RolloutError(
            f"no running pipeline {pipeline!r} on this cluster (running: {running}); start it "
            "with `edgeray run` / `edgeray submit`, and point RAY_ADDRESS at its cluster"
        ) from err


def running_pipelines() -> list[str]:
    """Names of the pipelines running on the connected cluster (they have a controller)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in named if a["namespace"] == ROLLOUT_NAMESPACE)


def rollout(
    pipeline: str, request: RolloutRequest, *, wait: bool = True, timeout_s: float | None = None
) -> dict[str, Any]:
    """Roll ``request`` out in the running ``pipeline``; its record (``{"id"}`` if not ``wait``)."""
    ctl = controller(pipeline)
    rid = _unwrap(lambda: ray.get(ctl.begin.remote(request)))
    if not wait:
        return {"id": rid, "pipeline": pipeline, "operator": request.operator}
    return _unwrap(lambda: ray.get(ctl.wait.remote(rid, timeout_s)))


def status(pipeline: str | None = None) -> list[dict[str, Any]]:
    """``RolloutController.status()`` of one running pipeline, or of every one."""
    names = [pipeline] if pipeline else running_pipelines()
    return [ray.get(controller(n).status.remote()) for n in names]


def fleet_update(
    model: str, request: RolloutRequest, *, timeout_s: float | None = None
) -> list[dict[str, Any]]:
    """Roll model version ``model`` (``NAME@VERSION|ALIAS``) out to every replica of every
    running pipeline whose operators use that model, one operator after another (node by
    node with ``strategy="rolling", batch=1``). Stops at the first rollout that is refused."""
    name = ModelRef.parse(model).name
    records = []
    for pipeline in running_pipelines():
        for op in ray.get(controller(pipeline).operators_using.remote(name)):
            one = replace(request, operator=op, model=model)
            records.append(rollout(pipeline, one, timeout_s=timeout_s))
    return records


def _unwrap(call: Callable[[], Any]) -> Any:
    """Raise the edgeray error a controller raised as itself, not wrapped in Ray's."""
    try:
        return call()
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, EdgerayError):
            raise cause from None
        raise
