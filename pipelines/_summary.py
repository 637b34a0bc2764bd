"""What a run reports at its end: per-edge accounting and the run's figures.

Per edge, counting unique messages:
``sent = delivered + sum(dropped.values()) + dead_lettered + in_flight``;
re-sends and discarded duplicates are counted beside it. A message is lost
only if it is in none of those buckets.

>>> a = EdgeAccount(sent=10, delivered=7, dropped={"latest-only": 2}, dead_lettered=1)
>>> a.holds()
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class EdgeAccount:
    sent: int = 0
    delivered: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    in_flight: int = 0
    resent: int = 0
    duplicates: int = 0

    def holds(self) -> bool:
        total = self.delivered + sum(self.dropped.values()) + self.dead_lettered + self.in_flight
        return self.sent == total

    def __add__(self, other: EdgeAccount) -> EdgeAccount:
        dropped = dict(self.dropped)
        for k, v in other.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
        return EdgeAccount(
            self.sent + other.sent,
            self.delivered + other.delivered,
            dropped,
            self.dead_lettered + other.dead_lettered,
            self.in_flight + other.in_flight,
            self.resent + other.resent,
            self.duplicates + other.duplicates,
        )


@dataclass(frozen=True)
class RunSummary:
    """The figures of one run, returned by every runner and printed at its end."""

    pipeline: str
    duration_s: float
    sources: Mapping[str, int]
    sinks: Mapping[str, int]
    edges: Mapping[str, EdgeAccount]
    dead_lettered: Mapping[str, int]
    latency_ms: Sequence[float] = ()
    stopped_by: str = "end-of-stream"
    unplaceable: Sequence[str] = ()
    placement: Mapping[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        """Unique messages recorded by the sinks."""
        return sum(self.sinks.values())

    @property
    def fps(self) -> float:
        return self.messages / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def dropped(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for account in self.edges.values():
            for reason, n in account.dropped.items():
                total[reason] = total.get(reason, 0) + n
        return total

    def latency_percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latency_ms, q)) if len(self.latency_ms) else None

    def identity_holds(self) -> bool:
        return all(a.holds() for a in self.edges.values())

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("latency_ms")
        out.update(
            messages=self.messages,
            fps=round(self.fps, 2),
            latency_p50_ms=self.latency_percentile(50),
            latency_p99_ms=self.latency_percentile(99),
            dropped=self.dropped,
            identity_holds=self.identity_holds(),
        )
        return out

    def format(self) -> str:
        p50, p99 = self.latency_percentile(50), self.latency_percentile(99)
        lat = "n/a" if p50 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        lines = [
            f"pipeline {self.pipeline}: {self.messages} messages in {self.duration_s:.1f} s "
            f"({self.fps:.1f} fps), end-to-end latency {lat}, stopped by {self.stopped_by}",
            f"  sources: {dict(self.sources)}   sinks: {dict(self.sinks)}",
            *([f"  placed: {_placed(self.placement)}"] if self.placement else []),
            f"  dropped: {self.dropped or 'none'}   dead-lettered: "
            f"{dict(self.dead_lettered) or 'none'}",
        ]
        if self.unplaceable:
            lines.append(f"  unplaceable: {', '.join(self.unplaceable)}")
        verdict = "holds" if self.identity_holds() else "BROKEN"
        lines.append(f"  accounting (sent = delivered + dropped + dead-lettered + in-flight) "
                     f"{verdict}:")  # fmt: skip
        for name, a in self.edges.items():
            lines.append(
                f"    {name}: sent {a.sent} = delivered {a.delivered} + dropped "
                f"{dict(a.dropped) or 0} + dead {a.dead_lettered} + in-flight {a.in_flight}"
                f"  (resent {a.resent}, duplicates {a.duplicates})"
            )
        return "\n".join(lines)


def _placed(placement: Mapping[str, str]) -> str:
    """``{actor: node}`` as ``node: actor, actor; node: ...``."""
    by_node: dict[str, list[str]] = {}
    for actor, node in placement.items():
        by_node.setdefault(node, []).append(actor.split("/", 1)[-1])
    return "; ".join(f"{node}: {', '.join(actors)}" for node, actors in sorted(by_node.items()))
