"""What a round is: its configuration, client sampling, and the metrics it reports.

Pure code: no Ray, no clock. ``sample_clients`` draws from a generator seeded by
the round number, so a resumed coordinator samples what the killed one would have.

>>> cfg = RoundConfig(rounds=3, fraction=0.5, min_clients=2)
>>> sample_clients(["a", "b", "c", "d", "e"], cfg, server_round=1)
['b', 'd', 'e']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.federated import FederatedError, NotEnoughClients


@dataclass(frozen=True)
class RoundConfig:
    """How rounds run.

    ``fraction`` of the available clients is sampled each round, at least
    ``min_clients``; a round waits at most ``deadline_s`` for their results and
    aggregates whatever arrived, if at least ``min_results``. Each client trains
    ``epochs`` local epochs with ``lr`` and ``batch_size``. ``secure`` masks the
    updates so the coordinator sees only their sum (linear strategies only).
    """

    rounds: int
    fraction: float = 1.0
    min_clients: int = 2
    min_results: int = 1
    deadline_s: float = 120.0
    epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    secure: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.rounds < 1:
            problems.append(f"rounds is {self.rounds} (>= 1)")
        if not 0 < self.fraction <= 1:
            problems.append(f"fraction is {self.fraction} (in (0, 1])")
        if self.min_clients < 1 or self.min_results < 1:
            problems.append("min_clients and min_results must be >= 1")
        if self.deadline_s <= 0:
            problems.append(f"deadline_s is {self.deadline_s} (> 0)")
        if problems:
            raise FederatedError(f"bad round configuration: {'; '.join(problems)}")

    def client_config(self, server_round: int, extra: Mapping[str, Any]) -> dict[str, Any]:
        """What each client's ``fit`` gets this round (strategy extras such as FedProx's mu)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": self.seed * 100_003 + server_round,
            **extra,
        }


def sample_clients(available: Sequence[str], cfg: RoundConfig, *, server_round: int) -> list[str]:
    """Round ``server_round``'s clients: ``fraction`` of ``available``, ``min_clients`` at least."""
    pool = sorted(available)
    if len(pool) < cfg.min_clients:
        raise NotEnoughClients(
            f"round {server_round} needs at least {cfg.min_clients} clients and "
            f"{len(pool)} are available ({', '.join(pool) or 'none'}); start more trainer "
            "nodes or lower min_clients"
        )
    k = min(len(pool), max(cfg.min_clients, math.ceil(cfg.fraction * len(pool))))
    rng = np.random.default_rng([cfg.seed, server_round])
    return sorted(pool[i] for i in rng.choice(len(pool), size=k, replace=False))


@dataclass(frozen=True)
class RoundMetrics:
    """What one round did: who took part, what it cost, how good the new global model is."""

    server_round: int
    sampled: tuple[str, ...]
    completed: tuple[str, ...]
    failures: Mapping[str, str]
    central_accuracy: float
    central_loss: float
    client_accuracy: Mapping[str, float]
    train_loss: float
    bytes_moved: int
    duration_s: float
    epsilon: float | None = None

    @property
    def mean_client_accuracy(self) -> float:
        values = [v for v in self.client_accuracy.values() if not math.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sampled"], d["completed"] = list(self.sampled), list(self.completed)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundMetrics:
        return cls(**{**d, "sampled": tuple(d["sampled"]), "completed": tuple(d["completed"])})
