"""Quality-of-service classes carried by every message."""

from __future__ import annotations

from enum import IntEnum


class QoS(IntEnum):
    """A message's class; a higher class overtakes queued lower ones on every edge.

    >>> QoS.EMERGENCY > QoS.CONTROL > QoS.PERCEPTION > QoS.TELEMETRY
    True
    >>> QoS.parse("control")
    <QoS.CONTROL: 2>
    """

    TELEMETRY = 0
    PERCEPTION = 1
    CONTROL = 2
    EMERGENCY = 3

    @classmethod
    def parse(cls, value: QoS | str | int) -> QoS:
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                names = ", ".join(q.name.lower() for q in cls)
                raise ValueError(f"unknown QoS class {value!r}; use one of {names}") from None
        return cls(value)
