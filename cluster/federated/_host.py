"""The client side of a round, hosted on one node: a trainer and its masking state.

``TrainerHost`` wraps any ``Trainer``; ``TrainerActor`` is the host a Ray actor
runs on a fleet node: it bounds its CPU share first, then builds its trainer from
the node's *own* data partition (``<data_root>/<node>/partition.npz`` on that
node's disk). Data never leaves the host: its methods take and return weights,
configs, metrics and masked vectors only.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster.federated._cpu import CpuShare, bound_cpu_share
from models.federated import (
    EvalResult,
    FederatedError,
    FitResult,
    LinearEncoding,
    MaskingClient,
    MLPTrainer,
    TorchCNNTrainer,
    Trainer,
    Weights,
    read_partition,
)


@dataclass(frozen=True)
class TrainerSpec:
    """Which model a node trains and where its local data is.

    ``backend``: ``"mlp"`` (numpy) or ``"torch"`` (the ``[train]`` extra);
    ``data_root``: a directory on every node holding ``<node>/partition.npz``.
    """

    data_root: str
    num_classes: int
    backend: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    seed: int = 0

    def build(self, node: str) -> Trainer:
        """The trainer over ``node``'s own partition (read here, on the node)."""
        train, test = read_partition(pathlib.Path(self.data_root) / node)
        return self.model(train, test)

    def model(self, train=None, test=None) -> Trainer:
        """A trainer of this spec's model over the given data (also the central evaluator)."""
        if self.backend == "mlp":
            return MLPTrainer(
                train, test, num_classes=self.num_classes, hidden=self.hidden, seed=self.seed
            )
        if self.backend == "torch":
            return TorchCNNTrainer(train, test, num_classes=self.num_classes, seed=self.seed)
        raise FederatedError(f"unknown trainer backend {self.backend!r}; use 'mlp' or 'torch'")


class TrainerHost:
    """One client: ``fit`` / ``evaluate`` in the clear, or the three steps of a masked round."""

    def __init__(self, trainer: Trainer, *, node: str) -> None:
        self.trainer = trainer
        self.node = node
        self._masking: MaskingClient | None = None

    def fit(self, weights: Weights, config: Mapping[str, Any]) -> FitResult:
        return self.trainer.fit(weights, config)

    def evaluate(self, weights: Weights, config: Mapping[str, Any]) -> EvalResult:
        return self.trainer.evaluate(weights, config)

    def begin_secure(self, server_round: int) -> bytes:
        """Step 1: a fresh key pair for this round; returns the public key."""
        self._masking = MaskingClient(self.node, round_id=server_round)
        return self._masking.public_key()

    def fit_masked(
        self,
        weights: Weights,
        config: Mapping[str, Any],
        peer_keys: Mapping[str, bytes],
        encoding: LinearEncoding,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Step 2: train, encode the update (plus its weight, last), return it masked."""
        if self._masking is None:
            raise FederatedError(f"client {self.node!r}: fit_masked before begin_secure")
        result = self.trainer.fit(weights, config)
        vector, weight = encoding.encode(weights, result)
        return self._masking.mask(np.append(vector, weight), peer_keys), dict(result.metrics)

    def unmask(self, dropped: list[str]) -> np.ndarray:
        """Step 3 (only when clients dropped): the masks shared with them, to subtract."""
        if self._masking is None:
            raise FederatedError(f"client {self.node!r}: unmask before begin_secure")
        return self._masking.unmask(dropped)


class TrainerActor(TrainerHost):
    """The host a Ray actor runs on a node: bounded CPU share, the node's own data."""

    def __init__(self, spec: TrainerSpec, *, node: str, share: CpuShare) -> None:
        self.share = bound_cpu_share(share)
        self.data_dir = str(pathlib.Path(spec.data_root) / node)
        super().__init__(spec.build(node), node=node)

    def where(self) -> dict[str, Any]:
        """Where this trainer runs and what it read: node name and id, pid, data, CPU share."""
        import ray

        ctx = ray.get_runtime_context()
        return {
            "node": self.node,
            "node_id": ctx.get_node_id(),
            "labels": dict(ctx.get_node_labels()),
            "pid": os.getpid(),
            "data_dir": self.data_dir,
            **self.share,
            "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        }
