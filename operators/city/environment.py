"""``EnvironmentalMonitor``: rolling air-quality statistics and pollution-episode alerts."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from operators._message import Message
from operators._operator import Operator, Outputs, Resources
from operators._qos import QoS

#: Least rise over the rolling baseline (ug/m3) that counts as an episode, per pollutant.
MIN_RISE: Mapping[str, float] = MappingProxyType({"pm25": 15.0, "no2": 30.0})


class EnvironmentalMonitor(Operator):
    """Watches each intersection's PM2.5 and NO2 against its own rolling baseline.

    Inputs:
      ``air``: ``{"intersection", "unit", "t_s", "pm25", "no2"}`` readings.
    Outputs:
      ``stats``: per reading, the rolling ``<pollutant>_median`` and ``<pollutant>_mad``
      of the baseline window and the ``<pollutant>_recent`` mean.
      ``alerts``: ``pollution_episode`` when the mean of the last ``recent`` readings of a
      pollutant rises above the baseline median by more than ``k`` robust standard
      deviations and at least ``MIN_RISE``; ``pollution_cleared`` when it falls back.
    Parameters (keyword-only): ``window`` (baseline readings), ``recent``, ``k``.
    While an episode lasts the baseline is frozen, so it does not learn the episode.

    >>> mon = EnvironmentalMonitor(window=20, recent=2)
    >>> def air(i, pm): return Message("city", i, i * 10**10, {"intersection": "B1",
    ...     "unit": "rsu-1", "t_s": 10.0 * i, "pm25": pm, "no2": 30.0})
    >>> _ = [list(mon.process("air", air(i, 12.0 + i % 3))) for i in range(20)]
    >>> out = [(p, m) for i in range(20, 23) for p, m in mon.process("air", air(i, 80.0))]
    >>> [m.payload["kind"] for p, m in out if p == "alerts"]
    ['pollution_episode']
    """

    inputs = ("air",)
    outputs = ("stats", "alerts")
    resources = Resources(num_cpus=0.05)

    def __init__(self, *, window: int = 60, recent: int = 3, k: float = 5.0) -> None:
        self.window = window
        self.recent = recent
        self.k = k
        self._memory: dict[str, dict[str, Any]] = {}

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        junction = str(p["intersection"])
        m = self._memory.setdefault(
            junction,
            {
                "active": False,
                **{
                    name: {"base": deque(maxlen=self.window), "recent": deque(maxlen=self.recent)}
                    for name in MIN_RISE
                },
            },
        )
        stats: dict[str, Any] = {
            "intersection": junction,
            "unit": p.get("unit", ""),
            "t_s": float(p["t_s"]),
        }
        high = []
        for name, rise in MIN_RISE.items():
            series = m[name]
            if len(series["recent"]) == self.recent and not m["active"]:
                series["base"].append(series["recent"][0])  # the oldest recent joins the baseline
            series["recent"].append(float(p[name]))
            base = np.array(series["base"], float)
            median = float(np.median(base)) if base.size else float("nan")
            mad = float(np.median(np.abs(base - median))) * 1.4826 if base.size else float("nan")
            now = float(np.mean(series["recent"]))
            stats |= {f"{name}_median": median, f"{name}_mad": mad, f"{name}_recent": now}
            if base.size >= self.window // 2 and now > median + max(self.k * mad, rise):
                high.append(name)
        yield "stats", message.derive(stats, qos=QoS.TELEMETRY)
        if high and not m["active"]:
            m["active"] = True
            yield "alerts", self._alert(message, stats, "pollution_episode", "high", high)
        elif not high and m["active"]:
            m["active"] = False
            yield "alerts", self._alert(message, stats, "pollution_cleared", "info", [])

    def _alert(self, message: Message, stats: dict, kind: str, severity: str, names) -> Message:
        detail = ", ".join(
            f"{n} {stats[n + '_recent']:.0f} vs {stats[n + '_median']:.0f}" for n in names
        )
        payload = {
            "kind": kind,
            "severity": severity,
            "intersection": stats["intersection"],
            "unit": stats["unit"],
            "t_s": stats["t_s"],
            "detail": detail,
        }
        return message.derive(payload, qos=QoS.EMERGENCY)

    def snapshot(self) -> Any:
        return {
            j: {
                "active": m["active"],
                **{n: {k: list(v) for k, v in m[n].items()} for n in MIN_RISE},
            }
            for j, m in self._memory.items()
        }

    def restore(self, state: Any) -> None:
        self._memory = {
            j: {
                "active": s["active"],
                **{
                    n: {
                        "base": deque(s[n]["base"], maxlen=self.window),
                        "recent": deque(s[n]["recent"], maxlen=self.recent),
                    }
                    for n in MIN_RISE
                },
            }
            for j, s in state.items()
        }
