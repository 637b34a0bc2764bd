"""The actions a planner returns, and the interface through which the runtime executes them.

Planners decide, the runtime acts: ``Executor`` is implemented by the pipeline
runtime (``pipelines._rollout``) with Ray calls, and by plain fakes in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cluster.rollout._state import Observed


@dataclass(frozen=True)
class Start:
    """Start ``version`` in ``slots`` on each slot's node, load its model, warm it with a real
    inference; no traffic moves yet."""

    slots: tuple[str, ...]
    version: str


@dataclass(frozen=True)
class Switch:
    """Move the traffic of ``slots`` to ``version`` (already started there) atomically; the
    previously active replica drains its in-flight frames and hands its state over, then is
    stopped (``retire``) or kept warm for a rollback."""

    slots: tuple[str, ...]
    version: str
    retire: bool = True


@dataclass(frozen=True)
class Stop:
    """Stop the replicas of ``version`` kept warm (without traffic) in ``slots``."""

    slots: tuple[str, ...]
    version: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do now; look again later."""

    reason: str


@dataclass(frozen=True)
class Finish:
    """The rollout is over: ``outcome`` is ``completed``, ``rolled-back`` or ``measured``."""

    outcome: str
    reason: str


Action = Start | Switch | Stop | Wait | Finish


class Planner(Protocol):
    """A strategy: observed state in, next actions out (a clock is injected, never read)."""

    def plan(self, observed: Observed) -> list[Action]: ...


class Executor(Protocol):
    """What the runtime offers a rollout: look, and carry out one action."""

    def observe(self) -> Observed: ...

    def start(self, action: Start) -> None: ...

    def switch(self, action: Switch) -> None: ...

    def stop(self, action: Stop) -> None: ...
