"""Aggregation kernels: pure functions over client weights or flat update rows (no state).

>>> import numpy as np
>>> a, b = [np.array([0.0, 2.0])], [np.array([4.0, 6.0])]
>>> weighted_average([a, b], [1, 3])[0].tolist()
[3.0, 5.0]
>>> coordinate_median(np.array([[0.0, 2.0], [4.0, 6.0], [100.0, -100.0]])).tolist()
[4.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.federated.trainer import Weights


def flatten(weights: Sequence[np.ndarray]) -> np.ndarray:
    """All layers as one float64 vector (the order of ``weights``)."""
    return np.concatenate([np.asarray(w, np.float64).ravel() for w in weights])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> Weights:
    """``vector`` cut back into layers shaped and typed like ``like``."""
    out, at = [], 0
    for w in like:
        out.append(vector[at : at + w.size].reshape(w.shape).astype(w.dtype))
        at += w.size
    return out


def weighted_average(clients: Sequence[Weights], weights: Sequence[float]) -> Weights:
    """Layer-wise average of ``clients`` weighted by ``weights`` (e.g. sample counts)."""
    total = float(sum(weights))
    return [
        (
            sum(np.asarray(c[i], np.float64) * w for c, w in zip(clients, weights, strict=True))
            / total
        ).astype(clients[0][i].dtype)
        for i in range(len(clients[0]))
    ]


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """Coordinate-wise median of the clients' flat vectors, one per row (Yin et al., 2018)."""
    return np.median(rows, axis=0)


def trimmed_mean(rows: np.ndarray, trim: float) -> np.ndarray:
    """Coordinate-wise mean of ``rows`` without the ``trim`` fraction of largest and smallest.

    At least one value is dropped at each end when there are three or more rows.
    """
    n = len(rows)
    k = min(max(int(np.floor(trim * n)), 1 if n >= 3 else 0), (n - 1) // 2)
    return np.sort(rows, axis=0)[k : n - k].mean(axis=0)


def krum_scores(rows: np.ndarray, byzantine: int) -> np.ndarray:
    """Krum's score of each row: its total squared distance to its ``n - byzantine - 2`` nearest.

    Krum keeps the lowest-scored row, Multi-Krum averages the ``m`` lowest
    (Blanchard et al., 2017).
    """
    sq = (rows**2).sum(axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0.0)
    keep = max(len(rows) - byzantine - 2, 1)
    return np.array([np.sort(np.delete(row, i))[:keep].sum() for i, row in enumerate(d)])
