"""Robustness: 1 of 5 clients sends poisoned updates; FedAvg degrades, median / trimmed hold.

Two splits of the same synthetic classes: clients that all hold every class (where
plain coordinate-wise median and trimmed mean suffice), and a class-skewed
Dirichlet(0.5) split (non-IID, like ``bench.federated``'s real one), where they need
nearest-neighbour mixing first (``pre="nnm"``, ``models.federated.robust``).
"""

from __future__ import annotations

import numpy as np
import pytest

from cluster.federated import Coordinator, LocalTrainerPool, RoundConfig
from models.federated import (
    FedAvg,
    Median,
    MLPTrainer,
    PoisonedTrainer,
    TrimmedMean,
    dirichlet_partition,
)
from models.federated.numpy_mlp import features, score
from models.federated.testing import class_patterns


def final_accuracy(strategy, shards, test, *, poison_factor: float | None, rounds: int = 6):
    """Central test accuracy after ``rounds`` rounds; client 0 poisoned when a factor is given."""
    classes = int(test[1].max()) + 1
    trainers = {}
    for i, shard in enumerate(shards):
        honest = MLPTrainer(shard, None, num_classes=classes, hidden=(16,))
        poisoned = poison_factor is not None and i == 0
        trainers[f"c{i}"] = PoisonedTrainer(honest, factor=poison_factor) if poisoned else honest
    x_test = features(test[0])
    coordinator = Coordinator(
        LocalTrainerPool(trainers),
        strategy,
        initial_weights=MLPTrainer(num_classes=classes, hidden=(16,)).get_weights(),
        config=RoundConfig(rounds=rounds, min_clients=5, lr=0.02, batch_size=16),
        central_eval=lambda w: score(w, x_test, test[1]),
    )
    return coordinator.run()[-1].central_accuracy


IID = [class_patterns(num_classes=8, per_class=12, noise=90, seed=i) for i in range(5)]
IID_TEST = class_patterns(num_classes=8, per_class=30, noise=90, seed=99)


def non_iid_shards():
    """10 classes over 5 clients by Dirichlet(0.5): a few dominant classes each."""
    X, y = class_patterns(num_classes=10, per_class=40, noise=120, seed=1)
    parts = dirichlet_partition(y, num_clients=5, alpha=0.5, seed=0)
    return [(X[idx], y[idx]) for idx in parts], class_patterns(
        num_classes=10, per_class=30, noise=120, seed=99
    )


@pytest.fixture(scope="module")
def iid_clean_fedavg() -> float:
    return final_accuracy(FedAvg(), IID, IID_TEST, poison_factor=None)


@pytest.mark.parametrize("factor", [-4.0, -20.0], ids=["sign-flipped-x4", "sign-flipped-x20"])
def test_fedavg_degrades_and_median_and_trimmed_mean_stay_within_5_points(iid_clean_fedavg, factor):
    # execute
    poisoned = {
        "fedavg": final_accuracy(FedAvg(), IID, IID_TEST, poison_factor=factor),
        "median": final_accuracy(Median(), IID, IID_TEST, poison_factor=factor),
        "trimmed": final_accuracy(TrimmedMean(trim=0.2), IID, IID_TEST, poison_factor=factor),
    }

    # assert
    assert iid_clean_fedavg > 0.8, f"the clean baseline did not learn: {iid_clean_fedavg}"
    assert poisoned["fedavg"] < iid_clean_fedavg - 0.10, poisoned
    assert poisoned["median"] >= iid_clean_fedavg - 0.05, poisoned
    assert poisoned["trimmed"] >= iid_clean_fedavg - 0.05, poisoned
    assert np.isfinite(list(poisoned.values())).all()


@pytest.mark.parametrize("factor", [-4.0, -20.0], ids=["sign-flipped-x4", "sign-flipped-x20"])
def test_on_class_skewed_clients_median_and_trimmed_mean_hold_with_nearest_neighbour_mixing(
    factor,
):
    # prepare: every client sees a few dominant classes, so honest updates disagree
    shards, test = non_iid_shards()
    clean = final_accuracy(FedAvg(), shards, test, poison_factor=None, rounds=10)

    # execute
    def run(strategy) -> float:
        return final_accuracy(strategy, shards, test, poison_factor=factor, rounds=10)

    poisoned = {
        "fedavg": run(FedAvg()),
        "median (plain)": run(Median()),
        "trimmed (plain)": run(TrimmedMean(trim=0.2)),
        "median": run(Median(pre="nnm", byzantine=1)),
        "trimmed": run(TrimmedMean(trim=0.2, pre="nnm", byzantine=1)),
    }

    # assert: the plain rules drift toward the attacker here; mixed first, they stay close
    assert clean > 0.8, f"the clean baseline did not learn: {clean}"
    assert poisoned["fedavg"] < clean - 0.10, poisoned
    assert poisoned["median (plain)"] < clean - 0.05, poisoned
    assert poisoned["trimmed (plain)"] < clean - 0.05, poisoned
    assert poisoned["median"] >= clean - 0.05, (clean, poisoned)
    assert poisoned["trimmed"] >= clean - 0.05, (clean, poisoned)
