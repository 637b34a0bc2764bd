"""``AlertSystem``: the city's alert desk on the hub — de-duplicate, escalate, record."""

from __future__ import annotations

from typing import Any

from operators._message import Message
from operators._operator import Operator, Outputs, Resources
from operators._qos import QoS

SEVERITIES = ("info", "warning", "high", "critical")
#: Alert kinds that close an open alert of the kind named in the value.
CLOSES = {
    "controller_restored": "controller_lost",
    "incident_cleared": "incident",
    "pollution_cleared": "pollution_episode",
}


class AlertSystem(Operator):
    """Turns the alerts of every roadside unit and the simulator into alert records.

    Inputs:
      ``alerts``: ``{"kind", "severity", "intersection", "unit", "t_s", "detail"}``.
    Outputs:
      ``records``: one record per alert that is new, with ``first_t_s``, ``count`` (repeats
      folded into it) and ``escalated``. A repeat of an open alert (same kind and
      intersection) within ``dedup_s`` is folded in, not re-recorded, unless it is the
      ``escalate_after``-th: then the record is re-issued one severity higher.
      A closing alert (``CLOSES``) is recorded and closes the open one.
    Parameters (keyword-only): ``dedup_s``, ``escalate_after``.

    >>> desk = AlertSystem(escalate_after=3)
    >>> def a(i): return Message("rsu", i, i, {"kind": "device_garbage", "severity": "warning",
    ...     "intersection": "B1", "unit": "rsu-1", "t_s": float(i), "detail": ""})
    >>> out = [m for i in range(4) for _, m in desk.process("alerts", a(i))]
    >>> [(m.payload["severity"], m.payload["count"]) for m in out]
    [('warning', 1), ('high', 3)]
    """

    inputs = ("alerts",)
    outputs = ("records",)
    resources = Resources(num_cpus=0.05)

    def __init__(self, *, dedup_s: float = 600.0, escalate_after: int = 5) -> None:
        self.dedup_s = dedup_s
        self.escalate_after = escalate_after
        self._open: dict[tuple[str, str], dict[str, Any]] = {}
        self.records = 0

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        kind, junction, t_s = str(p["kind"]), str(p["intersection"]), float(p["t_s"])
        if kind in CLOSES:
            self._open.pop((CLOSES[kind], junction), None)
            yield "records", self._record(message, p, t_s, 1, escalated=False)
            return
        key = (kind, junction)
        entry = self._open.get(key)
        if entry is None or t_s - entry["last"] > self.dedup_s:
            self._open[key] = {
                "first": t_s,
                "last": t_s,
                "count": 1,
                "severity": str(p["severity"]),
            }
            yield "records", self._record(message, p, t_s, 1, escalated=False)
            return
        entry["last"], entry["count"] = t_s, entry["count"] + 1
        if entry["count"] % self.escalate_after == 0:
            level = min(SEVERITIES.index(entry["severity"]) + 1, len(SEVERITIES) - 1)
            entry["severity"] = SEVERITIES[level]
            yield (
                "records",
                self._record(
                    message,
                    {**p, "severity": entry["severity"]},
                    entry["first"],
                    entry["count"],
                    escalated=True,
                ),
            )

    def _record(
        self, message: Message, p, first_t_s: float, count: int, *, escalated: bool
    ) -> Message:
        self.records += 1
        record = {
            "kind": str(p["kind"]),
            "severity": str(p["severity"]),
            "intersection": str(p["intersection"]),
            "unit": str(p.get("unit", "")),
            "t_s": float(p["t_s"]),
            "first_t_s": first_t_s,
            "count": count,
            "escalated": escalated,
            "detail": str(p.get("detail", "")),
        }
        return message.derive(record, qos=QoS.EMERGENCY)

    def snapshot(self) -> Any:
        return {"open": {k: dict(v) for k, v in self._open.items()}, "records": self.records}

    def restore(self, state: Any) -> None:
        self._open = {tuple(k): dict(v) for k, v in state["open"].items()}
        self.records = state["records"]
