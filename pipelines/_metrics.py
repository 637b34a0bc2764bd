"""Metrics through ``ray.util.metrics``, tagged with pipeline, operator and version.

Series are per worker (RAY-NOTES.md), so every series carries the operator
name; a restarted actor starts new series under the same tags. They appear in
Prometheus text as ``ray_edgeray_<name>...`` on the node where the actor runs.
"""

from __future__ import annotations

from ray.util import metrics as ray_metrics

#: Histogram boundaries in milliseconds, for processing and end-to-end latency.
LATENCY_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]


class RayMetrics:
    """``operators.Metrics`` on Ray; also the runtime's own series."""

    def __init__(self, *, pipeline: str, operator: str, version: str) -> None:
        self.base = {"pipeline": pipeline, "operator": operator, "version": version}
        self._made: dict[tuple[str, str, tuple[str, ...]], object] = {}

    def _metric(self, kind: str, name: str, tags: dict[str, str]):
        keys = tuple(sorted(tags))
        made = self._made.get((kind, name, keys))
        if made is None:
            tag_keys = (*self.base, *keys)
            full = f"edgeray_{name}"
            if kind == "counter":
                made = ray_metrics.Counter(full, tag_keys=tag_keys)
            elif kind == "gauge":
                made = ray_metrics.Gauge(full, tag_keys=tag_keys)
            else:
                made = ray_metrics.Histogram(full, boundaries=LATENCY_MS, tag_keys=tag_keys)
            made.set_default_tags(self.base)
            self._made[(kind, name, keys)] = made
        return made

    def count(self, name: str, value: float = 1.0, **tags: str) -> None:
        self._metric("counter", name, tags).inc(value, tags=tags or None)

    def observe(self, name: str, value: float, **tags: str) -> None:
        self._metric("histogram", name, tags).observe(value, tags=tags or None)

    def gauge(self, name: str, value: float, **tags: str) -> None:
        self._metric("gauge", name, tags).set(value, tags=tags or None)
