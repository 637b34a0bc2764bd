"""Which operators a slot switch must hand state over for (``pipelines._rollout``)."""

from __future__ import annotations

from operators import Operator
from pipelines._rollout import _hands_over


class Stateless(Operator):
    inputs = ("in",)
    outputs = ("out",)

    def process(self, port, message):
        yield "out", message


class Counting(Stateless):
    def __init__(self) -> None:
        self.n = 0

    def snapshot(self) -> int:
        return self.n


class Ticking(Stateless):
    tick_period_ns = 1_000_000_000


def test_a_stateless_operator_switches_without_a_handover():
    assert not _hands_over(Stateless())


def test_an_operator_with_a_snapshot_or_a_tick_hands_over():
    assert _hands_over(Counting())
    assert _hands_over(Ticking())
