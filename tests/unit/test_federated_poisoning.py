"""Robustness: 1 of 5 clients sends poisoned updates; FedAvg degrades, median / trimmed hold."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.federated import Coordinator, LocalTrainerPool, RoundConfig
from models.federated import FedAvg, Median, MLPTrainer, PoisonedTrainer, TrimmedMean
from models.federated.numpy_mlp import features, score
from models.federated.testing import class_patterns

CLASSES = 8
TEST = class_patterns(num_classes=CLASSES, per_class=30, noise=90, seed=99)


def final_accuracy(strategy, *, poison_factor: float | None) -> float:
    trainers = {}
    for i in range(5):
        honest = MLPTrainer(
            class_patterns(num_classes=CLASSES, per_class=12, noise=90, seed=i),
            None,
            num_classes=CLASSES,
            hidden=(16,),
        )
        poisoned = poison_factor is not None and i == 0
        trainers[f"c{i}"] = PoisonedTrainer(honest, factor=poison_factor) if poisoned else honest
    x_test = features(TEST[0])
    coordinator = Coordinator(
        LocalTrainerPool(trainers),
        strategy,
        initial_weights=MLPTrainer(num_classes=CLASSES, hidden=(16,)).get_weights(),
        config=RoundConfig(rounds=6, min_clients=5, lr=0.02, batch_size=16),
        central_eval=lambda w: score(w, x_test, TEST[1]),
    )
    return coordinator.run()[-1].central_accuracy


@pytest.fixture(scope="module")
def clean_fedavg() -> float:
    return final_accuracy(FedAvg(), poison_factor=None)


@pytest.mark.parametrize("factor", [-4.0, -20.0], ids=["sign-flipped-x4", "sign-flipped-x20"])
def test_fedavg_degrades_and_median_and_trimmed_mean_stay_within_5_points(clean_fedavg, factor):
    # execute
    poisoned = {
        "fedavg": final_accuracy(FedAvg(), poison_factor=factor),
        "median": final_accuracy(Median(), poison_factor=factor),
        "trimmed": final_accuracy(TrimmedMean(trim=0.2), poison_factor=factor),
    }

    # assert
    assert clean_fedavg > 0.8, f"the clean baseline did not learn: {clean_fedavg}"
    assert poisoned["fedavg"] < clean_fedavg - 0.10, poisoned
    assert poisoned["median"] >= clean_fedavg - 0.05, poisoned
    assert poisoned["trimmed"] >= clean_fedavg - 0.05, poisoned
    assert np.isfinite(list(poisoned.values())).all()
