"""``IoTDeviceManager``: the sensors of the roadside units, their heartbeats and sanity."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from operators._message import Message
from operators._operator import Context, Operator, Outputs, Resources
from operators._qos import QoS

#: Physical bounds of each reading field (inclusive): a 100 m lane-area detector holds at
#: most ~20 cars, a stop-line loop passes at most a few per second, air sensors saturate.
BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "vehicles": (0, 40),
        "halting": (0, 40),
        "passed": (0, 10),
        "downstream": (0, 80),
        "pm25": (0, 1000),
        "no2": (0, 2000),
    }
)
#: Which fields each input carries.
FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "readings": ("vehicles", "halting", "passed", "downstream"),
        "air": ("pm25", "no2"),
    }
)


def check(port: str, payload: Mapping[str, Any]) -> str | None:
    """Why a reading is garbage (``missing``, ``nan``, ``negative``, ``out-of-bounds``) or ``None``.

    >>> check("air", {"pm25": 12.0, "no2": -3.0})
    'negative'
    >>> check("air", {"pm25": float("nan"), "no2": 3.0})
    'nan'
    >>> check("air", {"pm25": 12.0, "no2": 30.0}) is None
    True
    """
    for name in FIELDS[port]:
        if name not in payload:
            return "missing"
        values = np.asarray(payload[name], float)
        low, high = BOUNDS[name]
        if np.isnan(values).any():
            return "nan"
        if (values < low).any():
            return "negative"
        if (values > high).any() or np.isinf(values).any():
            return "out-of-bounds"
    return None


class IoTDeviceManager(Operator):
    """Keeps the registry of sensors per roadside unit; passes on only sane readings.

    Inputs:
      ``readings``: detector readings of an intersection (the device ``<id>/detectors``).
      ``air``: air-quality readings of an intersection (the device ``<id>/air``).
    Outputs:
      ``readings`` / ``air``: what passed the checks, unchanged.
      ``alerts``: ``device_garbage`` (a reading rejected: ``reason`` says why) and
      ``device_silent`` (no heartbeat, i.e. no reading, for ``silence_s``), once each
      until the device behaves again.
    Parameters: ``silence_s`` (simulated seconds, keyword-only).
    A device is registered when it first reports. Rejections are counted per reason in
    ``rejected`` and in the ``rejected`` metric; they never reach decisions.

    >>> m = IoTDeviceManager()
    >>> bad = {"intersection": "B1", "unit": "rsu-1", "t_s": 5.0, "pm25": -1.0, "no2": 20.0}
    >>> [(p, a.payload["kind"]) for p, a in m.process("air", Message("city", 1, 5, bad))]
    [('alerts', 'device_garbage')]
    >>> m.rejected
    {'negative': 1}
    """

    inputs = ("readings", "air")
    outputs = ("readings", "air", "alerts")
    resources = Resources(num_cpus=0.05)
    tick_period_ns = 5_000_000_000

    def __init__(self, *, silence_s: float = 30.0) -> None:
        self.silence_s = silence_s
        self.registry: dict[str, dict[str, Any]] = {}
        self.rejected: dict[str, int] = {}
        self._ctx: Context | None = None

    def setup(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ctx": None}

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        device = f"{p.get('intersection', '?')}/{'detectors' if port == 'readings' else 'air'}"
        entry = self.registry.setdefault(
            device,
            {
                "unit": str(p.get("unit", "")),
                "last_s": -math.inf,
                "silent": False,
                "garbage": False,
                "readings": 0,
            },
        )
        t_s = message.event_ts / 1e9
        entry["last_s"], entry["silent"] = t_s, False
        reason = check(port, p)
        if reason is None:
            entry["garbage"] = False
            entry["readings"] += 1
            yield port, message
            return
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._ctx is not None:
            self._ctx.metrics.count("rejected", reason=reason)
        if not entry["garbage"]:
            entry["garbage"] = True
            yield "alerts", self._alert(message, device, entry, "device_garbage", reason, t_s)

    def on_tick(self, now: int) -> Outputs:
        t_s = now / 1e9
        for device, entry in self.registry.items():
            if not entry["silent"] and t_s - entry["last_s"] > self.silence_s:
                entry["silent"] = True
                alert = Message(f"devices@{entry['unit']}", int(now), now, {})
                yield (
                    "alerts",
                    self._alert(alert, device, entry, "device_silent", "no heartbeat", t_s),
                )

    def _alert(self, message, device, entry, kind, reason, t_s) -> Message:
        payload = {
            "kind": kind,
            "severity": "warning",
            "intersection": device.split("/")[0],
            "unit": entry["unit"],
            "t_s": t_s,
            "detail": f"{device}: {reason}",
        }
        return message.derive(payload, qos=QoS.EMERGENCY)

    def snapshot(self) -> Any:
        return {
            "registry": {d: dict(e) for d, e in self.registry.items()},
            "rejected": dict(self.rejected),
        }

    def restore(self, state: Any) -> None:
        self.registry = {d: dict(e) for d, e in state["registry"].items()}
        self.rejected = dict(state["rejected"])
