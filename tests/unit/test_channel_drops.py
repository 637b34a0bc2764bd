"""``Link`` reports every drop it decides through ``on_drop`` (the runtime's dropped metric)."""

from __future__ import annotations

import asyncio

from operators import Message
from pipelines._channel import Link
from pipelines._graph import Edge


class Gone(Exception):
    """Stands for a consumer that died (``RayActorError`` in the runtime)."""


class Restarting(Gone):
    """Stands for a consumer Ray is restarting (``ActorUnavailableError``)."""


def _link(answer, drops: list[str], clock=lambda: 0.0, **edge) -> Link:
    async def push(item, seq, low):
        return await answer(item)

    return Link(
        Edge("a", "out", "b", "in", **edge),
        push,
        retryable=(Gone,),
        restarting=(Restarting,),
        give_up_s=30.0,
        backoff_s=(0.0, 0.0),
        monotonic=clock,
        now=lambda: 0,
        on_drop=lambda link, reason: drops.append(reason),
    )


def _msgs(n: int) -> list[Message]:
    return [Message("cam", i, i) for i in range(n)]


def test_policy_rate_limit_unplaceable_and_lost_consumer_drops_are_reported():
    async def scenario() -> list[str]:
        drops: list[str] = []
        held = asyncio.Event()

        async def slow(item):
            await held.wait()
            return "delivered"

        latest = _link(slow, drops, policy="latest-only", window=1)
        for m in _msgs(3):  # one in flight, one queued, the third evicts the queued one
            await latest.send(m)
        oldest = _link(slow, drops, policy="drop-oldest", window=1)
        for m in _msgs(3):  # one in flight, one queued... then the queue is full: evict
            await oldest.send(m)
        limited = _link(slow, drops, rate_hz=10)
        for m in _msgs(2):  # the same instant: the second is over the rate
            await limited.send(m)
        unplaceable = _link(slow, drops)
        unplaceable.mark_unplaceable()
        await unplaceable.send(Message("cam", 0, 0))

        async def dead(item):
            raise Gone

        lost = _link(dead, drops)
        await (await lost.send(Message("cam", 0, 0)))
        held.set()
        return drops

    drops = asyncio.run(scenario())
    assert sorted(drops) == sorted(
        ["latest-only", "drop-oldest", "rate-limit", "unplaceable", "lost-consumer"]
    )


def test_a_drop_the_consumer_reports_is_counted_but_not_reported_again():
    async def scenario() -> tuple[list[str], Link]:
        drops: list[str] = []

        async def expired(item):
            return "dropped:deadline"  # the consumer counts its own deadline drops

        link = _link(expired, drops)
        await (await link.send(Message("cam", 0, 0)))
        return drops, link

    drops, link = asyncio.run(scenario())
    assert drops == []
    assert link.account().dropped == {"deadline": 1} and link.account().holds()


def test_a_consumer_that_is_restarting_gets_the_message_once_it_is_back():
    async def scenario() -> tuple[list[str], Link, str]:
        drops: list[str] = []
        refusals = iter(range(120))  # far more than MAX_RESENDS: restarting is not dying

        async def restarting(item):
            if next(refusals) < 119:
                raise Restarting
            return "delivered"

        link = _link(restarting, drops)
        status = await (await link.send(Message("cam", 0, 0)))
        return drops, link, status

    drops, link, status = asyncio.run(scenario())
    assert status == "delivered" and drops == []
    account = link.account()
    assert account.delivered == 1 and account.resent == 119 and account.holds()


def test_a_consumer_restarting_longer_than_give_up_is_unplaceable_until_it_answers():
    async def scenario() -> tuple[list[str], Link, list[str]]:
        drops: list[str] = []
        now = [0.0]
        back = asyncio.Event()

        async def gone(item):
            if not back.is_set():
                now[0] += 10.0  # each refusal comes 10 s after the last
                raise Restarting
            return "delivered"

        link = _link(gone, drops, clock=lambda: now[0])
        statuses = [await (await link.send(Message("cam", i, i))) for i in range(2)]
        back.set()
        statuses.append(await (await link.send(Message("cam", 2, 2))))
        return drops, link, statuses

    drops, link, statuses = asyncio.run(scenario())
    assert statuses == ["dropped:unplaceable", "dropped:unplaceable", "delivered"]
    assert drops == ["unplaceable", "unplaceable"]
    assert link.account().holds() and link.unavailable_since is None
