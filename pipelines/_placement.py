"""Label selectors and the node table they are matched against (pure, no Ray).

Selector values follow Ray's ``label_selector`` syntax: ``"v"``, ``"!v"``,
``"in(a,b)"``, ``"!in(a,b)"``. A negative term also matches a node that lacks
the key, as in Ray.

>>> node = Node("n1", labels={"edge.role": "vehicle", "edge.zone": "north"})
>>> matches({"edge.role": "in(vehicle,rsu)", "edge.zone": "!south"}, node.labels)
True
>>> matches({"edge.role": "hub"}, node.labels)
False
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True)
class Node:
    """One row of the node table: id, labels, total resources, alive."""

    node_id: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    resources: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    alive: bool = True

    @property
    def name(self) -> str:
        return self.labels.get("edge.node", self.node_id[:12])


@dataclass(frozen=True)
class Placement:
    """Where an operator (or a keyed replica) may run: a selector, then fallbacks in order.

    ``node_id`` pins it to one node (Ray's ``ray.io/node-id`` label).
    """

    selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    fallbacks: Sequence[Mapping[str, str]] = ()
    node_id: str | None = None

    def selectors(self) -> list[dict[str, str]]:
        """Selectors to try, first to last, with the node pin folded in."""
        pin = {"ray.io/node-id": self.node_id} if self.node_id else {}
        return [{**s, **pin} for s in (self.selector, *self.fallbacks)]

    def __str__(self) -> str:
        return " | ".join(_fmt(s) for s in self.selectors()) or "{}"


def _fmt(selector: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in selector.items()) + "}"


def _parse(value: str) -> tuple[bool, set[str]]:
    negate = value.startswith("!")
    body = value[1:] if negate else value
    if body.startswith("in(") and body.endswith(")"):
        options = {v.strip() for v in body[3:-1].split(",")}
    else:
        options = {body}
    return negate, options


def term_matches(key: str, value: str, labels: Mapping[str, str]) -> bool:
    negate, options = _parse(value)
    present = key in labels and labels[key] in options
    return not present if negate else present


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(term_matches(k, v, labels) for k, v in selector.items())


def node_labels(node: Node) -> dict[str, str]:
    """A node's labels with Ray's built-in ``ray.io/node-id``."""
    return {**node.labels, "ray.io/node-id": node.node_id}


def fits(needs: Mapping[str, float], node: Node) -> bool:
    return all(node.resources.get(k, 0.0) >= v for k, v in needs.items() if v > 0)


def satisfying(
    placement: Placement, needs: Mapping[str, float], nodes: Sequence[Node]
) -> list[Node]:
    """Live nodes that satisfy the first selector any node satisfies (Ray's fallback order)."""
    for selector in placement.selectors():
        found = [
            n for n in nodes if n.alive and matches(selector, node_labels(n)) and fits(needs, n)
        ]
        if found:
            return found
    return []


def closest(placement: Placement, nodes: Sequence[Node], k: int = 3) -> list[str]:
    """The ``k`` live nodes matching the most selector terms, described for an error message."""
    selector = placement.selectors()[0]

    def score(n: Node) -> int:
        return sum(term_matches(key, v, node_labels(n)) for key, v in selector.items())

    ranked = sorted((n for n in nodes if n.alive), key=score, reverse=True)[:k]
    out = []
    for n in ranked:
        missing = [
            f"{key}={node_labels(n).get(key, '<absent>')}"
            for key, v in selector.items()
            if not term_matches(key, v, node_labels(n))
        ]
        out.append(f"{n.name} (differs on {', '.join(missing) or 'resources'})")
    return out
