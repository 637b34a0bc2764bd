"""Secure aggregation: masks cancel in the sum, one masked update looks like noise, dropouts."""

from __future__ import annotations

import numpy as np
import pytest

from models.federated import FederatedError, MaskingClient, SecureSum
from models.federated.secagg import decode_fixed

NAMES = ["vehicle-1", "vehicle-2", "vehicle-3", "vehicle-4", "vehicle-5"]


def round_of(names, size, seed=0):
    rng = np.random.default_rng(seed)
    clients = {n: MaskingClient(n, round_id=7) for n in names}
    keys = {n: c.public_key() for n, c in clients.items()}
    updates = {n: rng.normal(0, 0.05, size) for n in names}
    return clients, keys, updates


def test_the_masked_sum_equals_the_plain_sum():
    # prepare
    clients, keys, updates = round_of(NAMES, 1000)
    total = SecureSum(NAMES, size=1000)

    # execute
    for n in NAMES:
        total.add(n, clients[n].mask(updates[n], keys))

    # assert
    np.testing.assert_allclose(total.result(), sum(updates.values()), atol=1e-6)


def test_one_masked_update_is_uncorrelated_with_the_true_update():
    # prepare
    clients, keys, updates = round_of(NAMES, 20_000, seed=1)

    # execute
    masked = decode_fixed(clients["vehicle-1"].mask(updates["vehicle-1"], keys))
    r = np.corrcoef(masked, updates["vehicle-1"])[0, 1]

    # assert: |r| of independent 20k-vectors is ~N(0, 1/sqrt(20k)) = 0.007; the update's own r is 1
    assert abs(r) < 0.03
    assert np.abs(masked).max() > 1e9  # spread over the whole 64-bit range, not near the update


def test_a_client_that_drops_out_after_the_keys_went_round_is_unmasked_by_the_survivors():
    # prepare
    clients, keys, updates = round_of(NAMES, 500, seed=2)
    total = SecureSum(NAMES, size=500)
    survivors = NAMES[:3]

    # execute
    for n in survivors:
        total.add(n, clients[n].mask(updates[n], keys))
    for n in total.survivors():
        total.correct(n, clients[n].unmask(total.dropped()))

    # assert
    assert total.dropped() == NAMES[3:]
    np.testing.assert_allclose(total.result(), sum(updates[n] for n in survivors), atol=1e-6)


def test_the_sum_is_refused_while_a_survivor_has_not_revealed_its_masks():
    # prepare
    clients, keys, updates = round_of(NAMES, 10)
    total = SecureSum(NAMES, size=10)
    for n in NAMES[:4]:
        total.add(n, clients[n].mask(updates[n], keys))
    total.correct("vehicle-1", clients["vehicle-1"].unmask(total.dropped()))

    # execute / assert
    with pytest.raises(FederatedError, match=r"vehicle-5 dropped out.*vehicle-2, vehicle-3"):
        total.result()


def test_strangers_and_bad_shapes_are_refused_by_name():
    clients, keys, _ = round_of(NAMES[:2], 4)
    total = SecureSum(NAMES[:2], size=4)
    with pytest.raises(FederatedError, match="'rsu-9', which is not a participant"):
        total.add("rsu-9", np.zeros(4, np.uint64))
    with pytest.raises(FederatedError, match=r"shape \(3,\); the round's is \(4,\)"):
        total.add("vehicle-1", np.zeros(3, np.uint64))
    with pytest.raises(FederatedError, match="does not fit secure aggregation's fixed point"):
        clients["vehicle-1"].mask(np.full(4, 1e15), keys)
