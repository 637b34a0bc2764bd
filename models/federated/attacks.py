"""Model-poisoning clients for robustness tests and benchmarks.

``PoisonedTrainer`` wraps an honest trainer and sends ``global + factor * update``:
``factor = -k`` flips the update's sign (and scales it), ``factor = k > 1`` only
scales it ("model replacement", Bagdasaryan et al., 2020).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.federated.trainer import EvalResult, FitResult, Trainer, Weights


class PoisonedTrainer:
    """A ``Trainer`` that trains honestly, then sends its update multiplied by ``factor``."""

    def __init__(self, honest: Trainer, *, factor: float = -5.0) -> None:
        self.honest = honest
        self.factor = factor

    def get_weights(self) -> Weights:
        return self.honest.get_weights()

    def set_weights(self, weights: Weights) -> None:
        self.honest.set_weights(weights)

    def fit(self, weights: Weights, config: Mapping[str, Any]) -> FitResult:
        result = self.honest.fit(weights, config)
        poisoned = [
            (g + self.factor * (w - g)).astype(g.dtype)
            for g, w in zip((np.asarray(a) for a in weights), result.weights, strict=True)
        ]
        return FitResult(poisoned, result.num_samples, result.metrics)

    def evaluate(self, weights: Weights, config: Mapping[str, Any]) -> EvalResult:
        return self.honest.evaluate(weights, config)
