"""The deployment plan of a pipeline: actor names, links between replicas, end-of-stream counts.

Pure (no Ray): computed once by the driver and given to every actor, so an
actor that Ray restarts knows its wiring again from its constructor arguments.

A *link* joins one replica of an edge's producer to one replica of its
consumer; its window bounds the messages in flight on it. A replica forwards
the end of source ``x`` once it has received it on every incoming link whose
producer depends on ``x`` (feedback edges and topics carry no end-of-stream).

>>> from pipelines.testing import ListSource, ListSink, Pipeline
>>> p = Pipeline("demo")
>>> _ = p.source("src", ListSource([]), rate_hz=1)
>>> _ = p.sink("out", ListSink(), replicas=2)
>>> p.connect("src", "out")
>>> plan = make_plan(p)
>>> plan.actor_names()
['demo/src#0', 'demo/out#0', 'demo/out#1']
>>> plan.expected_eos["demo/out#1"]
{'demo/src#0': 1}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines._graph import Edge, Pipeline


def actor_name(pipeline: str, operator: str, replica: str) -> str:
    return f"{pipeline}/{operator}#{replica}"


#: Ray namespace of topic brokers: one for the whole cluster, so pipelines started apart meet.
TOPIC_NAMESPACE = "edgeray-topics"
TOPIC_PREFIX = "edgeray/topic/"


def topic_actor_name(topic: str) -> str:
    return f"{TOPIC_PREFIX}{topic}"


@dataclass(frozen=True)
class Replica:
    actor: str
    operator: str
    index: int
    replica_id: str


@dataclass(frozen=True)
class Plan:
    pipeline: str
    replicas: dict[str, list[Replica]]
    #: actor -> for each source replica whose end it waits for, how many links bring it
    expected_eos: dict[str, dict[str, int]] = field(default_factory=dict)

    def actor_names(self) -> list[str]:
        return [r.actor for rs in self.replicas.values() for r in rs]

    def replica(self, actor: str) -> Replica:
        return next(r for rs in self.replicas.values() for r in rs if r.actor == actor)


def make_plan(p: Pipeline, unplaceable: frozenset[str] = frozenset()) -> Plan:
    """The plan of ``p``; replicas in ``unplaceable`` send nothing, so nobody waits on them."""
    replicas = {
        s.name: [
            Replica(actor_name(p.name, s.name, rid), s.name, i, rid)
            for i, rid in enumerate(s.replica_ids())
        ]
        for s in p.specs.values()
    }
    # which source replicas' ends reach each actor, and over how many links
    reach: dict[str, dict[str, int]] = {}
    for name in _topological(p):
        for r in replicas[name]:
            if r.actor in unplaceable:
                reach[r.actor] = {}
                continue
            if p.specs[name].role == "source":
                reach[r.actor] = {r.actor: 0}
                continue
            counts: dict[str, int] = {}
            for e in p.in_edges(name, feedback=False):
                for up in replicas[e.src]:
                    for src in reach.get(up.actor, {}):
                        counts[src] = counts.get(src, 0) + 1
            reach[r.actor] = counts
    return Plan(p.name, replicas, reach)


def _topological(p: Pipeline) -> list[str]:
    order, seen = [], set()

    def visit(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        for e in p.in_edges(n, feedback=False):
            visit(e.src)
        order.append(n)

    for n in p.specs:
        visit(n)
    return order


def out_links(p: Pipeline, operator: str, port: str) -> list[Edge]:
    return [e for e in p.out_edges(operator) if e.src_port == port]
