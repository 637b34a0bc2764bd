"""Aggregation strategies, the numpy and torch backends, and the checks on client weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.federated import (
    BadUpdate,
    FedAdam,
    FedAvg,
    FederatedError,
    FedProx,
    FedYogi,
    FitResult,
    Krum,
    Median,
    MLPTrainer,
    NotEnoughClients,
    TrimmedMean,
    check_weights,
    make_strategy,
)
from models.federated.robust import Bucketing, NormBound
from models.federated.testing import class_patterns
from operators.signs import SIGN_SIGNATURE

GLOBAL = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]


def result(value: float, n: int) -> FitResult:
    return FitResult([np.full((2, 2), value, np.float32), np.full(2, value, np.float32)], n)


def test_fedavg_weights_clients_by_their_sample_counts():
    # execute
    new = FedAvg().aggregate(GLOBAL, [result(1.0, 10), result(4.0, 20)])

    # assert
    np.testing.assert_allclose(new[0], np.full((2, 2), 3.0))
    assert new[0].dtype == np.float32


def test_fedprox_tells_clients_its_proximal_term_and_averages_like_fedavg():
    # prepare
    strategy = FedProx(proximal_mu=0.1)
    results = [result(1.0, 1), result(2.0, 3)]

    # execute / assert
    assert strategy.fit_config(1) == {"proximal_mu": 0.1}
    np.testing.assert_allclose(
        strategy.aggregate(GLOBAL, results)[1], FedAvg().aggregate(GLOBAL, results)[1]
    )


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_server_optimisers_step_towards_the_mean_update_and_keep_state_in_a_checkpoint(cls):
    # prepare
    strategy, twin = cls(server_lr=0.1), cls(server_lr=0.1)

    # execute
    first = strategy.aggregate(GLOBAL, [result(1.0, 1)])
    twin.restore(strategy.state())
    a = strategy.aggregate(first, [result(2.0, 1)])
    b = twin.aggregate(first, [result(2.0, 1)])

    # assert
    assert np.all(first[0] > 0) and np.all(first[0] < 1.0)  # towards +1, by a bounded step
    np.testing.assert_array_equal(a[0], b[0])


def test_median_and_trimmed_mean_ignore_one_wild_client_fedavg_does_not():
    # prepare
    results = [result(1.0, 1), result(1.1, 1), result(0.9, 1), result(1.0, 1), result(-50.0, 1)]

    # execute
    med = Median().aggregate(GLOBAL, results)[0]
    trim = TrimmedMean(trim=0.2).aggregate(GLOBAL, results)[0]
    avg = FedAvg().aggregate(GLOBAL, results)[0]

    # assert
    np.testing.assert_allclose(med, 1.0)
    np.testing.assert_allclose(trim, np.mean([0.9, 1.0, 1.0]), rtol=1e-6)
    assert np.all(avg < -8)


def test_krum_picks_a_client_among_the_honest_cluster():
    # prepare
    results = [result(v, 1) for v in (1.0, 1.05, 0.95, 1.02, 40.0)]

    # execute
    new = Krum(byzantine=1).aggregate(GLOBAL, results)

    # assert
    assert 0.9 < float(new[0][0, 0]) < 1.1


def test_multi_krum_averages_the_best_scored_updates():
    # prepare
    results = [result(v, 1) for v in (1.0, 1.1, 0.9, 1.3, 40.0)]

    # execute
    new = Krum(byzantine=1, select=3).aggregate(GLOBAL, results)

    # assert: the three updates closest to their peers, not the outlier at 1.3 or 40
    np.testing.assert_allclose(new[0], 1.0, rtol=1e-6)


def test_nearest_neighbour_mixing_lets_the_median_land_on_the_honest_mean():
    # prepare: honest clients that disagree (non-IID) and one sign-flipped, scaled attacker
    honest = [1.0, 1.6, 0.4, 1.4]
    results = [result(v, 1) for v in honest] + [result(-4.0 * 1.0, 1)]

    # execute
    plain = Median().aggregate(GLOBAL, results)[0]
    mixed = Median(pre="nnm", byzantine=1).aggregate(GLOBAL, results)[0]
    trimmed = TrimmedMean(trim=0.2, pre="nnm").aggregate(GLOBAL, results)[0]

    # assert: plain median takes the honest value below the middle; after mixing, the mean
    np.testing.assert_allclose(plain, 1.0)
    np.testing.assert_allclose(mixed, np.mean(honest), rtol=1e-6)
    np.testing.assert_allclose(trimmed, np.mean(honest), rtol=1e-6)


def test_pre_aggregation_steps_reshape_the_rows_as_documented():
    # prepare
    rows = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [30.0, 40.0], [1.0, 0.0]])

    # execute
    bounded = NormBound()(rows)
    buckets = Bucketing(bucket_size=2, seed=0)
    first, again = buckets(rows, server_round=1), buckets(rows, server_round=1)
    other = buckets(rows, server_round=2)

    # assert: norms capped at the median norm (2.0); buckets of 2 (and one of 1), redrawn
    np.testing.assert_allclose(np.linalg.norm(bounded, axis=1), [2.0, 1.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose(bounded[3], [1.2, 1.6])
    assert first.shape == (3, 2) and np.array_equal(first, again)
    np.testing.assert_allclose(2 * first[:2].sum(axis=0) + first[2], rows.sum(axis=0))
    assert not np.array_equal(first, other)
    assert make_strategy("trimmed", pre="nnm", byzantine=2).pre.byzantine == 2  # a spec's options
    with pytest.raises(FederatedError, match=r"unknown pre-aggregation step 'krum'.*nnm"):
        make_strategy("median", pre="krum")


def test_robust_server_momentum_and_round_count_survive_a_checkpoint():
    # prepare
    strategy, twin = Median(server_momentum=0.5), Median(server_momentum=0.5)

    # execute: two rounds whose clients each move the model by 1, 2 and 3
    first = strategy.aggregate(GLOBAL, [result(v, 1) for v in (1.0, 2.0, 3.0)])
    twin.restore(strategy.state())
    second = [result(2.0 + v, 1) for v in (1.0, 2.0, 3.0)]
    a, b = strategy.aggregate(first, second), twin.aggregate(first, second)

    # assert: step 1 is the median update (2); step 2 adds half of it to its own (2 + 1)
    np.testing.assert_allclose(first[0], 2.0)
    np.testing.assert_allclose(a[0], 5.0)
    np.testing.assert_array_equal(a[0], b[0])
    assert int(strategy.state()["round"]) == 2
    with pytest.raises(FederatedError, match=r"server_momentum is 1.0; it must be in \[0, 1\)"):
        Median(server_momentum=1.0)


def test_a_strategy_with_too_few_results_says_what_to_change():
    with pytest.raises(NotEnoughClients, match=r"needs at least 5.*lower the round's minimum"):
        Krum(byzantine=1).aggregate(GLOBAL, [result(1.0, 1)] * 2)


def test_make_strategy_builds_by_name_and_lists_the_choices_for_an_unknown_one():
    assert isinstance(make_strategy("fedprox", proximal_mu=0.5), FedProx)
    with pytest.raises(FederatedError, match=r"unknown aggregation strategy 'fedsgd'.*fedavg"):
        make_strategy("fedsgd")
    with pytest.raises(FederatedError, match="does not take these options"):
        make_strategy("median", trim=0.1)


def test_check_weights_names_the_client_and_the_layer_that_does_not_fit():
    with pytest.raises(BadUpdate, match=r"client 'v2' sent layer 1 with shape \(3,\)"):
        check_weights([GLOBAL[0], np.zeros(3, np.float32)], GLOBAL, client="v2")
    with pytest.raises(BadUpdate, match="non-finite"):
        check_weights([GLOBAL[0], np.array([np.nan, 0], np.float32)], GLOBAL, client="v2")


def test_mlp_learns_and_its_onnx_export_gives_the_same_probabilities_to_a_sign_recognizer():
    import onnxruntime

    # prepare
    X, y = class_patterns(num_classes=4, per_class=20, seed=1)
    trainer = MLPTrainer((X, y), (X, y), num_classes=4, hidden=(16,), seed=0)
    before = trainer.evaluate(trainer.get_weights(), {}).accuracy

    # execute
    fitted = trainer.fit(trainer.get_weights(), {"epochs": 5, "lr": 0.05})
    session = onnxruntime.InferenceSession(
        trainer.to_onnx(fitted.weights), providers=["CPUExecutionProvider"]
    )
    onnx_probs = session.run(None, {"images": X[:8]})[0]
    trainer.set_weights(fitted.weights)
    from models.federated.numpy_mlp import features, forward

    numpy_probs, _ = forward(fitted.weights, features(X[:8]))

    # assert
    four_classes = dataclasses.replace(SIGN_SIGNATURE, output_shape=(None, 4))
    four_classes.check(session, model="the MLP's export")  # raises SignatureMismatch if not
    assert trainer.evaluate(fitted.weights, {}).accuracy > max(before, 0.9)
    np.testing.assert_allclose(onnx_probs, numpy_probs, atol=1e-5)


def test_mlp_refuses_labels_outside_its_classes():
    X, y = class_patterns(num_classes=3, per_class=2)
    with pytest.raises(FederatedError, match="labels run from 0 to 2; this model has 2 classes"):
        MLPTrainer((X, y), None, num_classes=2)


def test_fedprox_proximal_term_keeps_local_weights_closer_to_the_global_model():
    # prepare
    X, y = class_patterns(num_classes=4, per_class=10, seed=2)
    trainer = MLPTrainer((X, y), None, num_classes=4, hidden=(16,))
    start = trainer.get_weights()

    # execute
    def drift(mu: float) -> float:
        w = trainer.fit(start, {"epochs": 3, "lr": 0.05, "proximal_mu": mu}).weights
        return float(sum(np.linalg.norm(a - b) for a, b in zip(w, start, strict=True)))

    # assert
    assert drift(1.0) < drift(0.0)


def test_torch_backend_trains_and_exports_with_torch_onnx():
    pytest.importorskip("torch", reason="the PyTorch backend needs the [train] extra")
    import onnxruntime

    from models.federated import TorchCNNTrainer

    # prepare
    X, y = class_patterns(num_classes=3, per_class=10, seed=3)
    trainer = TorchCNNTrainer((X, y), (X, y), num_classes=3)

    # execute
    fitted = trainer.fit(trainer.get_weights(), {"epochs": 15, "lr": 0.1, "proximal_mu": 0.01})
    session = onnxruntime.InferenceSession(trainer.to_onnx(), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"images": X})[0]

    # assert
    assert trainer.evaluate(fitted.weights, {}).accuracy > 0.9
    assert (probs.argmax(axis=1) == y).mean() > 0.9
