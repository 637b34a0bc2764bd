"""A bounded CPU share for trainers that run beside a live pipeline on the same node.

Ray's ``num_cpus`` is bookkeeping only: it does not stop a numpy, OpenMP, ONNX
Runtime or OpenCV thread pool from taking every core. A trainer therefore also
caps those pools and lowers the scheduling class of all its threads (the Ray
worker's own gRPC and I/O threads included), so the live pipeline's operators win
the CPU whenever both want it.

Where the OS has it (Linux), every trainer thread runs under ``SCHED_IDLE``: it
gets a core only when nothing else wants it, and a waking pipeline thread
preempts it at once. That is the bounded share: all of what is left over, none
of what the pipeline needs. Niceness is the fallback elsewhere; it bounds far
less: added to the niceness Ray starts every worker at (the pipeline's too; 0 on
edgeray's fleets, ``cluster._ray_config``), the default 10 weighs 110 against the
pipeline's 1024, i.e. ~10% of a contended core. Any unprivileged thread may move
itself to ``SCHED_IDLE``; threads started later inherit it.

The thread caps of BLAS / OpenMP pools are read once, when the library loads:
``trainer_env`` goes into the actor's ``runtime_env`` so they hold before the
worker imports numpy; ``bound_cpu_share`` applies what can still change at run
time (OpenCV, PyTorch, scheduling class). Trainers run no ONNX Runtime
session (they train in numpy or PyTorch); ONNX export happens on the coordinator.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True)
class CpuShare:
    """How much of a node a trainer may take.

    ``threads`` per thread pool; ``idle``: run every thread under ``SCHED_IDLE``
    where the OS has it, else add ``niceness`` (0-19) to what the process has;
    ``num_cpus``: Ray's bookkeeping.
    """

    threads: int = 1
    idle: bool = True
    niceness: int = 10
    num_cpus: float = 0.25


def trainer_env(share: CpuShare) -> dict[str, str]:
    """Environment variables that cap BLAS / OpenMP pools (for an actor's ``runtime_env``).

    >>> trainer_env(CpuShare(threads=2))["OMP_NUM_THREADS"]
    '2'
    """
    return dict.fromkeys(_THREAD_VARS, str(share.threads))


def bound_cpu_share(share: CpuShare) -> dict[str, Any]:
    """Apply ``share`` to this process: thread caps that still can change, and scheduling.

    Returns what holds afterwards so a caller can report it: ``policy`` (``"idle"``:
    SCHED_IDLE, ``"nice"``: niceness only), ``niceness``, ``threads``.
    """
    os.environ.update(trainer_env(share))
    import cv2

    cv2.setNumThreads(share.threads)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(share.threads)
    applied = set()
    for thread in _threads():  # every thread: a Ray worker's gRPC and I/O threads too
        with contextlib.suppress(ProcessLookupError):  # the thread ended since it was listed
            applied.add(bound_thread(share, thread))
    policy = "idle" if applied == {"idle"} else "nice"
    return {"policy": policy, "niceness": os.nice(0), "threads": share.threads}


def bound_thread(share: CpuShare, thread: int = 0) -> str:
    """Give one thread (``0``: the calling one) ``share``'s scheduling; returns the policy
    applied (on Linux a scheduling class belongs to a thread, not to its process).

    ``"idle"`` when ``share.idle`` and the OS lets the thread move to ``SCHED_IDLE``,
    else ``"nice"``: ``share.niceness`` added to the thread's own (at most 19), so it
    stays below the live pipeline's workers whatever niceness Ray starts them at.
    """
    if share.idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except PermissionError:  # a sandbox that refuses it: niceness still applies
            pass
    niceness = min(19, os.getpriority(os.PRIO_PROCESS, thread) + share.niceness)
    if niceness > os.getpriority(os.PRIO_PROCESS, thread):
        os.setpriority(os.PRIO_PROCESS, thread, niceness)
    return "nice"


def call_bounded(share: CpuShare, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own that runs with ``share``'s scheduling; its result.

    For a coordinator on a node that also hosts a live pipeline (its aggregation, ONNX
    export and evaluation then give way too) without changing the calling thread. The
    thread is a daemon: an interrupted caller does not wait for the rounds to finish.
    """
    outcome: dict[str, Any] = {}

    def bounded() -> None:
        bound_thread(share)
        try:
            outcome["value"] = fn()
        except BaseException as err:  # raised again in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=bounded, name="bounded-cpu-share", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _threads() -> list[int]:
    """This process's thread ids (on Linux threads inherit scheduling class and niceness
    only when they start; elsewhere, the process)."""
    tasks = "/proc/self/task"
    return [int(t) for t in os.listdir(tasks)] if os.path.isdir(tasks) else [0]
