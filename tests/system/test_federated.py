"""Federated rounds on a local multi-node Ray cluster: four trainer nodes, each with its own data.

Its own cluster (a node gets killed): a head plus ``vehicle-1`` .. ``vehicle-4``, each
labeled ``edge.node=<name>``; each node's partition lives in ``<root>/<name>/``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cluster.federated import (
    Coordinator,
    CpuShare,
    RayTrainerPool,
    RoundConfig,
    TrainerSpec,
    load_checkpoint,
)
from models.federated import FedAvg, write_partition
from models.federated.numpy_mlp import features, score
from models.federated.testing import class_patterns

pytestmark = pytest.mark.system

NODES = [f"vehicle-{i}" for i in range(1, 5)]
CLASSES = 4
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The cluster, the data root and the trainer spec; reconnects an earlier session after."""
    from conftest import separate_cluster

    root = tmp_path_factory.mktemp("federated-data")
    for i, node in enumerate(NODES):
        write_partition(
            root / node,
            class_patterns(num_classes=CLASSES, per_class=15, noise=80, seed=i),
            class_patterns(num_classes=CLASSES, per_class=3, noise=80, seed=100 + i),
        )
    labels = [{"edge.node": n, "edge.role": "vehicle"} for n in NODES]
    spec = TrainerSpec(data_root=str(root), num_classes=CLASSES, hidden=(8,))
    with separate_cluster(labels, cpus=1, store_mb=100) as cluster:
        yield cluster, spec


def central_eval(seed: int = 999):
    x, y = class_patterns(num_classes=CLASSES, per_class=20, noise=80, seed=seed)
    fx = features(x)
    return lambda w: score(w, fx, y)


def thread_policies(pid: int) -> set[int]:
    """The scheduling policies of a local process's threads (Linux; none elsewhere)."""
    tasks = pathlib.Path(f"/proc/{pid}/task")
    found = set()
    for thread in tasks.iterdir() if tasks.is_dir() else ():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended since
            found.add(os.sched_getscheduler(int(thread.name)))
    return found


def initial(spec: TrainerSpec):
    return spec.model().get_weights()


def test_trainers_run_on_their_own_nodes_and_only_weights_travel(fleet):
    # prepare
    _, spec = fleet
    pool = RayTrainerPool(spec, NODES, share=CpuShare(threads=1, niceness=10, num_cpus=0.25))
    weights = initial(spec)
    evaluate = central_eval()
    coordinator = Coordinator(
        pool,
        FedAvg(),
        initial_weights=weights,
        config=RoundConfig(rounds=3, min_clients=4, lr=0.02, batch_size=16),
        central_eval=evaluate,
    )

    # execute
    try:
        history = coordinator.run()
        policies = {n: thread_policies(p["pid"]) for n, p in pool.placement.items()}
    finally:
        pool.shutdown()

    # assert: one trainer per node, on that node, reading that node's own partition
    placed = pool.placement
    assert {p["labels"]["edge.node"] for p in placed.values()} == set(NODES)
    assert all(p["labels"]["edge.node"] == n for n, p in placed.items())
    assert len({p["node_id"] for p in placed.values()}) == 4
    assert all(pathlib.Path(p["data_dir"]).name == n for n, p in placed.items())
    assert all(p["omp_threads"] == "1" for p in placed.values())
    # every trainer thread, those started after the share was bound too, gives way to the pipeline
    if hasattr(os, "SCHED_IDLE"):
        assert all(p["policy"] == "idle" for p in placed.values())
        assert all(found == {os.SCHED_IDLE} for found in policies.values()), policies
    else:
        assert all(p["policy"] == "nice" and p["niceness"] >= 10 for p in placed.values())
    # only arrays shaped like the model's layers travelled; a round moves ~3 models per client
    assert {s for t in pool.traffic for s in t.shapes} == {w.shape for w in weights}
    model_bytes = sum(w.nbytes for w in weights)
    assert all(3 * 4 * model_bytes <= m.bytes_moved < 3 * 4 * model_bytes + 8000 for m in history)
    assert history[-1].central_accuracy > max(evaluate(weights).accuracy, 0.8)
    assert all(m.completed == tuple(NODES) and not m.failures for m in history)


RESUMABLE = textwrap.dedent(
    """
    import os, sys, ray
    from cluster.federated import Coordinator, RayTrainerPool, RoundConfig, TrainerSpec
    from models.federated import FedAdam
    ray.init(address=sys.argv[1], logging_level="WARNING")
    spec = TrainerSpec(data_root=sys.argv[2], num_classes=int(sys.argv[4]), hidden=(8,))
    pool = RayTrainerPool(spec, sys.argv[5].split(","))
    Coordinator(pool, FedAdam(server_lr=0.05), initial_weights=spec.model().get_weights(),
                config=RoundConfig(rounds=2, min_clients=2), checkpoint_dir=sys.argv[3]).run()
    print("checkpointed round 2", flush=True)
    sys.stdin.readline()  # waits here, between rounds, until it is killed
    """
)


def test_a_coordinator_killed_between_rounds_resumes_from_its_checkpoint(fleet, tmp_path):
    import ray

    # prepare
    cluster, spec = fleet
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [cluster.address, spec.data_root, str(tmp_path), str(CLASSES), ",".join(NODES)]
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUMABLE, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )

    # execute: wait for its word that round 2 is checkpointed, then kill it outright
    try:
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert line.strip() == "checkpointed round 2", "the coordinator died before round 2"
    from models.federated import FedAdam

    pool = RayTrainerPool(spec, NODES)
    resumed = Coordinator(
        pool,
        FedAdam(server_lr=0.05),
        initial_weights=initial(spec),
        config=RoundConfig(rounds=4, min_clients=2),
        checkpoint_dir=tmp_path,
    )
    try:
        history = resumed.run()
    finally:
        pool.shutdown()

    # assert
    assert ray.is_initialized()
    assert resumed.resumed_from == 2
    assert [m.server_round for m in history] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path).server_round == 4


def test_federate_registers_every_round_and_hands_the_best_to_a_canary(fleet, tmp_path):
    from models import Registry
    from pipelines.federate import federate, spec_from_dict

    # prepare: no running pipeline uses the model, so the canary finds no operator to roll
    _, trainer = fleet
    spec = spec_from_dict(
        {
            "federation": {
                "model": "fed-test", "nodes": NODES, "data_root": trainer.data_root,
                "num_classes": CLASSES, "hidden": [8], "rounds": 2, "min_clients": 4,
                "lr": 0.02, "batch_size": 16, "strategy": "fedprox",
            },
            "strategy": {"proximal_mu": 0.01},
        }
    )  # fmt: skip
    registry = Registry(tmp_path / "models")

    # execute
    result = federate(spec, registry=registry, then="canary", log=lambda _: None)

    # assert
    versions = registry.versions("fed-test")
    assert [m.version for m in versions] == [1, 2]
    assert versions[1].parent == 1 and "round 2/2, fedprox" in versions[1].produced_by
    assert versions[0].metrics["clients"] == 4 and versions[0].inputs[0].name == "images"
    assert result.best.version in (1, 2)
    best_acc = max(m.metrics["client_accuracy"] for m in versions)
    assert result.best.metrics["client_accuracy"] == best_acc
    assert result.rollout == {"model": result.best.ref, "rollouts": []}


def test_a_node_killed_mid_round_leaves_a_masked_round_that_completes_with_the_rest(fleet):
    # prepare: vehicle-4's node is killed once its key has gone round, so the others mask with it
    cluster, spec = fleet
    victim: list = []

    def observe(record):
        if (record.direction, record.client, record.method) == (
            "received",
            "vehicle-4",
            "begin_secure",
        ):
            cluster.remove_node(victim[0])

    pool = RayTrainerPool(spec, NODES, observe=observe)
    victim_id = pool.placement["vehicle-4"]["node_id"]
    victim.append(next(n for n in cluster.worker_nodes if n.node_id == victim_id))
    coordinator = Coordinator(
        pool,
        FedAvg(),
        initial_weights=initial(spec),
        config=RoundConfig(
            rounds=2,
            min_clients=3,
            min_results=2,
            deadline_s=60,
            lr=0.02,
            batch_size=16,
            secure=True,
        ),
        central_eval=central_eval(),
    )

    # execute
    try:
        history = coordinator.run()
    finally:
        pool.shutdown()

    # assert: the survivors revealed their masks with the dead client, the sum is the plain one
    first, second = history
    assert first.completed == ("vehicle-1", "vehicle-2", "vehicle-3")
    assert "vehicle-4" in first.failures
    assert second.sampled == ("vehicle-1", "vehicle-2", "vehicle-3")  # known dead: not sampled
    assert all(np.isfinite(w).all() and np.abs(w).max() < 100 for w in coordinator.weights)
    assert second.central_accuracy > 0.8
