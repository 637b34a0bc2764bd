"""A coordinator's checkpoint: the global model, the strategy's state and the history so far.

Written after every round to one file (``checkpoint.npz`` in the checkpoint
directory) through a temporary name and an atomic rename, so a coordinator
killed at any moment leaves either the previous round's checkpoint or this one.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> path = save_checkpoint(d, Checkpoint(2, [np.ones(3, np.float32)], {"m": np.zeros(3)}, []))
>>> c = load_checkpoint(d)
>>> c.server_round, c.weights[0].tolist(), sorted(c.strategy_state)
(2, [1.0, 1.0, 1.0], ['m'])
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from cluster.federated._rounds import RoundMetrics
from models.federated import Weights

CHECKPOINT_FILE = "checkpoint.npz"


@dataclass(frozen=True)
class Checkpoint:
    """The state after round ``server_round`` (0: before the first round)."""

    server_round: int
    weights: Weights
    strategy_state: dict[str, np.ndarray]
    history: list[RoundMetrics]


def save_checkpoint(directory: str | os.PathLike, checkpoint: Checkpoint) -> pathlib.Path:
    """Write ``checkpoint`` into ``directory`` atomically; returns the file's path."""
    path = pathlib.Path(directory) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "server_round": checkpoint.server_round,
        "layers": len(checkpoint.weights),
        "history": [m.to_dict() for m in checkpoint.history],
    }
    arrays = {f"w{i}": w for i, w in enumerate(checkpoint.weights)}
    arrays |= {f"s_{k}": v for k, v in checkpoint.strategy_state.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None when there is none yet."""
    path = pathlib.Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        weights = [f[f"w{i}"] for i in range(meta["layers"])]
        state = {k[2:]: f[k] for k in f.files if k.startswith("s_")}
    history = [RoundMetrics.from_dict(d) for d in meta["history"]]
    return Checkpoint(meta["server_round"], weights, state, history)
