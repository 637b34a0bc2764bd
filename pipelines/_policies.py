"""Edge admission policies: what happens to a message when its link's queue is full.

Each policy is a one-method object, ``admit(queued, capacity, message)``,
returning ``Accept``, ``Wait`` or ``Evict(victim, reason)``; ``queued`` holds the
messages waiting on the link, highest class first. A message of a higher
QoS class than the lowest queued one is always accepted: it overtakes.

>>> from operators import Message, QoS
>>> frame = Message("cam", 0, 0)
>>> Block().admit([frame, frame], 2, Message("cam", 1, 0))
Wait()
>>> Block().admit([frame, frame], 2, Message("v2v", 0, 0).with_qos(QoS.EMERGENCY))
Accept()
>>> LatestOnly().admit([frame], 1, Message("cam", 1, 0))
Evict(victim=0, reason='latest-only')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operators import Message


@dataclass(frozen=True)
class Accept:
    pass


@dataclass(frozen=True)
class Wait:
    pass


@dataclass(frozen=True)
class Evict:
    """Drop the queued message at index ``victim`` (counted under ``reason``), then accept."""

    victim: int
    reason: str


Decision = Accept | Wait | Evict


def _overtakes(queued: Sequence[Message], message: Message) -> bool:
    return bool(queued) and message.qos > min(m.qos for m in queued)


class Block:
    """Never drop: the producer waits until the link has room (back-pressure)."""

    def admit(self, queued: Sequence[Message], capacity: int, message: Message) -> Decision:
        if len(queued) < capacity or _overtakes(queued, message):
            return Accept()
        return Wait()


class DropOldest:
    """Never wait: when full, drop the oldest message of the lowest queued class."""

    def admit(self, queued: Sequence[Message], capacity: int, message: Message) -> Decision:
        if len(queued) < capacity or _overtakes(queued, message):
            return Accept()
        lowest = min(m.qos for m in queued)
        if message.qos < lowest:
            return Evict(-1, "drop-oldest")  # the newcomer itself is the least important
        victim = next(i for i, m in enumerate(queued) if m.qos == lowest)
        return Evict(victim, "drop-oldest")


class LatestOnly:
    """Keep only the newest waiting message: a sensor consumer that wants the freshest frame."""

    def admit(self, queued: Sequence[Message], capacity: int, message: Message) -> Decision:
        same = [i for i, m in enumerate(queued) if m.qos <= message.qos]
        return Evict(same[0], "latest-only") if same else Accept()


POLICIES = {"block": Block, "drop-oldest": DropOldest, "latest-only": LatestOnly}


def policy(name: str) -> Block | DropOldest | LatestOnly:
    return POLICIES[name]()


class RateLimit:
    """Let through at most ``rate_hz`` messages a second of the link's clock; drop the rest.

    >>> r = RateLimit(10)
    >>> [r.allow(t) for t in (0, 50_000_000, 100_000_000, 120_000_000)]
    [True, False, True, False]
    """

    def __init__(self, rate_hz: float) -> None:
        self.period = round(1e9 / rate_hz)
        self.last: int | None = None

    def allow(self, now: int) -> bool:
        if self.last is not None and now - self.last < self.period:
            return False
        self.last = now
        return True


def too_old(message: Message, deadline_ns: int | None, now: int, *, event_time: bool) -> bool:
    """Whether ``message`` missed its edge's deadline (age from ingest, or event time)."""
    if deadline_ns is None:
        return False
    born = message.event_ts if event_time else message.ingest_ts
    return now - born > deadline_ns
