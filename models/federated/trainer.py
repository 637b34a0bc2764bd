"""The trainer protocol (in the spirit of Flower's ``NumPyClient``) and what it returns.

A trainer owns one model and one client's local data. The coordinator only ever
sends it weights and a config, and only ever receives weights, a sample count
and metrics back: the data stays where the trainer is.

>>> import numpy as np
>>> ref = [np.ones((2, 3), np.float32)]
>>> check_weights([np.zeros((2, 3), np.float32)], ref, client="c1")
>>> check_weights([np.zeros((3, 2), np.float32)], ref, client="c1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
models._errors.BadUpdate: client 'c1' sent layer 0 with shape (3, 2) float32; ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from models._errors import BadUpdate

#: A model's parameters: one array per layer, in a fixed order.
Weights = list[np.ndarray]


@dataclass(frozen=True)
class FitResult:
    """What a client returns from ``fit``: new weights, how many samples made them, metrics."""

    weights: Weights
    num_samples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """What ``evaluate`` returns: loss and accuracy over ``num_samples`` held-out samples."""

    loss: float
    accuracy: float
    num_samples: int


@runtime_checkable
class Trainer(Protocol):
    """A model plus one client's local data.

    ``fit`` trains from ``weights`` for ``config["epochs"]`` local epochs (also
    ``lr``, ``batch_size``, ``proximal_mu`` for FedProx, ``seed``) and returns the
    new weights; ``evaluate`` scores ``weights`` on the client's held-out data.
    """

    def get_weights(self) -> Weights: ...

    def set_weights(self, weights: Weights) -> None: ...

    def fit(self, weights: Weights, config: Mapping[str, Any]) -> FitResult: ...

    def evaluate(self, weights: Weights, config: Mapping[str, Any]) -> EvalResult: ...


def check_weights(weights: Sequence[np.ndarray], reference: Sequence[np.ndarray], *, client: str):
    """Raise ``BadUpdate`` unless ``weights`` has ``reference``'s layers, shapes and dtypes."""
    if len(weights) != len(reference):
        raise BadUpdate(
            f"client {client!r} sent {len(weights)} layers; the global model has "
            f"{len(reference)}: the client runs another model architecture",
            client=client,
        )
    for i, (w, r) in enumerate(zip(weights, reference, strict=True)):
        w = np.asarray(w)
        if w.shape != r.shape or w.dtype != r.dtype:
            raise BadUpdate(
                f"client {client!r} sent layer {i} with shape {w.shape} {w.dtype}; the global "
                f"model's layer {i} is {r.shape} {r.dtype}: the client runs another model "
                "architecture (check its trainer's hidden sizes and classes)",
                client=client,
            )
        if not np.all(np.isfinite(w)):
            raise BadUpdate(
                f"client {client!r} sent layer {i} with non-finite values (NaN or inf); lower "
                "its learning rate or clip its updates",
                client=client,
            )
