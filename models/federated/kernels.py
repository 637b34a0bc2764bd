"""Aggregation kernels: pure functions over lists of client weights (no state, no config).

>>> import numpy as np
>>> a, b = [np.array([0.0, 2.0])], [np.array([4.0, 6.0])]
>>> weighted_average([a, b], [1, 3])[0].tolist()
[3.0, 5.0]
>>> coordinate_median([a, b, [np.array([100.0, -100.0])]])[0].tolist()
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


def coordinate_median(clients: Sequence[Weights]) -> Weights:
    """Layer-wise, coordinate-wise median of ``clients`` (Yin et al., 2018)."""
    return [
        np.median(np.stack([c[i] for c in clients]), axis=0).astype(clients[0][i].dtype)
        for i in range(len(clients[0]))
    ]


def trimmed_mean(clients: Sequence[Weights], trim: float) -> Weights:
    """Coordinate-wise mean after dropping the ``trim`` fraction of largest and smallest values.

    At least one value is dropped at each end when there are three or more clients.
    """
    n = len(clients)
    k = min(max(int(np.floor(trim * n)), 1 if n >= 3 else 0), (n - 1) // 2)
    out = []
    for i in range(len(clients[0])):
        stacked = np.sort(np.stack([c[i] for c in clients]), axis=0)
        out.append(stacked[k : n - k].mean(axis=0).astype(clients[0][i].dtype))
    return out


def krum_select(clients: Sequence[Weights], byzantine: int) -> int:
    """Index of the client Krum picks: the least total squared distance to its nearest peers."""
    vectors = np.stack([flatten(c) for c in clients])
    d = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=2)
    keep = max(len(clients) - byzantine - 2, 1)
    scores = [np.sort(np.delete(row, i))[:keep].sum() for i, row in enumerate(d)]
    return int(np.argmin(scores))
