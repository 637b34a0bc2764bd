"""``validate(pipeline, nodes)``: every defect of a graph, found before anything runs.

A pure function of the pipeline and a node table. Each problem names the
operator and says how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from operators import Operator, Source
from pipelines._errors import ValidationError
from pipelines._placement import Node, Placement, closest, satisfying

if TYPE_CHECKING:
    from pipelines._graph import Pipeline


def validate(pipeline: Pipeline, nodes: Sequence[Node] | None = None) -> None:
    problems = list(pipeline._problems)
    problems += _roles(pipeline)
    problems += _edges(pipeline)
    problems += _cycles(pipeline)
    if nodes is not None:
        problems += _placements(pipeline, nodes)
    if problems:
        raise ValidationError(pipeline.name, problems)


def _roles(p: Pipeline) -> list[str]:
    from pipelines._graph import POLICIES, TIME_MODES

    out = []
    if p.time not in TIME_MODES:
        out.append(f"time={p.time!r}: use one of {', '.join(TIME_MODES)}")
    for spec in p.specs.values():
        op = spec.operator
        if not isinstance(op, Operator):
            out.append(
                f"operator {spec.name!r}: got a {type(op).__name__}, expected an instance of "
                "an operators.Operator subclass"
            )
            continue
        if spec.role == "source" and not isinstance(op, Source):
            out.append(
                f"source {spec.name!r}: {type(op).__name__} is not an operators.Source; "
                "derive it from Source and implement poll(now)"
            )
        if spec.role == "sink" and op.ports("outputs"):
            out.append(f"sink {spec.name!r}: a sink has no outputs; add it with p.operator()")
        if spec.replicas < 1:
            out.append(f"operator {spec.name!r}: replicas={spec.replicas}; use 1 or more")
        if spec.rate_hz is not None and spec.rate_hz <= 0:
            out.append(f"source {spec.name!r}: rate_hz={spec.rate_hz}; use a positive rate")
    for e in p.edges:
        if e.policy not in POLICIES:
            out.append(f"edge {e.name}: policy={e.policy!r}; use one of {', '.join(POLICIES)}")
        if e.window < 1:
            out.append(f"edge {e.name}: window={e.window}; use 1 or more")
        if e.rate_hz is not None and e.rate_hz <= 0:
            out.append(f"edge {e.name}: rate_hz={e.rate_hz}; use a positive rate or None")
        if e.deadline_ns is not None and e.deadline_ns <= 0:
            out.append(
                f"edge {e.name}: deadline_ms={e.deadline_ns / 1e6:g}; use a positive deadline "
                "or None"
            )
    return out


def _edges(p: Pipeline) -> list[str]:
    out = []
    ends = [(e.src, e.src_port, "outputs", f"edge {e.name}") for e in p.edges]
    ends += [(e.dst, e.dst_port, "inputs", f"edge {e.name}") for e in p.edges]
    ends += [(t.operator, t.port, "outputs", f"publish {t.topic}") for t in p.publishes]
    ends += [(t.operator, t.port, "inputs", f"subscribe {t.topic}") for t in p.subscribes]
    for op, port, direction, where in ends:
        spec = p.specs.get(op)
        if spec is None:
            known = ", ".join(p.specs) or "none"
            out.append(f"{where}: no operator {op!r} in the pipeline (known: {known})")
            continue
        if not isinstance(spec.operator, Operator):
            continue  # reported by _roles
        declared = spec.operator.ports(direction)
        if port != "?" and port not in declared:
            out.append(
                f"{where}: operator {op!r} has no {direction[:-1]} port {port!r} "
                f"(it declares: {', '.join(declared) or 'none'}); fix the port name"
            )
    operators = {n for n, s in p.specs.items() if isinstance(s.operator, Operator)}
    for e in p.edges:
        if e.src in operators and e.dst in operators:
            out += _schema_mismatch(p, e)
    fed = {e.dst for e in p.edges} | {t.operator for t in p.subscribes}
    for spec in p.specs.values():
        if spec.role != "source" and spec.name not in fed and spec.name in operators:
            out.append(
                f"operator {spec.name!r} has no input connected; connect one of its inputs "
                f"({', '.join(spec.operator.ports('inputs')) or 'none declared'}) or remove it"
            )
    return out


def _schema_mismatch(p: Pipeline, e) -> list[str]:
    src = p.specs[e.src].operator.ports("outputs").get(e.src_port)
    dst = p.specs[e.dst].operator.ports("inputs").get(e.dst_port)
    if not (src and dst and src.schema and dst.schema):
        return []
    out = []
    for name, want in dst.schema.items():
        got = src.schema.get(name)
        if got is None:
            out.append(
                f"edge {e.name}: {e.dst!r} expects payload field {name!r}, "
                f"which {e.src!r} does not declare; add it or fix the field name"
            )
        elif not want.accepts(got):
            out.append(
                f"edge {e.name}: field {name!r} is {got.dtype}{list(got.shape or [])} at "
                f"{e.src!r} but {e.dst!r} expects {want.dtype}{list(want.shape or [])}; "
                "make the two port schemas agree, or convert it in an operator between them"
            )
    return out


def _cycles(p: Pipeline) -> list[str]:
    graph = {n: [e.dst for e in p.out_edges(n) if not e.feedback] for n in p.specs}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in graph:
        if n not in state and (cycle := visit(n)):
            return [
                f"cycle {' -> '.join(cycle)}: a pipeline is acyclic; mark the back edge "
                f"connect(..., feedback=True) if {cycle[-2]!r} -> {cycle[-1]!r} is feedback"
            ]
    return []


def _placements(p: Pipeline, nodes: Sequence[Node]) -> list[str]:
    out = []
    for spec in p.specs.values():
        if not isinstance(spec.operator, Operator):
            continue  # reported by _roles
        needs = spec.operator.resources.as_dict()
        # keyed replicas each have their own placement; others share the operator's
        replicas = spec.replica_ids() if spec.keys else spec.replica_ids()[:1]
        for i, replica in enumerate(replicas):
            placement = spec.replica_placement(i) or Placement()
            if satisfying(placement, needs, nodes):
                continue
            who = f"operator {spec.name!r}" + (f" replica {replica!r}" if spec.keys else "")
            near = "; ".join(closest(placement, nodes)) or "no live nodes"
            out.append(
                f"{who}: no live node satisfies {placement} with resources {needs}; "
                f"closest: {near}. Fix the selector or add fallbacks, or start a node "
                "with those labels and resources"
            )
    return out
