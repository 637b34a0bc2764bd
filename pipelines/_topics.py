"""``TopicBroker``: a named topic between pipelines, as a detached Ray actor.

Publishers' links push to it like to any consumer; it forwards every message to
each subscription through its own ``drop-oldest`` link, so a slow subscriber
never stalls a publisher. Ends of stream stop here: a topic is endless.
"""

from __future__ import annotations

import time
from itertools import count
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from operators import EndOfStream, Message
from pipelines._channel import Header, Link
from pipelines._graph import Edge
from pipelines._summary import EdgeAccount


class TopicBroker:
    """A named topic between pipelines: forwards what publishers push to every subscription.

    A subscription is one input port of one pipeline's operator; its messages
    go round robin over that operator's replicas, through ``drop-oldest`` links
    (a slow subscriber never stalls the publisher). Ends of stream stop here.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.subscriptions: dict[str, tuple[list[Link], count]] = {}
        self.handles: dict[tuple[str, str], Any] = {}

    async def subscribe(
        self, key: str, actors: list[str], port: str, namespace: str, window: int = 8
    ) -> None:
        """Feed ``port`` of ``actors`` (named in the subscriber's Ray ``namespace``)."""
        links = [self._link(actor, port, namespace, window) for actor in actors]
        self.subscriptions[key] = (links, count())

    async def unsubscribe(self, key: str) -> None:
        self.subscriptions.pop(key, None)

    def _link(self, actor: str, port: str, namespace: str, window: int) -> Link:
        edge = Edge(f"topic:{self.topic}", "out", actor, port, policy="drop-oldest", window=window)

        def push(item: Message | EndOfStream, seq: int, low: int) -> ray.ObjectRef:
            handle = self.handles.get((namespace, actor))
            if handle is None:
                handle = ray.get_actor(actor, namespace=namespace)
                self.handles[(namespace, actor)] = handle
            sender = f"topic:{self.topic}"
            return handle.push.remote(item, (edge.name, port, sender, seq, low))

        return Link(
            edge, push, retryable=(RayActorError,), restarting=(ActorUnavailableError,),
            now=time.time_ns,
        )  # fmt: skip

    async def push(self, item: Message | EndOfStream, header: Header) -> str:
        if isinstance(item, Message):
            for links, turn in self.subscriptions.values():
                await links[next(turn) % len(links)].send(item)
        return "delivered"

    async def accounts(self) -> dict[str, Any]:
        return {
            key: sum((link.account() for link in links), EdgeAccount())
            for key, (links, _) in self.subscriptions.items()
        }
