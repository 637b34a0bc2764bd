"""The coordinator: runs rounds over a trainer pool, checkpoints each, resumes after a kill.

One round: sample clients, send them the global weights and config, wait until
the deadline, aggregate what arrived (in the clear, or only its sum under
secure aggregation), evaluate the new model on the sampled clients' held-out
data and on the central test set, checkpoint, report ``RoundMetrics``.

A coordinator given a checkpoint directory that already holds a checkpoint
starts from the round after it, with the model, strategy state and history it
saved: killing it between rounds loses nothing but the round in progress.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np

from cluster.federated._checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cluster.federated._pool import TrainerPool
from cluster.federated._rounds import RoundConfig, RoundMetrics, sample_clients
from models.federated import (
    BadUpdate,
    DPFedAvg,
    EvalResult,
    FederatedError,
    NotEnoughClients,
    Weights,
    check_weights,
    epsilon,
)
from models.federated.strategies import StrategyBase

#: Called after each round with its metrics and the new global weights (e.g. to register them).
RoundCallback = Callable[[RoundMetrics, Weights], None]


class Coordinator:
    """Rounds of ``strategy`` over ``pool`` from ``initial_weights`` (or the checkpoint)."""

    def __init__(
        self,
        pool: TrainerPool,
        strategy: StrategyBase,
        *,
        initial_weights: Weights,
        config: RoundConfig,
        central_eval: Callable[[Weights], EvalResult] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        on_round: RoundCallback | None = None,
        dp_delta: float = 1e-5,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.secure and not getattr(strategy, "linear", False):
            raise FederatedError(
                f"strategy {strategy.name!r} needs each client's update, and secure aggregation "
                "shows the coordinator only their sum; use fedavg, fedprox, fedadam, fedyogi or "
                "dpfedavg with secure=true, or turn secure off"
            )
        self.pool, self.strategy, self.config = pool, strategy, config
        self.central_eval, self.on_round = central_eval, on_round
        self.checkpoint_dir, self.dp_delta, self._now = checkpoint_dir, dp_delta, now
        self.weights = [np.array(w) for w in initial_weights]
        self.history: list[RoundMetrics] = []
        self.resumed_from = 0
        if checkpoint_dir is not None and (saved := load_checkpoint(checkpoint_dir)) is not None:
            check_weights(saved.weights, self.weights, client="checkpoint")
            self.weights, self.history = saved.weights, list(saved.history)
            self.strategy.restore(saved.strategy_state)
            self.resumed_from = saved.server_round

    @property
    def next_round(self) -> int:
        return self.resumed_from + 1 if not self.history else self.history[-1].server_round + 1

    def run(self) -> list[RoundMetrics]:
        """Every round left up to ``config.rounds``; the whole history (resumed rounds first)."""
        for server_round in range(self.next_round, self.config.rounds + 1):
            metrics, self.weights = self.run_round(server_round)
            self.history.append(metrics)
            if self.on_round is not None:
                self.on_round(metrics, self.weights)
            if self.checkpoint_dir is not None:
                save_checkpoint(
                    self.checkpoint_dir,
                    Checkpoint(server_round, self.weights, self.strategy.state(), self.history),
                )
        return self.history

    def run_round(self, server_round: int) -> tuple[RoundMetrics, Weights]:
        cfg = self.config
        start, bytes_before = self._now(), self.pool.bytes_moved
        available = self.pool.available()
        sampled = sample_clients(available, cfg, server_round=server_round)
        fit_config = cfg.client_config(server_round, self.strategy.fit_config(server_round))
        deadline = start + cfg.deadline_s
        if cfg.secure:
            outcome = self.pool.secure_fit(
                server_round, sampled, self.weights, fit_config, self.strategy.encoding,
                deadline, self._now,
            )  # fmt: skip
            completed, failures = list(outcome.survivors), dict(outcome.failures)
            self._require(server_round, completed, failures)
            new = self.strategy.from_sum(
                self.weights, outcome.summed, outcome.total_weight, len(completed)
            )
            losses = [m.get("train_loss", math.nan) for m in outcome.metrics.values()]
        else:
            results, failures = self.pool.fit(sampled, self.weights, fit_config, deadline - start)
            for client, result in list(results.items()):
                try:
                    check_weights(result.weights, self.weights, client=client)
                except BadUpdate as err:
                    failures[client] = f"BadUpdate: {err}"
                    del results[client]
            completed = sorted(results)
            self._require(server_round, completed, failures)
            new = self.strategy.aggregate(self.weights, [results[c] for c in completed])
            losses = [results[c].metrics.get("train_loss", math.nan) for c in completed]
        evals, _ = self.pool.evaluate(sampled, new, max(deadline - self._now(), 10.0))
        central = self.central_eval(new) if self.central_eval else EvalResult(math.nan, math.nan, 0)
        metrics = RoundMetrics(
            server_round=server_round,
            sampled=tuple(sampled),
            completed=tuple(completed),
            failures=failures,
            central_accuracy=central.accuracy,
            central_loss=central.loss,
            client_accuracy={c: e.accuracy for c, e in sorted(evals.items())},
            train_loss=float(np.nanmean(losses)) if losses else math.nan,
            bytes_moved=self.pool.bytes_moved - bytes_before,
            duration_s=self._now() - start,
            epsilon=self._epsilon(server_round, len(sampled), len(available)),
        )
        return metrics, new

    def _require(self, server_round: int, completed: list[str], failures: dict[str, str]) -> None:
        if len(completed) < self.config.min_results:
            raise NotEnoughClients(
                f"round {server_round}: {len(completed)} clients returned results by the deadline "
                f"and the round needs {self.config.min_results}; failures: {failures}; lengthen "
                "deadline_s or lower min_results, then run again (it resumes from the checkpoint)"
            )

    def _epsilon(self, server_round: int, sampled: int, available: int) -> float | None:
        if not isinstance(self.strategy, DPFedAvg) or self.strategy.noise_multiplier <= 0:
            return None
        return epsilon(
            noise_multiplier=self.strategy.noise_multiplier,
            sample_rate=sampled / available,
            rounds=server_round,
            delta=self.dp_delta,
        )
