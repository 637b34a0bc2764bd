"""Rounds without Ray: sampling, checkpoints and resume, masked rounds, bad clients, traffic."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.federated import (
    Coordinator,
    LocalTrainerPool,
    RoundConfig,
    load_checkpoint,
    sample_clients,
)
from models.federated import (
    FedAdam,
    FedAvg,
    FederatedError,
    FitResult,
    Median,
    MLPTrainer,
    NotEnoughClients,
)
from models.federated.testing import class_patterns

NAMES = [f"vehicle-{i}" for i in range(1, 6)]


def trainers(n: int = 5) -> dict[str, MLPTrainer]:
    return {
        NAMES[i]: MLPTrainer(
            class_patterns(num_classes=3, per_class=6, seed=i),
            class_patterns(num_classes=3, per_class=2, seed=50 + i),
            num_classes=3,
            hidden=(8,),
        )
        for i in range(n)
    }


def coordinator(pool, strategy=None, **config) -> Coordinator:
    checkpoint_dir = config.pop("checkpoint_dir", None)
    return Coordinator(
        pool,
        strategy or FedAvg(),
        initial_weights=MLPTrainer(num_classes=3, hidden=(8,)).get_weights(),
        config=RoundConfig(**{"rounds": 2, "min_clients": 2, **config}),
        checkpoint_dir=checkpoint_dir,
    )


class WrongModel:
    """A client that trains another architecture."""

    def fit(self, weights, config):
        return FitResult([np.zeros(3, np.float32)], 5)

    def evaluate(self, weights, config):
        raise FederatedError("not used")


def test_sampling_takes_the_fraction_but_never_fewer_than_the_minimum():
    # execute
    half = sample_clients(NAMES, RoundConfig(rounds=1, fraction=0.5, min_clients=2), server_round=1)
    tiny = sample_clients(NAMES, RoundConfig(rounds=1, fraction=0.1, min_clients=2), server_round=1)

    # assert
    assert len(half) == 3 and set(half) <= set(NAMES)
    assert len(tiny) == 2
    with pytest.raises(NotEnoughClients, match="needs at least 4 clients and 2 are available"):
        sample_clients(NAMES[:2], RoundConfig(rounds=1, min_clients=4), server_round=1)


def test_a_bad_round_configuration_is_refused_with_every_problem():
    with pytest.raises(FederatedError, match=r"rounds is 0.*fraction is 1.5"):
        RoundConfig(rounds=0, fraction=1.5)


def test_a_resumed_coordinator_ends_where_an_uninterrupted_one_does(tmp_path):
    # prepare
    straight = coordinator(LocalTrainerPool(trainers()), FedAdam(server_lr=0.05), rounds=4)
    first = coordinator(
        LocalTrainerPool(trainers()), FedAdam(server_lr=0.05), rounds=2, checkpoint_dir=tmp_path
    )

    # execute
    straight.run()
    first.run()
    resumed = coordinator(
        LocalTrainerPool(trainers()), FedAdam(server_lr=0.05), rounds=4, checkpoint_dir=tmp_path
    )
    history = resumed.run()

    # assert
    assert resumed.resumed_from == 2
    assert [m.server_round for m in history] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path).server_round == 4
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_masked_round_gives_the_plain_round_s_model():
    # execute
    plain = coordinator(LocalTrainerPool(trainers()), rounds=1)
    masked = coordinator(LocalTrainerPool(trainers()), rounds=1, secure=True)
    plain.run()
    masked.run()

    # assert
    for a, b in zip(plain.weights, masked.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_secure_aggregation_refuses_a_strategy_that_needs_each_update():
    with pytest.raises(FederatedError, match="'median' needs each client's update"):
        coordinator(LocalTrainerPool(trainers()), Median(), secure=True)


def test_a_client_with_the_wrong_model_is_left_out_and_named():
    # prepare
    pool = LocalTrainerPool({**trainers(3), "rsu-1": WrongModel()})

    # execute
    history = coordinator(pool, rounds=1, min_clients=4).run()

    # assert
    assert history[0].completed == tuple(NAMES[:3])
    assert "rsu-1 sent 1 layers" in history[0].failures["rsu-1"].replace("'", "")


def test_too_few_results_stop_the_round_with_what_failed():
    pool = LocalTrainerPool({"rsu-1": WrongModel(), "rsu-2": WrongModel()})
    with pytest.raises(NotEnoughClients, match=r"0 clients returned results.*rsu-1"):
        coordinator(pool, rounds=1).run()


def test_only_weights_configs_and_metrics_travel_and_their_bytes_are_counted():
    # prepare
    pool = LocalTrainerPool(trainers())
    c = coordinator(pool, rounds=1)
    layer_shapes = {w.shape for w in c.weights}
    model_bytes = sum(w.nbytes for w in c.weights)

    # execute
    metrics = c.run()[0]

    # assert
    shapes = {s for t in pool.traffic for s in t.shapes}
    assert shapes == layer_shapes
    # fit out + back and evaluate out, per client; configs and metrics are a few hundred bytes
    assert 15 * model_bytes <= metrics.bytes_moved < 15 * model_bytes + 5 * 1000
    assert metrics.completed == tuple(NAMES)
    assert set(metrics.client_accuracy) == set(NAMES)
