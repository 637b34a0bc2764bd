"""Pre-aggregation steps for the robust strategies: what to do to the updates before the median.

Coordinate-wise median and trimmed mean hold against one attacker when honest
clients agree; on class-skewed (non-IID) clients they do not. A class that one
client holds gets an update from that client alone, so the middle value of each
coordinate is that of the clients *without* the class, and one attacker among
five moves that middle value toward itself on every coordinate. A
pre-aggregation step makes the honest updates alike before the robust rule
sees them. Each is a callable over the clients' flat updates, one row per
client (``(n, d)`` in, ``(m, d)`` out), chosen by name (``make_pre_aggregation``):

* ``"nnm"``: nearest-neighbour mixing (Allouah et al., 2023, "Fixing by Mixing:
  a recipe for optimal Byzantine ML under heterogeneity"): each update becomes
  the mean of its ``n - byzantine`` nearest updates (itself included). Honest
  clients' neighbourhoods are the honest clients, so their rows become nearly
  the honest mean and the median of the rows lands on it;
* ``"bucketing"``: the mean of random buckets of ``bucket_size`` updates
  (Karimireddy, He and Jaggi, 2022, "Byzantine-robust learning on heterogeneous
  datasets via bucketing"), drawn afresh each round;
* ``"norm-bound"``: every update scaled down to at most the median update norm
  (norm bounding, Sun et al., 2019), so a scaled update weighs no more than a
  typical one.

>>> u = np.array([[1.0, 0.0], [1.2, 0.0], [0.8, 0.0], [1.0, 0.2], [-40.0, 0.0]])
>>> mixed = NearestNeighborMixing(byzantine=1)(u)
>>> np.round(np.median(mixed, axis=0), 3).tolist()  # the mean of the four honest rows
[1.0, 0.05]
>>> np.linalg.norm(NormBound()(u), axis=1).max().round(3)
np.float64(1.02)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models._errors import FederatedError


class PreAggregation(Protocol):
    """Rows of client updates in, rows for the robust rule out."""

    name: str

    def __call__(self, updates: np.ndarray, *, server_round: int) -> np.ndarray: ...


class NearestNeighborMixing:
    """Each update replaced by the mean of its ``n - byzantine`` nearest updates (itself too)."""

    name = "nnm"

    def __init__(self, *, byzantine: int = 1) -> None:
        if byzantine < 0:
            raise FederatedError(f"nnm byzantine is {byzantine}; it must be >= 0")
        self.byzantine = byzantine

    def __call__(self, updates: np.ndarray, *, server_round: int = 0) -> np.ndarray:
        keep = max(len(updates) - self.byzantine, 1)
        sq = (updates**2).sum(axis=1)
        distances = sq[:, None] + sq[None, :] - 2 * updates @ updates.T
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :keep]
        return updates[nearest].mean(axis=1)


class Bucketing:
    """Means of random buckets of ``bucket_size`` updates, a new draw each round."""

    name = "bucketing"

    def __init__(self, *, bucket_size: int = 2, seed: int = 0) -> None:
        if bucket_size < 1:
            raise FederatedError(f"bucketing bucket_size is {bucket_size}; it must be >= 1")
        self.bucket_size, self.seed = bucket_size, seed

    def __call__(self, updates: np.ndarray, *, server_round: int = 0) -> np.ndarray:
        order = np.random.default_rng([self.seed, server_round]).permutation(len(updates))
        return np.stack(
            [
                updates[order[lo : lo + self.bucket_size]].mean(axis=0)
                for lo in range(0, len(order), self.bucket_size)
            ]
        )


class NormBound:
    """Every update scaled down to at most the median of the updates' L2 norms."""

    name = "norm-bound"

    def __call__(self, updates: np.ndarray, *, server_round: int = 0) -> np.ndarray:
        norms = np.linalg.norm(updates, axis=1)
        bound = float(np.median(norms))
        scale = np.minimum(1.0, bound / np.maximum(norms, 1e-12))
        return updates * scale[:, None]


PRE_AGGREGATIONS = {cls.name: cls for cls in (NearestNeighborMixing, Bucketing, NormBound)}


def make_pre_aggregation(
    name: str | None, *, byzantine: int = 1, bucket_size: int = 2, seed: int = 0
) -> PreAggregation | None:
    """The step called ``name`` (None: no step), given the options it takes."""
    if name is None:
        return None
    if name == "nnm":
        return NearestNeighborMixing(byzantine=byzantine)
    if name == "bucketing":
        return Bucketing(bucket_size=bucket_size, seed=seed)
    if name == "norm-bound":
        return NormBound()
    raise FederatedError(
        f"unknown pre-aggregation step {name!r}; choose one of {', '.join(PRE_AGGREGATIONS)} "
        "(or leave it out)"
    )
