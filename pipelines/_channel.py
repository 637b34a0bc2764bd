"""``Link``: the sending end of one link (a producer replica to a consumer replica).

Messages wait in a queue ordered by QoS class, then arrival; at most
``window`` are in flight (pushed and not yet acknowledged by the consumer, which
acknowledges once it has processed the message and every output it made has
been settled downstream: a message is never acknowledged while its effects live
only in a process that may die).
When the queue is full the edge's policy decides: wait (``block``, which is how
back-pressure reaches the sources), or evict. The link keeps every message
until it is acknowledged and pushes it again when the consumer died and came
back, so delivery is at-least-once; it keeps the per-edge accounting.
A consumer that Ray is restarting (its node went away) is pushed to again with
a growing pause; one that stays unavailable for longer than ``give_up_s`` is
treated as unplaceable (its messages are dropped as ``unplaceable``, so a
blocked producer moves on) until a push reaches it again; an end of stream keeps
waiting for it.

The push itself is injected (a Ray actor call in the runtime), so the link is
plain asyncio and tests drive it without Ray.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count

from operators import EndOfStream, Message
from pipelines._graph import Edge
from pipelines._policies import Accept, Evict, RateLimit, Wait, policy
from pipelines._summary import EdgeAccount

#: ``push(item, seq, low)``: ``seq`` numbers pushes on the link; every push below ``low`` is
#: settled, so a consumer (even a restarted one) knows where the link's order starts. It is
#: called the moment the window has room and may send right then (a Ray call is submitted
#: synchronously), returning what to await for the consumer's answer.
Push = Callable[[Message | EndOfStream, int, int], Awaitable[str]]

#: What travels beside a pushed item, as one plain tuple (a Ray call pays per argument):
#: ``(edge name, consumer port, sender actor, seq, low)``.
Header = tuple[str, str, str, int, int]

#: Priority of end-of-stream: after every message queued before it.
_EOS_RANK = 1 << 30
#: Pushes of one message to a consumer that keeps dying before it is counted lost.
MAX_RESENDS = 50
#: Pause before pushing again to a consumer that failed: doubling from the first to the second.
RESEND_BACKOFF_S = (0.01, 1.0)


@dataclass(order=True)
class _Entry:
    rank: int
    order: int
    item: Message | EndOfStream = field(compare=False)
    settled: asyncio.Future = field(compare=False)


class Link:
    def __init__(
        self,
        edge: Edge,
        push: Push,
        *,
        retryable: tuple[type[BaseException], ...],
        now: Callable[[], int],
        restarting: tuple[type[BaseException], ...] = (),
        give_up_s: float = 30.0,
        backoff_s: tuple[float, float] = RESEND_BACKOFF_S,
        monotonic: Callable[[], float] = time.monotonic,
        event_time: bool = False,
        on_change: Callable[[Link], None] = lambda link: None,
        on_drop: Callable[[Link, str], None] = lambda link, reason: None,
    ) -> None:
        self.edge = edge
        self.push = push
        self.retryable = retryable  # the consumer died: push again, at most MAX_RESENDS times
        self.restarting = restarting  # it is coming back: push again for up to give_up_s
        self.give_up_s = give_up_s
        self.backoff_s = backoff_s
        self.monotonic = monotonic
        self.unavailable_since: float | None = None
        self.now = now
        self.event_time = event_time
        self.on_change = on_change
        self.on_drop = on_drop  # a drop this link decided (not one the consumer reported)
        self.policy = policy(edge.policy)
        self.rate = RateLimit(edge.rate_hz) if edge.rate_hz else None
        self.queue: list[_Entry] = []
        self.order = count()
        self.pushing: dict[int, _Entry] = {}  # by push number
        self.push_seq = count()
        self.room = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.unplaceable = False
        self.waiting = 0  # senders blocked for room: they will still queue here
        self.sent = self.delivered = self.dead = self.resent = self.duplicates = 0
        self.dropped: dict[str, int] = {}
        self.peak = 0
        self.eos_delivered: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        """Unique messages sent and not yet settled (queued here or pushed)."""
        entries = [*self.queue, *self.pushing.values()]
        return sum(isinstance(e.item, Message) for e in entries)

    def account(self) -> EdgeAccount:
        return EdgeAccount(
            sent=self.sent,
            delivered=self.delivered,
            dropped=dict(self.dropped),
            dead_lettered=self.dead,
            in_flight=self.in_flight,
            resent=self.resent,
            duplicates=self.duplicates,
        )

    async def send(self, message: Message) -> asyncio.Future:
        """Queue ``message`` (waits while a ``block`` link is full).

        Returns a future that resolves with the message's status on this link
        once it is settled: delivered, dropped or dead-lettered downstream.
        """
        self.sent += 1
        if self.unplaceable:
            return self._drop("unplaceable")
        if self.rate and not self.rate.allow(self._rate_clock(message)):
            return self._drop("rate-limit")
        while True:
            queued = [e for e in self.queue if isinstance(e.item, Message)]
            decision = self.policy.admit([e.item for e in queued], self.edge.window, message)
            if isinstance(decision, Accept):
                break
            if isinstance(decision, Evict):
                if decision.victim == -1:
                    return self._drop(decision.reason)
                victim = queued[decision.victim]
                self.queue.remove(victim)
                victim.settled.set_result(self._drop(decision.reason).result())
                break
            assert isinstance(decision, Wait)
            self.room.clear()
            self.waiting += 1
            try:
                await self.room.wait()
            finally:
                self.waiting -= 1
                if not self.waiting and not self.queue and not self.pushing:
                    self.idle.set()
        return self._enqueue(-int(message.qos), message)

    def reject(self, reason: str) -> asyncio.Future:
        """Count a message meant for this link that is dropped before it is queued."""
        self.sent += 1
        return self._drop(reason)

    def send_eos(self, eos: EndOfStream) -> asyncio.Future:
        """Queue end-of-stream behind everything queued (not counted as a message)."""
        return self._enqueue(_EOS_RANK, eos)

    def mark_unplaceable(self) -> None:
        """The consumer will never run: drop what waits and all that comes, as ``unplaceable``."""
        self.unplaceable = True
        for e in self.queue:
            if isinstance(e.item, Message):
                e.settled.set_result(self._drop("unplaceable").result())
            else:
                e.settled.set_result("dropped:unplaceable")
        self.queue.clear()
        self._settled()

    async def drained(self) -> None:
        """Return once nothing is queued, in flight, or about to be queued by a blocked sender."""
        while self.queue or self.pushing or self.waiting:
            self.idle.clear()
            await self.idle.wait()

    # -- internals ------------------------------------------------------------------
    def _rate_clock(self, message: Message) -> int:
        return message.event_ts if self.event_time else self.now()

    def _enqueue(self, rank: int, item: Message | EndOfStream) -> asyncio.Future:
        entry = _Entry(rank, next(self.order), item, asyncio.get_running_loop().create_future())
        if self.unplaceable:  # only an end-of-stream gets here: nobody is there to take it
            entry.settled.set_result("dropped:unplaceable")
            return entry.settled
        bisect.insort(self.queue, entry)
        self.idle.clear()
        if isinstance(item, Message):
            self.peak = max(self.peak, self.in_flight)
        self._pump()
        return entry.settled

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self.queue and len(self.pushing) < self.edge.window and not self.unplaceable:
            entry = self.queue.pop(0)
            seq = next(self.push_seq)
            self.pushing[seq] = entry
            try:  # sent now, not a loop turn later when the delivery task first runs
                answer = self.push(entry.item, seq, min(self.pushing))
            except Exception as err:  # a push that fails at once is retried like any other
                answer = loop.create_future()
                answer.set_exception(err)
            if asyncio.iscoroutine(answer):  # an ``async def`` push: it runs from now on too
                answer = loop.create_task(answer)
            task = loop.create_task(self._deliver(entry, seq, answer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.on_change(self)

    async def _deliver(self, entry: _Entry, seq: int, answer: Awaitable[str]) -> None:
        status, answered = "dropped:lost-consumer", False
        for attempt in count(1):
            try:
                if attempt > 1:
                    answer = self.push(entry.item, seq, min(self.pushing))
                status = await answer
                answered, self.unavailable_since = True, None
                break
            except self.restarting:
                now = self.monotonic()
                self.unavailable_since = self.unavailable_since or now
                late = now - self.unavailable_since > self.give_up_s
                if late and isinstance(entry.item, Message):  # an end of stream waits on
                    status = "dropped:unplaceable"
                    break
            except self.retryable:
                if attempt >= MAX_RESENDS:
                    break
            if isinstance(entry.item, Message):
                self.resent += 1
            low, high = self.backoff_s
            await asyncio.sleep(min(high, low * 2 ** (attempt - 1)))  # let it come back
        del self.pushing[seq]
        if isinstance(entry.item, EndOfStream):
            if status == "delivered":
                self.eos_delivered.add(entry.item.source)
        else:
            self._settle(status)
            if not answered:
                self.on_drop(self, status[8:])
        entry.settled.set_result(status)
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

    def _drop(self, reason: str) -> asyncio.Future:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.on_drop(self, reason)
        done = asyncio.get_running_loop().create_future()
        done.set_result(f"dropped:{reason}")
        return done

    def _settled(self) -> None:
        self.room.set()
        if not self.queue and not self.pushing:
            self.idle.set()


class Resequencer:
    """The consumer's side of one link: releases pushes in the order the producer sent them.

    >>> r = Resequencer()
    >>> r.arrive(1, 0, "b"), r.arrive(0, 0, "a"), r.arrive(2, 0, "c")
    ([], ['a', 'b'], ['c'])
    >>> Resequencer().arrive(7, 7, "resent after a restart")
    ['resent after a restart']
    """

    def __init__(self) -> None:
        self.expected = 0
        self.pending: dict[int, object] = {}

    def arrive(self, seq: int, low: int, entry: object) -> list:
        self.expected = max(self.expected, low)
        if seq < self.expected:
            return [entry]  # a re-send of something already released
        self.pending[seq] = entry
        ready = []
        while self.expected in self.pending:
            ready.append(self.pending.pop(self.expected))
            self.expected += 1
        return ready
