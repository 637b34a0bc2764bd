"""``Link``: the sending end of one link (a producer replica to a consumer replica).

Messages wait in a queue ordered by QoS class, then arrival; at most
``window`` are in flight (pushed and not yet acknowledged by the consumer, which
acknowledges once it has processed the message and handed on its outputs).
When the queue is full the edge's policy decides: wait (``block``, which is how
back-pressure reaches the sources), or evict. The link keeps every message
until it is acknowledged and pushes it again when the consumer died and came
back, so delivery is at-least-once; it keeps the per-edge accounting.

The push itself is injected (a Ray actor call in the runtime), so the link is
plain asyncio and tests drive it without Ray.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
from itertools import count

from operators import EndOfStream, Message
from pipelines._graph import Edge
from pipelines._policies import Accept, Evict, RateLimit, Wait, policy
from pipelines._summary import EdgeAccount

Push = Callable[[Message | EndOfStream], Awaitable[str]]

#: Priority of end-of-stream: after every message queued before it.
_EOS_RANK = 1 << 30
#: Pushes of one message to a consumer that keeps dying before it is counted lost.
MAX_RESENDS = 50


class Link:
    def __init__(
        self,
        edge: Edge,
        push: Push,
        *,
        retryable: tuple[type[BaseException], ...],
        now: Callable[[], int],
        event_time: bool = False,
        on_change: Callable[[Link], None] = lambda link: None,
    ) -> None:
        self.edge = edge
        self.push = push
        self.retryable = retryable
        self.now = now
        self.event_time = event_time
        self.on_change = on_change
        self.policy = policy(edge.policy)
        self.rate = RateLimit(edge.rate_hz) if edge.rate_hz else None
        self.queue: list[tuple[int, int, Message | EndOfStream]] = []
        self.order = count()
        self.pushing = 0
        self.room = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.unplaceable = False
        self.sent = self.delivered = self.dead = self.resent = self.duplicates = 0
        self.dropped: dict[str, int] = {}
        self.eos_pushing = 0
        self.eos_delivered: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        """Unique messages sent and not yet settled (queued here or pushed)."""
        return len(self.queue) + self.pushing

    def account(self) -> EdgeAccount:
        eos = sum(isinstance(item, EndOfStream) for _, _, item in self.queue)
        return EdgeAccount(
            sent=self.sent,
            delivered=self.delivered,
            dropped=dict(self.dropped),
            dead_lettered=self.dead,
            in_flight=self.in_flight - eos - self.eos_pushing,
            resent=self.resent,
            duplicates=self.duplicates,
        )

    async def send(self, message: Message) -> None:
        """Queue ``message``; waits while a ``block`` link is full."""
        self.sent += 1
        if self.unplaceable:
            return self._drop("unplaceable")
        if self.rate and not self.rate.allow(self._rate_clock(message)):
            return self._drop("rate-limit")
        while True:
            queued = [item for _, _, item in self.queue if isinstance(item, Message)]
            decision = self.policy.admit(queued, self.edge.window, message)
            if isinstance(decision, Accept):
                break
            if isinstance(decision, Evict):
                if decision.victim == -1:
                    return self._drop(decision.reason)
                victim = queued[decision.victim]
                self.queue = [q for q in self.queue if q[2] is not victim]
                self._drop(decision.reason)
                break
            assert isinstance(decision, Wait)
            self.room.clear()
            await self.room.wait()
        self._enqueue(-int(message.qos), message)

    def reject(self, reason: str) -> None:
        """Count a message meant for this link that is dropped before it is queued."""
        self.sent += 1
        self._drop(reason)

    def send_eos(self, eos: EndOfStream) -> None:
        """Queue end-of-stream behind everything queued (not counted as a message)."""
        self._enqueue(_EOS_RANK, eos)

    def mark_unplaceable(self) -> None:
        """The consumer will never run: drop what waits and all that comes, as ``unplaceable``."""
        self.unplaceable = True
        for _, _, item in self.queue:
            if isinstance(item, Message):
                self._drop("unplaceable")
        self.queue.clear()
        self._settled()

    async def drained(self) -> None:
        """Return once nothing is queued or in flight."""
        while self.queue or self.pushing:
            self.idle.clear()
            await self.idle.wait()

    # -- internals ------------------------------------------------------------------
    def _rate_clock(self, message: Message) -> int:
        return message.event_ts if self.event_time else self.now()

    def _enqueue(self, rank: int, item: Message | EndOfStream) -> None:
        bisect.insort(self.queue, (rank, next(self.order), item), key=lambda q: q[:2])
        self.idle.clear()
        self._pump()

    def _pump(self) -> None:
        while self.queue and self.pushing < self.edge.window and not self.unplaceable:
            _, _, item = self.queue.pop(0)
            self.pushing += 1
            if isinstance(item, EndOfStream):
                self.eos_pushing += 1
            task = asyncio.get_running_loop().create_task(self._deliver(item))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.on_change(self)

    async def _deliver(self, item: Message | EndOfStream) -> None:
        status = "dropped:lost-consumer"
        for attempt in range(MAX_RESENDS):
            try:
                status = await self.push(item)
                break
            except self.retryable:
                if isinstance(item, Message) and attempt + 1 < MAX_RESENDS:
                    self.resent += 1
        self.pushing -= 1
        if isinstance(item, EndOfStream):
            self.eos_pushing -= 1
            if status == "delivered":
                self.eos_delivered.add(item.source)
        else:
            self._settle(status)
        self._settled()
        self._pump()

    def _settle(self, status: str) -> None:
        if status == "delivered":
            self.delivered += 1
        elif status == "duplicate":
            self.delivered += 1
            self.duplicates += 1
        elif status == "dead":
            self.dead += 1
        elif status.startswith("dropped:"):
            self.dropped[status[8:]] = self.dropped.get(status[8:], 0) + 1
        else:
            raise ValueError(f"unknown delivery status {status!r}")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _settled(self) -> None:
        self.room.set()
        if not self.queue and not self.pushing:
            self.idle.set()
