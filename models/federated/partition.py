"""Non-IID splits of a labelled data set across clients (class-skewed, by a Dirichlet prior).

>>> import numpy as np
>>> labels = np.repeat(np.arange(10), 20)
>>> parts = dirichlet_partition(labels, num_clients=4, alpha=0.5, seed=0)
>>> sorted(np.concatenate(parts).tolist()) == list(range(200))  # every sample, exactly once
True
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from models._errors import FederatedError


def dirichlet_partition(
    labels: np.ndarray, *, num_clients: int, alpha: float, seed: int = 0, min_size: int = 2
) -> list[np.ndarray]:
    """Indices of ``labels`` per client: each class spread by proportions drawn from Dir(alpha).

    Small ``alpha`` (0.1-0.5) gives each client a few dominant classes; large
    ``alpha`` tends to an IID split. Draws again (up to 100 times) until every
    client holds at least ``min_size`` samples.
    """
    labels = np.asarray(labels)
    if num_clients < 1 or alpha <= 0:
        raise FederatedError(f"need num_clients >= 1 and alpha > 0; got {num_clients}, {alpha}")
    if len(labels) < num_clients * min_size:
        raise FederatedError(
            f"{len(labels)} samples cannot give {num_clients} clients {min_size} each; "
            "use fewer clients or more data"
        )
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise FederatedError(
        f"no Dirichlet({alpha}) split in 100 draws gave each of {num_clients} clients "
        f"{min_size} samples; raise alpha or lower min_size"
    )


def train_test_split(
    num_samples: int, *, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled ``(train, test)`` index arrays over ``range(num_samples)``."""
    order = np.random.default_rng(seed).permutation(num_samples)
    n_test = round(test_fraction * num_samples)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


PARTITION_FILE = "partition.npz"


def write_partition(
    directory: str | os.PathLike,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> pathlib.Path:
    """Store one client's ``(images, labels)`` train and test splits in ``directory``."""
    path = pathlib.Path(directory) / PARTITION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    return path


def read_partition(
    directory: str | os.PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` as written by ``write_partition``; a clear error when absent."""
    path = pathlib.Path(directory) / PARTITION_FILE
    if not path.is_file():
        raise FederatedError(
            f"no local data partition at {str(path)!r}; write one on this node with "
            "models.federated.write_partition (or `edgeray federate` on a spec with [data])"
        )
    with np.load(path) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
