"""The clients of a federation as seen by the coordinator: submit calls, wait with a deadline.

``TrainerPool`` holds the round protocol (plain fit, the three steps of a masked
fit, evaluation) and the accounting of what travels; ``RayTrainerPool`` runs one
``TrainerActor`` per node, pinned by the node's ``edge.node`` label, and
``LocalTrainerPool`` runs hosts in this process (benchmarks, unit tests).
Failures come back as data: ``{client: reason}`` beside the results.

Every argument sent and every value received is measured (``traffic``):
what crosses the wire is weights, configs, metrics, keys and masked vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster.federated._cpu import CpuShare, trainer_env
from cluster.federated._host import TrainerActor, TrainerHost, TrainerSpec
from models.federated import (
    EvalResult,
    FederatedError,
    FitResult,
    LinearEncoding,
    SecureSum,
    Weights,
)


@dataclass(frozen=True)
class Traffic:
    """One message between coordinator and a client: its arrays' shapes and its size."""

    direction: str  # "sent" | "received"
    client: str
    method: str
    shapes: tuple[tuple[int, ...], ...]
    nbytes: int


@dataclass(frozen=True)
class SecureOutcome:
    """A masked round's result: the plain sum of encoded updates and who made it."""

    summed: np.ndarray
    total_weight: float
    survivors: tuple[str, ...]
    failures: dict[str, str]
    metrics: dict[str, dict[str, float]]


def measure(value: Any) -> tuple[list[tuple[int, ...]], int]:
    """The array shapes in ``value`` (lists, dicts, dataclasses walked) and their total bytes."""
    if isinstance(value, np.ndarray):
        return [value.shape], value.nbytes
    if isinstance(value, bytes | bytearray):
        return [], len(value)
    if isinstance(value, str):
        return [], len(value.encode())
    if isinstance(value, int | float | bool | np.generic) or value is None:
        return [], 8
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    items = value.values() if isinstance(value, Mapping) else value
    shapes, total = [], 0
    for item in items:
        s, n = measure(item)
        shapes += s
        total += n
    return shapes, total


class TrainerPool:
    """The round protocol over clients reached through ``_submit`` / ``_gather``."""

    def __init__(self, *, observe: Callable[[Traffic], None] | None = None) -> None:
        self.traffic: list[Traffic] = []
        self._observe = observe
        self._dead: dict[str, str] = {}

    # -- what subclasses provide ---------------------------------------------------------
    def names(self) -> list[str]:
        raise NotImplementedError

    def _submit(self, client: str, method: str, *args: Any) -> Any:
        raise NotImplementedError

    def _gather(
        self, pending: Mapping[str, Any], timeout_s: float
    ) -> tuple[dict[str, Any], dict[str, str]]:
        raise NotImplementedError

    # -- accounting ------------------------------------------------------------------------
    @property
    def bytes_moved(self) -> int:
        return sum(t.nbytes for t in self.traffic)

    def available(self) -> list[str]:
        """Clients not known to be dead."""
        return [n for n in self.names() if n not in self._dead]

    def _record(self, direction: str, client: str, method: str, value: Any) -> None:
        shapes, nbytes = measure(value)
        record = Traffic(direction, client, method, tuple(shapes), nbytes)
        self.traffic.append(record)
        if self._observe is not None:
            self._observe(record)

    def _call_all(
        self, clients: Sequence[str], method: str, args_of: Callable[[str], tuple], timeout_s: float
    ) -> tuple[dict[str, Any], dict[str, str]]:
        pending = {}
        for c in clients:
            args = args_of(c)
            pending[c] = self._submit(c, method, *args)
            self._record("sent", c, method, args)
        values, failures = self._gather(pending, timeout_s)
        for c, v in values.items():
            self._record("received", c, method, v)
        return values, failures

    # -- the protocol ----------------------------------------------------------------------
    def fit(
        self, clients: Sequence[str], weights: Weights, config: Mapping[str, Any], timeout_s: float
    ) -> tuple[dict[str, FitResult], dict[str, str]]:
        return self._call_all(clients, "fit", lambda c: (weights, dict(config)), timeout_s)

    def evaluate(
        self, clients: Sequence[str], weights: Weights, timeout_s: float
    ) -> tuple[dict[str, EvalResult], dict[str, str]]:
        return self._call_all(clients, "evaluate", lambda c: (weights, {}), timeout_s)

    def secure_fit(
        self,
        server_round: int,
        clients: Sequence[str],
        weights: Weights,
        config: Mapping[str, Any],
        encoding: LinearEncoding,
        deadline: float,
        now: Callable[[], float],
    ) -> SecureOutcome:
        """Keys, masked updates, then (if anyone dropped) the survivors' revealed masks.

        ``deadline`` (on the ``now`` clock) bounds the first two steps together.
        """
        keys, failures = self._call_all(
            clients, "begin_secure", lambda c: (server_round,), deadline - now()
        )
        masked, failed = self._call_all(
            list(keys),
            "fit_masked",
            lambda c: (weights, dict(config), keys, encoding),
            deadline - now(),
        )
        failures |= failed
        size = sum(int(np.asarray(w).size) for w in weights) + 1
        total = SecureSum(list(keys), size=size)
        for client, (vector, _) in masked.items():
            total.add(client, vector)
        if total.dropped():
            dropped = total.dropped()
            revealed, lost = self._call_all(
                total.survivors(), "unmask", lambda c: (dropped,), max(deadline - now(), 30.0)
            )
            if lost:
                raise FederatedError(
                    f"round {server_round}: survivors {', '.join(lost)} failed while revealing "
                    f"their masks with dropped clients {', '.join(dropped)} ({lost}); the sum "
                    "cannot be unmasked: the round is lost, resume from the last checkpoint"
                )
            for client, vector in revealed.items():
                total.correct(client, vector)
        summed = total.result()
        return SecureOutcome(
            summed=summed[:-1],
            total_weight=float(summed[-1]),
            survivors=tuple(total.survivors()),
            failures=failures,
            metrics={c: m for c, (_, m) in masked.items()},
        )


class LocalTrainerPool(TrainerPool):
    """Clients in this process, called one after another (no deadline can cut them short)."""

    def __init__(self, trainers: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hosts = {
            name: t if isinstance(t, TrainerHost) else TrainerHost(t, node=name)
            for name, t in trainers.items()
        }

    def names(self) -> list[str]:
        return sorted(self.hosts)

    def _submit(self, client: str, method: str, *args: Any) -> Any:
        try:
            return ("ok", getattr(self.hosts[client], method)(*args))
        except FederatedError as err:
            return ("failed", f"{type(err).__name__}: {err}")

    def _gather(self, pending, timeout_s):
        values = {c: v for c, (status, v) in pending.items() if status == "ok"}
        return values, {c: v for c, (status, v) in pending.items() if status != "ok"}


class RayTrainerPool(TrainerPool):
    """One ``TrainerActor`` per node named in ``nodes``, pinned by ``{label: node}``."""

    def __init__(
        self,
        spec: TrainerSpec,
        nodes: Sequence[str],
        *,
        share: CpuShare | None = None,
        label: str = "edge.node",
        ready_timeout_s: float = 120.0,
        **kwargs: Any,
    ) -> None:
        import ray

        super().__init__(**kwargs)
        share = share or CpuShare()
        self._sent: tuple[Any, Any] = (None, None)  # the weights put last, and their ref
        remote = ray.remote(TrainerActor)
        self.actors = {
            node: remote.options(
                num_cpus=share.num_cpus,
                label_selector={label: node},
                max_restarts=0,
                runtime_env={"env_vars": trainer_env(share)},
            ).remote(spec, node=node, share=share)
            for node in nodes
        }
        placed, failures = self._gather(
            {n: a.where.remote() for n, a in self.actors.items()}, ready_timeout_s
        )
        self.placement = placed
        if failures:
            raise FederatedError(
                f"trainers could not start on {', '.join(failures)}: {failures}; check that each "
                f"node carries the label {label}=<its name> and holds its data partition"
            )

    def names(self) -> list[str]:
        return sorted(self.actors)

    def _submit(self, client: str, method: str, *args: Any) -> Any:
        return getattr(self.actors[client], method).remote(*map(self._by_ref, args))

    def _by_ref(self, value: Any) -> Any:
        """Model weights as one object-store entry per version (other arguments as they are).

        A large argument of a remote call is put in the object store for that call alone:
        sending one model to every client, then again to evaluate, then again as the
        next round's start would put and pull it once per call. Put once, it is pulled
        once per node and read there by every call. Weights are never changed in place
        once sent (strategies return new ones), so the one sent last is known by identity.
        """
        import ray

        if not (isinstance(value, list) and value and all(type(w) is np.ndarray for w in value)):
            return value  # not model weights
        if value is not self._sent[0]:
            self._sent = (value, ray.put(value))
        return self._sent[1]

    def _gather(self, pending, timeout_s):
        import ray

        refs = {ref: client for client, ref in pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=max(timeout_s, 0.0))
        values, failures = {}, {}
        for ref in ready:
            client = refs[ref]
            try:
                values[client] = ray.get(ref)
            except ray.exceptions.RayError as err:
                failures[client] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                if isinstance(
                    err, ray.exceptions.ActorDiedError | ray.exceptions.ActorUnavailableError
                ):
                    self._dead[client] = failures[client]
        for ref, client in refs.items():
            if ref not in ready:
                failures[client] = f"missed the deadline ({timeout_s:.1f} s left when it was set)"
        return values, failures

    def shutdown(self) -> None:
        import ray

        for actor in self.actors.values():
            ray.kill(actor)
