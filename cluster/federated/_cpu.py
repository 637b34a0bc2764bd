"""A bounded CPU share for trainers that run beside a live pipeline on the same node.

Ray's ``num_cpus`` is bookkeeping only: it does not stop a numpy, OpenMP, ONNX
Runtime or OpenCV thread pool from taking every core. A trainer therefore also
caps those pools and lowers the scheduling priority of all its threads (the Ray
worker's own gRPC and I/O threads included), so the live pipeline's operators win
the CPU whenever both want it.

The thread caps of BLAS / OpenMP pools are read once, when the library loads:
``trainer_env`` goes into the actor's ``runtime_env`` so they hold before the
worker imports numpy; ``bound_cpu_share`` applies what can still change at run
time (OpenCV, PyTorch, niceness). Trainers run no ONNX Runtime session (they
train in numpy or PyTorch); ONNX export happens on the coordinator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


@dataclass(frozen=True)
class CpuShare:
    """How much of a node a trainer may take: ``threads`` per pool, ``niceness`` added (0-19)."""

    threads: int = 1
    niceness: int = 10
    num_cpus: float = 0.25


def trainer_env(share: CpuShare) -> dict[str, str]:
    """Environment variables that cap BLAS / OpenMP pools (for an actor's ``runtime_env``).

    >>> trainer_env(CpuShare(threads=2))["OMP_NUM_THREADS"]
    '2'
    """
    return dict.fromkeys(_THREAD_VARS, str(share.threads))


def bound_cpu_share(share: CpuShare) -> dict[str, int]:
    """Apply ``share`` to this process: thread caps that still can change, and lower priority.

    Returns what holds afterwards (``niceness``, ``threads``) so a caller can report it.
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
    # Added to what the process has: Ray already starts its workers at nice 15, the live
    # pipeline's too, so a trainer must go below that to give way to them.
    niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + share.niceness)
    for thread in _threads():  # every thread: a Ray worker's gRPC and I/O threads too
        if niceness > os.getpriority(os.PRIO_PROCESS, thread):
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
    return {"niceness": os.nice(0), "threads": share.threads}


def _threads() -> list[int]:
    """This process's thread ids (on Linux a niceness belongs to one thread, and threads
    inherit it only when they start; elsewhere, the process)."""
    tasks = "/proc/self/task"
    return [int(t) for t in os.listdir(tasks)] if os.path.isdir(tasks) else [0]
