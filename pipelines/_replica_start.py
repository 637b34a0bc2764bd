"""How a rollout starts a replacement replica without taking the stream's CPU: boot, warm-up.

Measured on a 2-core node streaming at 60 Hz (``bench.rollout``), starting a new
replica costs about 0.8 s of CPU, almost all of it before any edgeray code runs:
the Python interpreter, ``import ray`` and the connection to the node; then the
actor class and the pipeline are unpickled (edgeray and ONNX Runtime imported),
the model is fetched and opened (~0.04 s) and warmed (~0.01 s). Ray's raylet
starts a worker at its own niceness, 0, the niceness edgeray's fleets give every
worker (``cluster._ray_config``; with Ray's default, 15, the boot ran 28 times
the stream's weight until the worker lowered itself once connected). At equal
weight the boot still takes half of a contended core from the stream for most
of a second: that stalled it at each start, whether the new process held an
operator or nothing at all.

What a rollout therefore does, for every replica it starts (``RayExecutor``):

- ``BootHold``, in the replica being replaced (it runs on the same node, so
  it shares the raylet that starts the new process): while the new replica
  starts, every process that raylet starts is put at nice ``HELD_NICE`` (19)
  as soon as it appears (``/proc/<raylet>/task/<raylet>/children``, polled every
  ``POLL_S``): its whole boot, constructor (model fetch, session) and warm-up
  run below the stream. Any other worker that raylet happens to start in that
  second is held too, and returns to its niceness only by Ray's own means
  (not at all: it keeps 19).
- ``set_niceness`` in the new replica once it is warm: every thread of its
  process goes back to the niceness of the replica it replaces (Ray's worker
  niceness), so the new version serves at the same priority as the old one.

Lowering a niceness again (19 -> 0) needs ``CAP_SYS_NICE`` or an
``RLIMIT_NICE`` of at least ``20 - 0 = 20`` (``ulimit -e``; systemd's
``LimitNICE=``); Linux allows anyone to raise it. Where neither is granted
(``can_lower_niceness``), the hold is not taken: the new process boots as Ray
starts it (the stall above), rather than leave a replica of the new version
serving at nice 19 below its peers. Off Linux (no ``/proc``), likewise. The
rollout's record says which happened (``boot``).

``warm_model``: a replica whose slot has had no traffic yet has no real input
to be warmed with; it runs one inference of each model session its operator
opened on an input built from the operator's declared model signature
(``ModelSignature``: shape, dynamic dimensions as 1, dtype), so a version
whose model cannot run never takes traffic there either.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.inference import ModelSignature

#: Niceness a new replica's process boots and warms at (the lowest priority Linux gives).
HELD_NICE = 19
#: Seconds between two looks at the raylet's children while a replacement starts.
POLL_S = 0.002
#: Bit of ``CAP_SYS_NICE`` in ``/proc/self/status`` ``CapEff``.
_CAP_SYS_NICE = 23


@dataclass(frozen=True)
class Hold:
    """What ``BootHold.start`` did: whether new processes are held, at what niceness the
    replacement should serve once warm (``restore_to``), and why not where not."""

    held: bool
    restore_to: int
    why: str = ""


def can_lower_niceness(to: int) -> tuple[bool, str]:
    """Whether this process may set a thread's niceness down to ``to`` (and why not)."""
    if sys.platform != "linux":
        return False, f"niceness is only managed on Linux, not {sys.platform}"
    if os.geteuid() == 0 or _has_cap_sys_nice():
        return True, ""
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    needed = 20 - to
    if soft != resource.RLIM_INFINITY and soft < needed:
        return False, (
            f"lowering a niceness to {to} needs CAP_SYS_NICE or RLIMIT_NICE >= {needed} "
            f"(here {soft}); set `ulimit -e {needed}` (systemd: LimitNICE={needed}) for the "
            "Ray node so a new replica can boot below the stream"
        )
    return True, ""


def _has_cap_sys_nice() -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    effective = next((line.split()[1] for line in status.splitlines()
                      if line.startswith("CapEff:")), "0")  # fmt: skip
    return bool(int(effective, 16) >> _CAP_SYS_NICE & 1)


class BootHold:
    """Hold every process the node's raylet (this worker's parent) starts at ``HELD_NICE``,
    from ``start`` until ``release`` (or ``timeout_s``); see the module docstring."""

    def __init__(self, *, raylet: int | None = None, poll_s: float = POLL_S) -> None:
        self.raylet = os.getppid() if raylet is None else raylet
        self.poll_s = poll_s
        self.held_pids: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _children(self) -> Path:
        return Path(f"/proc/{self.raylet}/task/{self.raylet}/children")

    def start(self, timeout_s: float) -> Hold:
        """Begin holding (a thread), unless the OS would not let the replacement return to
        this process's niceness afterwards or the raylet's children cannot be seen."""
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        allowed, why = can_lower_niceness(nice)
        if not allowed:
            return Hold(False, nice, why)
        try:
            known = set(self._children.read_text().split())
        except OSError as err:
            return Hold(False, nice, f"the raylet's children are not visible: {err}")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(known, time.monotonic() + timeout_s),
            name="boot-hold", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return Hold(True, nice)

    def release(self) -> list[int]:
        """Stop holding; the pids that were held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return list(self.held_pids)

    def _watch(self, known: set[str], deadline: float) -> None:
        while not self._stop.wait(self.poll_s) and time.monotonic() < deadline:
            try:
                children = self._children.read_text().split()
            except OSError:  # the raylet is gone: nothing more will start
                return
            for pid in children:
                if pid not in known:
                    known.add(pid)
                    with contextlib.suppress(PermissionError):  # another user's: not held
                        if _renice_all_threads(int(pid), HELD_NICE):
                            self.held_pids.append(int(pid))


def _renice_all_threads(pid: int, nice: int) -> bool:
    """Set every thread of ``pid`` to ``nice`` (threads it starts later inherit it)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # it already ended
        return False
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    return True


def set_niceness(nice: int) -> int:
    """Set every thread of this process to ``nice``; the niceness it has then.

    Raises ``PermissionError`` where the OS does not allow it (``can_lower_niceness``).
    """
    _renice_all_threads(os.getpid(), nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


def signature_input(signature: ModelSignature) -> np.ndarray:
    """A zero tensor that fits ``signature``: its shape with dynamic dimensions as 1."""
    return np.zeros([1 if d is None else d for d in signature.shape], signature.dtype)


def warm_model(operator: Any) -> int:
    """Run each ONNX Runtime session ``operator`` holds once on its signature's input; how
    many ran. An operator without a declared ``signature`` or without a session runs none."""
    signature = getattr(operator, "signature", None)
    if not isinstance(signature, ModelSignature):
        return 0
    sessions = [v for v in vars(operator).values() if _is_session(v)]
    for session in sessions:
        session.run(None, {signature.input_name: signature_input(signature)})
    return len(sessions)


def _is_session(value: Any) -> bool:
    return callable(getattr(value, "run", None)) and callable(getattr(value, "get_inputs", None))
