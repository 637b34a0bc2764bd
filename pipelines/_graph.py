"""The pipeline builder: sources, operators, sinks, edges, replicas, placement, topics.

>>> from pipelines.testing import ListSource, ListSink
>>> p = Pipeline("demo")
>>> p.source("src", ListSource([{"x": 1}]), rate_hz=10)
'src'
>>> p.sink("out", ListSink())
'out'
>>> p.connect("src", "out")
>>> p.validate()          # no node table: graph checks only
>>> [f"{e.src}.{e.src_port} -> {e.dst}.{e.dst_port}" for e in p.edges]
['src.out -> out.in']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from operators import Operator, Sink, Source
from pipelines._placement import Node, Placement

Role = Literal["source", "operator", "sink"]
POLICIES = ("block", "drop-oldest", "latest-only")
TIME_MODES = ("wall", "event")


@dataclass(frozen=True)
class OperatorSpec:
    """One operator of a pipeline as the definition chose to run it.

    ``key_by`` is ``None`` for round robin over ``replicas``, else ``"source"``
    or a payload field; ``keys`` declares one replica per key, each with its
    own placement (then ``replicas == len(keys)``).
    """

    name: str
    operator: Operator
    role: Role
    replicas: int = 1
    key_by: str | None = None
    keys: Mapping[str, Placement] | None = None
    placement: Placement | None = None
    rate_hz: float | None = None

    def replica_ids(self) -> list[str]:
        """``key`` for keyed replicas, else ``0..replicas-1`` as strings."""
        return list(self.keys) if self.keys else [str(i) for i in range(self.replicas)]

    def replica_placement(self, replica: int) -> Placement | None:
        if self.keys:
            return list(self.keys.values())[replica]
        return self.placement


@dataclass(frozen=True)
class Edge:
    """A connection between two named ports, with its queue policy.

    ``window``: messages in flight on the edge before the producer waits (or drops).
    ``policy``: ``block`` (never drop), ``drop-oldest`` or ``latest-only``.
    ``rate_hz`` / ``deadline_ns``: optional rate limit and maximum age.
    ``feedback``: a back edge (allowed to close a cycle; carries no end-of-stream).
    """

    src: str
    src_port: str
    dst: str
    dst_port: str
    policy: str = "block"
    window: int = 8
    rate_hz: float | None = None
    deadline_ns: int | None = None
    feedback: bool = False

    @property
    def name(self) -> str:
        return f"{self.src}.{self.src_port}->{self.dst}.{self.dst_port}"


@dataclass(frozen=True)
class Topic:
    """A port published to, or an input subscribed from, a named topic between pipelines."""

    topic: str
    operator: str
    port: str


@dataclass
class Pipeline:
    """A graph of operators, built in Python and validated before it runs.

    ``time`` is ``"wall"`` (ticks, deadlines and rate limits on the processing
    clock) or ``"event"`` (they follow the sources' event time). ``models`` is
    where operators' model references (``detector@stable``) resolve: a registry
    path or pyarrow URI (``None``: ``$EDGERAY_MODELS``, else
    ``~/.local/share/edgeray/models``, read on the node that runs the operator).
    """

    name: str
    time: str = "wall"
    models: str | None = None
    specs: dict[str, OperatorSpec] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    publishes: list[Topic] = field(default_factory=list)
    subscribes: list[Topic] = field(default_factory=list)
    _problems: list[str] = field(default_factory=list, repr=False)

    # -- building -------------------------------------------------------------------
    def source(
        self,
        name: str,
        operator: Source,
        *,
        rate_hz: float | None = None,
        placement: Placement | Mapping[str, str] | None = None,
        fallbacks: Sequence[Mapping[str, str]] = (),
        replicas: int = 1,
    ) -> str:
        """Add a source polled ``rate_hz`` times a second (``None``: as fast as it can)."""
        return self._add(
            name, operator, "source", rate_hz=rate_hz, replicas=replicas,
            placement=_placement(placement, fallbacks),
        )  # fmt: skip

    def operator(
        self,
        name: str,
        operator: Operator,
        *,
        replicas: int = 1,
        key_by: str | None = None,
        keys: Mapping[str, Placement | Mapping[str, str]] | None = None,
        placement: Placement | Mapping[str, str] | None = None,
        fallbacks: Sequence[Mapping[str, str]] = (),
    ) -> str:
        """Add an operator; ``keys`` gives one replica per key with its own placement."""
        keyed = None if keys is None else {str(k): _placement(v) for k, v in keys.items()}
        return self._add(
            name, operator, "operator", replicas=len(keyed) if keyed else replicas,
            key_by=key_by or ("source" if keyed else None), keys=keyed,
            placement=_placement(placement, fallbacks),
        )  # fmt: skip

    def sink(
        self,
        name: str,
        operator: Operator,
        *,
        replicas: int = 1,
        key_by: str | None = None,
        placement: Placement | Mapping[str, str] | None = None,
        fallbacks: Sequence[Mapping[str, str]] = (),
    ) -> str:
        """Add a sink (an operator without outputs); it de-duplicates what it receives."""
        return self._add(
            name, operator, "sink", replicas=replicas, key_by=key_by,
            placement=_placement(placement, fallbacks),
        )  # fmt: skip

    def connect(
        self,
        src: str,
        dst: str,
        *,
        policy: str = "block",
        window: int = 8,
        rate_hz: float | None = None,
        deadline_ms: float | None = None,
        feedback: bool = False,
    ) -> None:
        """Connect ``"op.port"`` to ``"op.port"`` (the port may be left out when there is one)."""
        (s, sp), (d, dp) = self._end(src, "outputs"), self._end(dst, "inputs")
        deadline_ns = None if deadline_ms is None else int(deadline_ms * 1e6)
        self.edges.append(Edge(s, sp, d, dp, policy, window, rate_hz, deadline_ns, feedback))

    def publish(self, src: str, topic: str) -> None:
        """Publish port ``"op.port"`` to ``topic`` for other pipelines to subscribe to."""
        op, port = self._end(src, "outputs")
        self.publishes.append(Topic(topic, op, port))

    def subscribe(self, topic: str, dst: str) -> None:
        """Feed ``topic`` (published by another pipeline) into ``"op.port"``."""
        op, port = self._end(dst, "inputs")
        self.subscribes.append(Topic(topic, op, port))

    # -- reading --------------------------------------------------------------------
    def validate(self, nodes: Sequence[Node] | None = None) -> None:
        """Raise ``ValidationError`` listing every defect; ``nodes`` adds placement checks."""
        from pipelines._validate import validate

        validate(self, nodes)

    def in_edges(self, name: str, *, feedback: bool | None = None) -> list[Edge]:
        return [
            e for e in self.edges if e.dst == name and (feedback is None or e.feedback == feedback)
        ]

    def out_edges(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.src == name]

    def upstream_sources(self, name: str) -> set[str]:
        """Source operators whose end-of-stream reaches ``name`` (feedback edges excluded)."""
        seen, todo, found = set(), [name], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if self.specs.get(current) and self.specs[current].role == "source":
                found.add(current)
            todo.extend(e.src for e in self.in_edges(current, feedback=False))
        return found

    # -- internals ------------------------------------------------------------------
    def _add(self, name: str, operator: Operator, role: Role, **kw) -> str:
        if name in self.specs:
            self._problems.append(
                f"duplicate name {name!r}: two operators are called {name!r}; "
                "give each a unique name"
            )
            return name
        self.specs[name] = OperatorSpec(name=name, operator=operator, role=role, **kw)
        return name

    def _end(self, ref: str, direction: str) -> tuple[str, str]:
        op, _, port = ref.partition(".")
        spec = self.specs.get(op)
        if not port and spec is not None and isinstance(spec.operator, Operator):
            declared = spec.operator.ports(direction)
            if len(declared) == 1:
                port = next(iter(declared))
            else:
                port = "?"
                self._problems.append(
                    f"{ref!r}: operator {op!r} has {len(declared)} {direction} "
                    f"({', '.join(declared) or 'none'}); name one as '{op}.<port>'"
                )
        return op, port


def _placement(
    value: Placement | Mapping[str, str] | None, fallbacks: Sequence[Mapping[str, str]] = ()
) -> Placement | None:
    if value is None or isinstance(value, Placement):
        return value
    return Placement(selector=dict(value), fallbacks=tuple(dict(f) for f in fallbacks))


def role_class(role: Role) -> type[Operator]:
    return {"source": Source, "sink": Sink}.get(role, Operator)
