"""What flows on an edge: ``Message`` and the end-of-stream marker.

A message is identified end to end by ``(source, seq, part)``. Outputs inherit
``source``, ``seq``, ``event_ts``, ``ingest_ts`` and ``truth`` from the input
that produced them (``Message.derive``); the runtime stamps ``meta.producer``,
``meta.version`` and, when one input yields several outputs, ``part``.

>>> import numpy as np
>>> m = Message(source="cam@vehicle-1", seq=7, event_ts=1_000, payload={"x": np.arange(3)})
>>> out = m.derive({"n": 3})
>>> (out.source, out.seq, out.event_ts, out.payload)
('cam@vehicle-1', 7, 1000, {'n': 3})
>>> m.key
('cam@vehicle-1', 7, 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from operators._qos import QoS

#: Part numbers of the outputs of one input: ``input.part * PART_SPAN + index``.
PART_SPAN = 1 << 16


@dataclass(frozen=True)
class Lineage:
    """One merged input of a message (e.g. the lidar scan fused into a camera frame)."""

    source: str
    seq: int
    part: int = 0


@dataclass(frozen=True)
class Meta:
    """Who produced a message, its QoS class and the other inputs merged into it."""

    producer: str = ""
    version: str = ""
    qos: QoS = QoS.PERCEPTION
    lineage: tuple[Lineage, ...] = ()


@dataclass(frozen=True)
class Message:
    """One message: identity, times (integer ns), payload, meta and optional ground truth.

    ``payload`` and ``truth`` map names to numpy arrays or scalars. Arrays that
    reached an operator through the runtime are read-only: copy before writing.
    ``truth`` is simulator ground truth for evaluation sinks; decision operators
    must not read it.
    """

    source: str
    seq: int
    event_ts: int
    payload: Mapping[str, Any] = field(default_factory=dict)
    part: int = 0
    ingest_ts: int = 0
    meta: Meta = field(default_factory=Meta)
    truth: Mapping[str, Any] | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        """``(source, seq, part)``: the identity sinks de-duplicate on."""
        return (self.source, self.seq, self.part)

    @property
    def qos(self) -> QoS:
        return self.meta.qos

    def derive(
        self,
        payload: Mapping[str, Any],
        *,
        qos: QoS | None = None,
        merged: tuple[Message, ...] = (),
    ) -> Message:
        """A new message descending from this one, with a new payload.

        ``merged`` lists other inputs folded into it; they go into the lineage.
        """
        lineage = self.meta.lineage + tuple(Lineage(m.source, m.seq, m.part) for m in merged)
        meta = replace(self.meta, qos=self.meta.qos if qos is None else qos, lineage=lineage)
        return replace(self, payload=dict(payload), meta=meta)

    def with_qos(self, qos: QoS) -> Message:
        return replace(self, meta=replace(self.meta, qos=qos))

    def __reduce__(self):
        # Pickled as one flat tuple: a message crosses a process on every hop, and pickling
        # the two dataclasses and the enum field by field costs several times as much.
        m = self.meta
        fields = (self.source, self.seq, self.event_ts, self.payload, self.part, self.ingest_ts,
                  m.producer, m.version, int(m.qos), m.lineage, self.truth)  # fmt: skip
        return _unpickle_message, fields


def _unpickle_message(
    source, seq, event_ts, payload, part, ingest_ts, producer, version, qos, lineage, truth
) -> Message:
    meta = Meta(producer=producer, version=version, qos=QoS(qos), lineage=lineage)
    return Message(source, seq, event_ts, payload, part, ingest_ts, meta, truth)


@dataclass(frozen=True)
class EndOfStream:
    """Marks the end of a finite source; flows to every sink downstream of it."""

    source: str
