"""Rollout planners (cluster.rollout) driven against a fake executor on a fake clock: no Ray."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from cluster.rollout import (
    ABTest,
    BlueGreen,
    Canary,
    Finish,
    Gate,
    Observed,
    Promote,
    ReplicaVersion,
    Rollback,
    Rolling,
    RolloutRefused,
    Slot,
    Start,
    Stop,
    Switch,
    VersionMetrics,
    Wait,
    drive,
)
from pipelines.testing import FakeClock

S = 1_000_000_000
OLD, NEW = "1+det@1+c0", "1+det@2+c0"
GOOD = VersionMetrics(frames=500, errors=0, p99_ms=10.0, quality=0.9)


class FakeExecutor:
    """Slots in memory; ``metrics(version, clock)`` says what each version's replicas report."""

    def __init__(
        self,
        clock: FakeClock,
        nodes: list[str],
        *,
        metrics: Callable[[str], VersionMetrics] = lambda v: GOOD,
        keyed: bool = False,
    ) -> None:
        self.clock, self.metrics, self.keyed = clock, metrics, keyed
        self.slots = {str(i): Slot(str(i), node, OLD) for i, node in enumerate(nodes)}
        self.log: list[tuple[int, object]] = []

    def observe(self) -> Observed:
        versions = {s.active for s in self.slots.values()} | {
            v for s in self.slots.values() for v in s.warm
        }
        # each slot's active replica processes one frame a second from when it took over
        slots = tuple(replace(s, frames=(self.clock() - s.since_ns) // S)
                      for s in self.slots.values())  # fmt: skip
        return Observed(
            OLD, NEW, slots, {v: self.metrics(v) for v in versions}, keyed=self.keyed
        )  # fmt: skip

    def start(self, action: Start) -> None:
        self._record(action)
        for i in action.slots:
            s = self.slots[i]
            assert action.version != s.active and action.version not in s.warm
            self.slots[i] = replace(s, warm=s.warm | {action.version})

    def switch(self, action: Switch) -> None:
        self._record(action)
        for i in action.slots:
            s = self.slots[i]
            assert action.version in s.warm, "switched to a version that was not started warm"
            warm = (s.warm - {action.version}) | (set() if action.retire else {s.active})
            self.slots[i] = Slot(i, s.node, action.version, frozenset(warm), self.clock())

    def stop(self, action: Stop) -> None:
        self._record(action)
        for i in action.slots:
            s = self.slots[i]
            assert action.version in s.warm, "stopped a version that serves traffic"
            self.slots[i] = replace(s, warm=s.warm - {action.version})

    def _record(self, action) -> None:
        self.log.append((self.clock(), action))

    def actions(self, kind: type) -> list:
        return [a for _, a in self.log if isinstance(a, kind)]


def run(planner, executor: FakeExecutor, clock: FakeClock) -> Finish:
    """Drive to the end; every Wait steps the fake clock by 1 s (the poll period)."""
    return drive(planner, executor, sleep=lambda s: clock.advance(int(s * S)), poll_s=1.0)


# -- rolling --------------------------------------------------------------------------------------
def test_rolling_moves_batches_in_node_order_waiting_the_interval_between():
    clock = FakeClock()
    ex = FakeExecutor(clock, ["n3", "n1", "n2", "n1", "n3"])
    finish = run(Rolling(now=clock, batch=2, interval_ns=10 * S), ex, clock)

    assert finish.outcome == "completed"
    switches = ex.actions(Switch)
    assert [a.slots for a in switches] == [("1", "3"), ("2", "0"), ("4",)]  # n1, n1 | n2, n3 | n3
    times = [t for t, a in ex.log if isinstance(a, Switch)]
    assert all(b - a >= 10 * S for a, b in itertools.pairwise(times))
    assert all(s.active == NEW and not s.warm for s in ex.slots.values())
    assert all(a.retire for a in switches)


def test_rolling_waits_until_the_batch_has_seen_enough_frames():
    clock = FakeClock()
    start = clock()
    ex = FakeExecutor(
        clock, ["n1", "n2"],
        metrics=lambda v: replace(GOOD, frames=(clock() - start) // S) if v == NEW else GOOD,
    )  # fmt: skip
    run(Rolling(now=clock, gate=Gate(min_frames=5)), ex, clock)

    first, second = (t for t, a in ex.log if isinstance(a, Switch))
    assert second - first >= 5 * S


def test_rolling_verifies_each_batch_on_its_own_frames_before_the_next_starts():
    clock = FakeClock()
    ex = FakeExecutor(clock, ["n1", "n2", "n3"])  # the candidate's total passes at once (500)
    run(Rolling(now=clock, gate=Gate(min_frames=5)), ex, clock)

    times = [t for t, a in ex.log if isinstance(a, Switch)]
    assert len(times) == 3 and all(b - a >= 5 * S for a, b in itertools.pairwise(times))


def test_rolling_rolls_every_moved_slot_back_when_the_batch_breaches_the_gate():
    clock = FakeClock()
    bad = VersionMetrics(frames=90, errors=10)
    ex = FakeExecutor(clock, ["n1", "n2", "n3"], metrics=lambda v: bad if v == NEW else GOOD)
    finish = run(Rolling(now=clock, gate=Gate(max_error_rate=0.05)), ex, clock)

    assert finish.outcome == "rolled-back" and "error rate 0.100" in finish.reason
    assert all(s.active == OLD and not s.warm for s in ex.slots.values())
    assert [a.slots for a in ex.actions(Switch)] == [("0",), ("0",)]  # forward, then back


def test_rolling_refuses_a_batch_below_one():
    with pytest.raises(ValueError, match="batch must be >= 1"):
        Rolling(now=FakeClock(), batch=0)


# -- blue-green -----------------------------------------------------------------------------------
def test_blue_green_starts_the_whole_set_then_switches_it_at_once_and_keeps_old_warm():
    clock = FakeClock()
    ex = FakeExecutor(clock, ["n1", "n2", "n3"])
    seen_during_window = []
    planner = BlueGreen(now=clock, window_ns=30 * S)

    def look(action):
        if isinstance(action, Wait):
            seen_during_window.append(ex.observe())

    finish = drive(planner, ex, sleep=lambda s: clock.advance(S), on_action=look)

    assert finish.outcome == "completed"
    kinds = [type(a).__name__ for _, a in ex.log]
    assert kinds == ["Start", "Switch", "Stop"]
    (switch,) = ex.actions(Switch)
    assert switch.slots == ("0", "1", "2") and not switch.retire
    assert all(s.active == NEW and s.warm == {OLD} for s in seen_during_window[0].slots)
    assert len(seen_during_window) >= 30  # the old set stayed warm for the whole window
    assert all(not s.warm for s in ex.slots.values())


def test_blue_green_switches_back_within_the_window_on_a_breach():
    clock = FakeClock()
    slow = replace(GOOD, p99_ms=45.0)
    ex = FakeExecutor(clock, ["n1", "n2"], metrics=lambda v: slow if v == NEW else GOOD)
    finish = run(BlueGreen(now=clock, window_ns=60 * S, gate=Gate(max_p99_ratio=2.0)), ex, clock)

    assert (
        finish.outcome == "rolled-back" and "p99 45.0 ms > 2.0 x baseline 10.0 ms" in finish.reason
    )
    assert all(s.active == OLD and not s.warm for s in ex.slots.values())
    assert [a.version for a in ex.actions(Switch)] == [NEW, OLD]


# -- canary ---------------------------------------------------------------------------------------
def test_canary_moves_a_share_for_its_duration_then_the_rest():
    clock = FakeClock()
    ex = FakeExecutor(clock, ["n1", "n2", "n3", "n4"])
    finish = run(Canary(now=clock, share=0.25, duration_ns=20 * S), ex, clock)

    assert finish.outcome == "completed"
    first, rest = ex.actions(Switch)
    assert first.slots == ("0",) and not first.retire
    assert rest.slots == ("1", "2", "3")
    t_first, t_rest = (t for t, a in ex.log if isinstance(a, Switch))
    assert t_rest - t_first >= 20 * S
    assert all(s.active == NEW and not s.warm for s in ex.slots.values())


def test_canary_rolls_back_automatically_when_confidence_collapses():
    clock = FakeClock()
    collapsed = replace(GOOD, quality=0.31)
    ex = FakeExecutor(clock, ["n1", "n2", "n3"], metrics=lambda v: collapsed if v == NEW else GOOD)
    gate = Gate(min_frames=20, min_quality_ratio=0.8)
    finish = run(Canary(now=clock, share=0.34, duration_ns=60 * S, gate=gate), ex, clock)

    assert finish.outcome == "rolled-back"
    assert finish.reason == "quality 0.310 < 0.8 x baseline 0.900"
    assert all(s.active == OLD and not s.warm for s in ex.slots.values())
    assert [a.version for a in ex.actions(Switch)] == [NEW, OLD]
    assert clock() < 60 * S  # caught before the canary's duration ran out


def test_canary_keeps_waiting_past_its_duration_until_it_has_enough_frames():
    clock = FakeClock()
    ex = FakeExecutor(
        clock, ["n1", "n2"],
        metrics=lambda v: replace(GOOD, frames=clock() // S) if v == NEW else GOOD,
    )  # fmt: skip
    run(Canary(now=clock, share=0.5, duration_ns=5 * S, gate=Gate(min_frames=30)), ex, clock)

    _, promoted = (t for t, a in ex.log if isinstance(a, Switch))
    assert promoted >= 30 * S


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_canary_refuses_a_share_outside_0_1(share):
    with pytest.raises(ValueError, match="share must be in"):
        Canary(now=FakeClock(), share=share)


# -- A/B ------------------------------------------------------------------------------------------
def test_ab_splits_keyed_slots_and_reports_both_variants_side_by_side():
    clock = FakeClock()
    b = VersionMetrics(frames=480, errors=2, p99_ms=12.0, quality=0.8)
    ex = FakeExecutor(clock, ["n1", "n2", "n3", "n4"], keyed=True,
                      metrics=lambda v: b if v == NEW else GOOD)  # fmt: skip
    finish = run(ABTest(now=clock, share=0.5, duration_ns=10 * S), ex, clock)

    assert finish.outcome == "measured"
    assert f"{OLD}: 500 frames" in finish.reason and f"{NEW}: 480 frames" in finish.reason
    assert [s.active for s in ex.slots.values()] == [OLD, OLD, NEW, NEW]  # the split stays


def test_ab_refuses_an_operator_that_is_not_keyed():
    clock = FakeClock()
    with pytest.raises(RolloutRefused, match="declare it with key_by='source'"):
        run(ABTest(now=clock), FakeExecutor(clock, ["n1", "n2"]), clock)


# -- gate, version, loop --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("candidate", "verdict"),
    [
        (GOOD, Promote()),
        (replace(GOOD, frames=5), "Wait"),
        (replace(GOOD, frames=5, errors=5), "Rollback"),  # errors count before enough frames
        (replace(GOOD, p99_ms=31.0), "Rollback"),
        (replace(GOOD, quality=None), "Rollback"),  # no quality signal at all: collapsed
        (replace(GOOD, quality=0.75), Promote()),
    ],
)
def test_gate_verdicts(candidate, verdict):
    gate = Gate(min_frames=20, max_error_rate=0.01, max_p99_ratio=3.0, min_quality_ratio=0.8)
    got = gate.verdict(candidate, GOOD)
    if isinstance(verdict, str):
        assert type(got).__name__ == verdict
    else:
        assert got == verdict
    if isinstance(got, Rollback):
        assert got.reason


class Detector:
    version = "3"

    def __init__(self, model, threshold=0.3):
        self.model, self.threshold = model, threshold
        self.session = object()  # not configuration: not in the version


def test_replica_version_is_code_model_and_config():
    v = ReplicaVersion.of(Detector("det@2"))
    assert v.label.startswith("3+det@2+c")
    assert v == ReplicaVersion.of(Detector("det@2"))
    assert v.model != ReplicaVersion.of(Detector("det@3")).model
    assert v.config != ReplicaVersion.of(Detector("det@2", threshold=0.5)).config
    assert v.config == ReplicaVersion.of(Detector("det@3")).config


def test_drive_sleeps_only_while_the_planner_waits():
    clock = FakeClock()
    sleeps = []
    ex = FakeExecutor(clock, ["n1"])
    drive(Rolling(now=clock), ex, sleep=sleeps.append)
    assert sleeps == [] and [type(a).__name__ for _, a in ex.log] == ["Start", "Switch"]
