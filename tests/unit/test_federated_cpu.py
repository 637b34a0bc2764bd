"""A trainer's bounded CPU share, applied in a child process (it cannot be undone in this one).

Each case runs ``bound_cpu_share`` in a fresh interpreter with a few threads already
running, starts one more thread after it, and reports what every thread ended up with.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROBE = textwrap.dedent(
    """
    import json, os, sys, threading
    from cluster.federated import CpuShare, bound_cpu_share
    stop = threading.Event()
    before = [threading.Thread(target=stop.wait) for _ in range(3)]
    for t in before:
        t.start()
    start_nice = os.getpriority(os.PRIO_PROCESS, 0)
    applied = bound_cpu_share(CpuShare(**json.loads(sys.argv[1])))
    seen = {}
    def look():
        tid = threading.get_native_id()
        seen["later"] = [os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)]
    later = threading.Thread(target=look)
    later.start()
    later.join()
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    seen["all"] = sorted({(os.sched_getscheduler(t), os.getpriority(os.PRIO_PROCESS, t))
                          for t in tids})
    stop.set()
    env = os.environ["OMP_NUM_THREADS"]
    print(json.dumps({"applied": applied, "start_nice": start_nice, "env": env, **seen}))
    """
)

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="per-thread scheduling is read from /proc (Linux)"
)


def probe(**share) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(share)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def test_every_thread_runs_idle_by_default_and_threads_started_later_inherit_it():
    # execute
    found = probe(threads=2)

    # assert
    assert found["applied"]["policy"] == "idle"
    assert found["applied"]["threads"] == 2 and found["env"] == "2"
    assert {policy for policy, _ in found["all"]} == {os.SCHED_IDLE}
    assert found["later"][0] == os.SCHED_IDLE


def test_without_idle_every_thread_gets_the_niceness_added_to_what_it_had():
    # execute
    found = probe(idle=False, niceness=3)

    # assert
    expected = min(19, found["start_nice"] + 3)
    assert found["applied"] == {**found["applied"], "policy": "nice", "niceness": expected}
    assert {tuple(thread) for thread in found["all"]} == {(os.SCHED_OTHER, expected)}
    assert found["later"] == [os.SCHED_OTHER, expected]


def test_call_bounded_runs_on_a_bounded_thread_and_leaves_the_callers_alone():
    # prepare
    from cluster.federated import CpuShare, call_bounded

    def policy() -> int:
        return os.sched_getscheduler(0)

    def fails() -> None:
        raise ValueError("round failed")

    before = policy()

    # execute
    inside = call_bounded(CpuShare(), policy)

    # assert
    assert inside == os.SCHED_IDLE
    assert policy() == before
    with pytest.raises(ValueError, match="round failed"):
        call_bounded(CpuShare(), fails)
