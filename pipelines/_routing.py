"""How messages spread over an operator's replicas: round robin, or keyed."""

from __future__ import annotations

import zlib
from itertools import count

from operators import Message
from pipelines._graph import OperatorSpec


class Router:
    """Picks the replica of ``spec`` that gets a message.

    Round robin when ``spec.key_by`` is ``None``; otherwise the key is the
    message's ``source`` (``key_by="source"``) or a payload field, and each key
    always goes to the same replica: its own replica when ``spec.keys`` declares
    one per key, else a stable hash. ``route`` returns ``None`` for a key with no
    declared replica (the caller drops it with reason ``unroutable``).

    >>> from pipelines.testing import ListSink
    >>> spec = OperatorSpec("s", ListSink(), "sink", replicas=2, key_by="source")
    >>> r = Router(spec)
    >>> r.route(Message("cam-a", 0, 0)) == r.route(Message("cam-a", 9, 0))
    True
    """

    def __init__(self, spec: OperatorSpec) -> None:
        self.spec = spec
        self.n = len(spec.replica_ids())
        self._next = count()
        self._index = {k: i for i, k in enumerate(spec.keys or ())}

    def key(self, message: Message) -> str:
        field = self.spec.key_by
        if field == "source":
            return message.source
        value = message.payload.get(field)
        if hasattr(value, "item"):
            value = value.item()
        return str(value)

    def route(self, message: Message) -> int | None:
        if self.spec.key_by is None:
            return next(self._next) % self.n
        key = self.key(message)
        if self.spec.keys:
            return self._index.get(key)
        return zlib.crc32(key.encode()) % self.n
