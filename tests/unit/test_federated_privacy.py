"""Differential privacy: clipping, noise on the sum, and (epsilon, delta) from dp_accounting."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.federated import Coordinator, LocalTrainerPool, RoundConfig
from models.federated import (
    DPFedAvg,
    FederatedError,
    FitResult,
    MLPTrainer,
    epsilon,
    noise_multiplier_for,
)
from models.federated.privacy import clip
from models.federated.testing import class_patterns


def test_more_noise_buys_a_smaller_epsilon_and_more_rounds_cost_more():
    # execute
    def eps(z, rounds):
        return epsilon(noise_multiplier=z, sample_rate=0.5, rounds=rounds, delta=1e-5)

    # assert
    assert eps(2.0, 10) < eps(1.5, 10)
    assert eps(1.5, 10) < eps(1.5, 20)


def test_calibration_finds_the_noise_for_a_target_epsilon():
    # execute
    z = noise_multiplier_for(target_epsilon=3.0, sample_rate=1.0, rounds=5, delta=1e-5)

    # assert
    spent = epsilon(noise_multiplier=z, sample_rate=1.0, rounds=5, delta=1e-5)
    assert spent == pytest.approx(3.0, rel=0.02)


def test_accounting_refuses_nonsense_parameters():
    with pytest.raises(FederatedError, match="noise_multiplier > 0"):
        epsilon(noise_multiplier=0.0, sample_rate=0.5, rounds=3, delta=1e-5)


def test_clip_bounds_the_norm_and_leaves_small_updates_alone():
    big, small = np.array([30.0, 40.0]), np.array([0.3, 0.4])
    assert np.linalg.norm(clip(big, 5.0)) == pytest.approx(5.0)
    np.testing.assert_array_equal(clip(small, 5.0), small)


def test_dpfedavg_clips_each_update_and_adds_noise_of_z_times_clip_over_clients():
    # prepare: 4 clients whose updates are far larger than the clip
    g = [np.zeros(20_000, np.float32)]
    results = [FitResult([np.full(20_000, 10.0, np.float32)], n) for n in (1, 5, 50, 500)]

    # execute
    quiet = DPFedAvg(clip_norm=1.0, noise_multiplier=0.0).aggregate(g, results)[0]
    noisy = DPFedAvg(clip_norm=1.0, noise_multiplier=2.0, seed=1).aggregate(g, results)[0]

    # assert: uniform mean of clipped updates, whatever the sample counts; noise std = z*C/4
    assert np.linalg.norm(quiet) == pytest.approx(1.0, rel=1e-4)
    assert np.std(noisy - quiet) == pytest.approx(2.0 * 1.0 / 4, rel=0.05)


def test_rounds_with_dpfedavg_report_the_epsilon_spent_so_far():
    # prepare
    trainers = {
        f"c{i}": MLPTrainer(
            class_patterns(num_classes=2, per_class=5, seed=i), None, num_classes=2, hidden=(4,)
        )
        for i in range(4)
    }
    strategy = DPFedAvg(clip_norm=0.5, noise_multiplier=1.2)
    coordinator = Coordinator(
        LocalTrainerPool(trainers),
        strategy,
        initial_weights=MLPTrainer(num_classes=2, hidden=(4,)).get_weights(),
        config=RoundConfig(rounds=3, fraction=0.5, min_clients=2),
    )

    # execute
    history = coordinator.run()

    # assert
    spent = [m.epsilon for m in history]
    assert spent == sorted(spent) and spent[0] > 0
    assert spent[-1] == pytest.approx(
        epsilon(noise_multiplier=1.2, sample_rate=0.5, rounds=3, delta=1e-5)
    )
