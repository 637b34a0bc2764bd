"""The operator contract: ports, resources, the run-time context and the base classes.

An operator is a plain, picklable class. Its ports are class attributes, so a
pipeline can be validated without running anything; ``setup(ctx)`` loads
models and state at run time. The runtime (Ray actors, or the local runner in
``pipelines.testing``) wraps it, paces sources and ticks, and applies queue
policies: an operator never sleeps, never loops forever and never imports Ray.

>>> class Doubler(Operator):
...     '''Doubles ``x``. Input ``in``, output ``out``.'''
...     inputs = ("in",)
...     outputs = ("out",)
...     def process(self, port, message):
...         yield "out", message.derive({"x": 2 * message.payload["x"]})
>>> [(p, m.payload) for p, m in Doubler().process("in", Message("s", 0, 0, {"x": 21}))]
[('out', {'x': 42})]
>>> Doubler.port_names("inputs")
('in',)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import numpy as np

from operators._message import Message

#: What ``process``, ``on_tick`` and ``poll`` return: ``(output_port, message)`` pairs.
Outputs = Iterable[tuple[str, Message]]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Field:
    """The declared dtype and shape of one payload field (``None`` in a shape: any size).

    >>> Field("uint8", (None, None, 3)).accepts(Field("uint8", (360, 640, 3)))
    True
    >>> Field("uint8", (None, None, 3)).accepts(Field("float32", (360, 640, 3)))
    False
    """

    dtype: str
    shape: tuple[int | None, ...] | None = None

    def accepts(self, other: Field) -> bool:
        if np.dtype(self.dtype) != np.dtype(other.dtype):
            return False
        if self.shape is None or other.shape is None:
            return True
        if len(self.shape) != len(other.shape):
            return False
        pairs = zip(self.shape, other.shape, strict=True)
        return all(a is None or b is None or a == b for a, b in pairs)


@dataclass(frozen=True)
class Port:
    """A named input or output; ``schema`` optionally declares payload fields."""

    name: str
    schema: Mapping[str, Field] | None = None


@dataclass(frozen=True)
class Resources:
    """What one replica needs: fractional CPUs, memory (bytes), GPUs, custom resources.

    ``niceness`` (0-19) is added to the replica's scheduling niceness (at most 19): on
    cores that several replicas share, an operator that may fall behind without harm
    (perception that drops stale frames) gives way to one that must not (a control loop).
    Ray's CPU counts are bookkeeping only; this is what the OS scheduler sees.
    """

    num_cpus: float = 0.25
    memory: int = 0
    num_gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    niceness: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.niceness, int) and 0 <= self.niceness <= 19):
            raise ValueError(f"Resources.niceness must be an integer 0-19, not {self.niceness!r}")

    def as_dict(self) -> dict[str, float]:
        """In the shape of a node's resource table (``CPU``, ``memory``, ``GPU``, custom)."""
        out = {"CPU": self.num_cpus, **self.custom}
        if self.memory:
            out["memory"] = float(self.memory)
        if self.num_gpus:
            out["GPU"] = self.num_gpus
        return out


class Metrics(Protocol):
    """Metric helpers an operator may use; the runtime tags them with pipeline/operator/version."""

    def count(self, name: str, value: float = 1.0, **tags: str) -> None: ...
    def observe(self, name: str, value: float, **tags: str) -> None: ...
    def gauge(self, name: str, value: float, **tags: str) -> None: ...


class NullMetrics:
    """Metrics that go nowhere (the default outside a runtime)."""

    def count(self, name: str, value: float = 1.0, **tags: str) -> None:
        pass

    def observe(self, name: str, value: float, **tags: str) -> None:
        pass

    def gauge(self, name: str, value: float, **tags: str) -> None:
        pass


@dataclass(frozen=True)
class Context:
    """What ``setup(ctx)`` gets: where it runs, a clock (ns), a logger, metrics, models.

    ``models`` is a ``models.ModelResolver`` (``session(ref, signature)``) when the
    runtime knows the pipeline's model registry, else ``None``.
    """

    pipeline: str = "local"
    operator: str = "op"
    replica: int = 0
    node: str = "local"
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    clock: Callable[[], int] = field(default=lambda: 0)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("edgeray"))
    metrics: Metrics = field(default_factory=NullMetrics)
    models: Any = None


class Operator:
    """Base class of every stream operator.

    Class attributes declare the contract:
      ``inputs`` / ``outputs``: port names or ``Port`` objects.
      ``resources``: what a replica needs.
      ``tick_period_ns``: when set, the runtime calls ``on_tick(now)`` that often.
      ``version``: the operator's code version (part of a replica's version).
    An instance may override any of them in ``__init__`` (e.g. configurable ports).
    """

    inputs: ClassVar[Sequence[str | Port]] = ()
    outputs: ClassVar[Sequence[str | Port]] = ()
    resources: ClassVar[Resources] = Resources()
    tick_period_ns: ClassVar[int | None] = None
    version: ClassVar[str] = "1"

    @classmethod
    def port_names(cls, direction: str) -> tuple[str, ...]:
        return tuple(p if isinstance(p, str) else p.name for p in getattr(cls, direction))

    def ports(self, direction: str) -> dict[str, Port]:
        """This instance's ``inputs`` or ``outputs`` as ``{name: Port}``."""
        declared = getattr(self, direction)
        return {(p.name if isinstance(p, Port) else p): _as_port(p) for p in declared}

    def setup(self, ctx: Context) -> None:
        """Load models and state; called once in the process where the operator runs."""

    def process(self, port: str, message: Message) -> Outputs:
        """Handle one message from input ``port``; return ``(output_port, message)`` pairs."""
        return ()

    def on_tick(self, now: int) -> Outputs:
        """Called every ``tick_period_ns`` (wall or event time, as the pipeline says)."""
        return ()

    def snapshot(self) -> Any:
        """State to carry to a replacement replica (``None``: stateless)."""
        return None

    def restore(self, state: Any) -> None:
        """Take over ``snapshot()``'s state."""

    def teardown(self) -> None:
        """Release what ``setup`` acquired."""


class Source(Operator):
    """An operator that yields messages when polled, at the rate the pipeline declares.

    ``poll(now)`` returns the messages of one step, or ``None`` once a finite
    source is exhausted (the runtime then sends end-of-stream downstream).
    ``now`` is the wall clock of the poll (a ``FakeClock`` under ``run_local``) even
    in an event-time pipeline: event time is what a source stamps, not what polls it.
    Its only inputs, if any, are feedback (e.g. actuation for a simulator).
    """

    def poll(self, now: int) -> Outputs | None:
        raise NotImplementedError(f"{type(self).__name__} must implement poll(now)")


class Sink(Operator):
    """An operator at the end of a pipeline; ``flush()`` is called on graceful stop."""

    outputs: ClassVar[Sequence[str | Port]] = ()

    def flush(self) -> None:
        """Make everything received durable."""


def _as_port(port: str | Port) -> Port:
    return port if isinstance(port, Port) else Port(port)
