"""``Host``: drives one replica of an operator, wherever it runs.

The one place that turns the operator contract into behaviour, shared by the
local runner (``pipelines.testing``) and the Ray actors (``pipelines._actor``):
checks inputs, calls ``process`` / ``on_tick`` / ``poll``, stamps outputs
(producer, replica version, part, ingest time at sources), dead-letters exceptions and
malformed messages, and de-duplicates at sinks by ``(source, seq, part)``.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from operators import PART_SPAN, Context, Field, MalformedMessage, Message, Port
from pipelines._graph import OperatorSpec

#: Dead letters kept per replica (all are counted; the oldest are let go beyond this).
DEAD_LETTERS_KEPT = 1000


@dataclass(frozen=True)
class DeadLetter:
    """A message an operator could not handle, kept with its cause."""

    operator: str
    replica: str
    port: str
    key: tuple[str, int, int] | None
    cause: str
    message: Any


class Host:
    """One replica of one operator: the contract applied to every call."""

    def __init__(
        self,
        spec: OperatorSpec,
        replica: int,
        ctx: Context,
        *,
        wall: Callable[[], int],
        version: str | None = None,
    ) -> None:
        self.spec = spec
        self.op = spec.operator
        #: What outputs record in ``meta.version``: the operator's code version unless the
        #: runtime names the replica's whole version (code + model + config).
        self.version = str(self.op.version) if version is None else version
        self.replica = spec.replica_ids()[replica]
        self.ctx = ctx
        self.wall = wall
        self.inputs: Mapping[str, Port] = self.op.ports("inputs")
        self.outputs: Mapping[str, Port] = self.op.ports("outputs")
        self.dead_letters: deque[DeadLetter] = deque(maxlen=DEAD_LETTERS_KEPT)
        self.dead_lettered = 0
        self.duplicates = 0
        self.seen: set[tuple[str, str, int, int]] = set()  # (port, source, seq, part)

    @property
    def name(self) -> str:
        return f"{self.spec.name}#{self.replica}"

    def setup(self) -> None:
        self.op.setup(self.ctx)

    # -- the three ways an operator produces output ---------------------------------
    def process(self, port: str, message: Any) -> list[tuple[str, Message]]:
        """``process`` with checks; returns stamped outputs (empty when dead-lettered)."""
        problem = self._malformed(port, message)
        if problem:
            self._dead_letter(port, message, MalformedMessage(problem, operator=self.name))
            return []
        try:
            produced = self.op.process(port, message)
            return self._stamp(produced, parent=message)
        except Exception as err:  # an operator's bug must not kill the pipeline
            self._dead_letter(port, message, err)
            return []

    def tick(self, now: int) -> list[tuple[str, Message]]:
        """``on_tick``; its outputs originate here (source id and ingest time, as at a source)."""
        try:
            return self._originate(self._stamp(self.op.on_tick(now), parent=None))
        except Exception as err:
            self._dead_letter("<tick>", None, err)
            return []

    def poll(self, now: int) -> list[tuple[str, Message]] | None:
        """A source's step; ``None`` when it is exhausted. Stamps source id and ingest time."""
        try:
            produced = self.op.poll(now)
            if produced is None:
                return None
            outs = self._stamp(produced, parent=None)
        except Exception as err:
            self._dead_letter("<poll>", None, err)
            return []
        return self._originate(outs)

    def _originate(self, outs: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        """New messages: ingest time now, and ``<operator>@<node>`` unless they name a source."""
        ingest = self.wall()
        default = f"{self.spec.name}@{self.ctx.node}"
        return [(p, replace(m, source=m.source or default, ingest_ts=ingest)) for p, m in outs]

    def first_time(self, port: str, message: Message) -> bool:
        """At a sink: ``False`` (and counted) when ``(source, seq, part)`` was seen on ``port``.

        Per input port: a command and the sensor reading it was derived from share a
        key, and a sink recording both streams must keep both.
        """
        key = (port, *message.key)
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        return True

    # -- contract checks ------------------------------------------------------------
    def _malformed(self, port: str, message: Any) -> str | None:
        if port not in self.inputs:
            return f"message on undeclared input {port!r} (declared: {', '.join(self.inputs)})"
        if not isinstance(message, Message):
            return f"expected a Message on {port!r}, got {type(message).__name__}"
        if not isinstance(message.payload, Mapping):
            return f"payload is a {type(message.payload).__name__}, expected a mapping"
        schema = self.inputs[port].schema or {}
        for name, want in schema.items():
            value = message.payload.get(name)
            if not isinstance(value, np.ndarray):
                return f"payload field {name!r} missing or not an array (expected {want.dtype})"
            if not want.accepts(Field(str(value.dtype), value.shape)):
                return (
                    f"payload field {name!r} is {value.dtype}{list(value.shape)}, "
                    f"expected {want.dtype}{list(want.shape or [])}"
                )
        return None

    def _stamp(
        self, produced: Iterable[tuple[str, Message]] | None, parent: Message | None
    ) -> list[tuple[str, Message]]:
        outs = list(produced or ())
        stamped = []
        for i, item in enumerate(outs):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Message)):
                raise MalformedMessage(
                    f"output {i} is {item!r:.80}; return (output_port, Message) pairs, "
                    "e.g. yield 'out', message.derive({...})",
                    operator=self.name,
                )
            port, msg = item
            if port not in self.outputs:
                raise MalformedMessage(
                    f"output on undeclared port {port!r} (declared: {', '.join(self.outputs)})",
                    operator=self.name,
                )
            part = msg.part
            if parent is not None and len(outs) > 1:
                part = parent.part * PART_SPAN + i
            meta = replace(msg.meta, producer=self.spec.name, version=self.version)
            stamped.append((port, replace(msg, part=part, meta=meta)))
        return stamped

    def _dead_letter(self, port: str, message: Any, err: BaseException) -> None:
        self.dead_lettered += 1
        key = message.key if isinstance(message, Message) else None
        cause = "".join(traceback.format_exception_only(type(err), err)).strip()
        self.dead_letters.append(
            DeadLetter(self.spec.name, self.replica, port, key, cause, message)
        )
        self.ctx.logger.warning("dead letter at %s port %s key %s: %s", self.name, port, key, cause)
