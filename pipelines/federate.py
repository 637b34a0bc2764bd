"""``edgeray federate``: federated rounds on the fleet, every round registered, best to a canary.

The composed command (DESIGN.md: ``pipelines/`` composes the lower layers):

1. start one trainer actor per node named in the spec (``cluster.federated``),
   each reading its own node-local partition;
2. run the rounds of the chosen strategy (``models.federated``), checkpointing
   each, so a killed run resumes where it stopped;
3. register every round's global model in the model registry as a new version
   of the spec's model, with its evaluation as metrics and the previous round
   as its parent;
4. with ``then="canary"``, hand the best version (central accuracy, else mean
   client accuracy) to a canary rollout (``pipelines._rollout``) of the
   operator that uses the model in the running pipeline the spec names, or of
   every running operator that uses the model when it names none.

A federation spec is a TOML file (or a pipeline file whose module defines
``FEDERATION``, a dict of the same shape)::

    [federation]
    model = "signs"                 # registry name of each round's global model
    nodes = ["vehicle-1", "vehicle-2", "vehicle-3", "vehicle-4"]   # edge.node labels
    data_root = "/var/lib/edgeray/federated/signs"  # on each node: <data_root>/<node>/partition.npz
    num_classes = 43
    backend = "mlp"                 # or "torch" (the [train] extra)
    hidden = [128]
    central_test = "out/signs/signs.parquet"   # optional: an image dataset, split=test is used
    checkpoint_dir = "out/federate/signs"
    strategy = "fedavg"             # fedavg fedprox fedadam fedyogi dpfedavg median trimmed krum
    rounds = 10                     # and any RoundConfig field: fraction, min_clients,
    deadline_s = 120                # min_results, epochs, lr, batch_size, secure, seed

    [strategy]                      # options of the strategy, e.g. proximal_mu = 0.01; for
                                    # median / trimmed / krum on non-IID nodes: pre = "nnm"
    [rollout]                       # optional: where --then canary goes
    pipeline = "signs-live"
    operator = "classifier"
    share = 0.25
    duration_s = 30
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cluster.federated import (
    Coordinator,
    CpuShare,
    RayTrainerPool,
    RoundConfig,
    RoundMetrics,
    TrainerSpec,
    call_bounded,
)
from models import Manifest, Registry
from models.federated import (
    FederatedError,
    Weights,
    dirichlet_partition,
    make_strategy,
    train_test_split,
    write_partition,
)
from models.federated.numpy_mlp import features, score

_ROUND_FIELDS = {f.name for f in dataclasses.fields(RoundConfig)}
_SPEC_FIELDS = {
    "model", "nodes", "data_root", "num_classes", "backend", "hidden", "central_test",
    "checkpoint_dir", "strategy", "seed",
}  # fmt: skip


@dataclass(frozen=True)
class FederationSpec:
    """A federation: what to train, on which nodes, how, and where the result goes."""

    model: str
    nodes: tuple[str, ...]
    data_root: str
    num_classes: int
    rounds: RoundConfig
    strategy: str = "fedavg"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    central_test: str | None = None
    checkpoint_dir: str | None = None
    rollout: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<spec>"

    def trainer_spec(self) -> TrainerSpec:
        return TrainerSpec(
            data_root=self.data_root,
            num_classes=self.num_classes,
            backend=self.backend,
            hidden=self.hidden,
            seed=self.rounds.seed,
        )


def spec_from_dict(body: Mapping[str, Any], *, source: str = "<spec>") -> FederationSpec:
    """A ``FederationSpec`` from the TOML shape in the module docstring; names bad fields."""
    fed = dict(body.get("federation") or {})
    unknown = set(fed) - _SPEC_FIELDS - _ROUND_FIELDS
    if unknown:
        raise FederatedError(
            f"federation spec {source}: unknown field(s) {sorted(unknown)} in [federation]; "
            f"known: {sorted(_SPEC_FIELDS | _ROUND_FIELDS)}"
        )
    missing = [k for k in ("model", "nodes", "data_root", "num_classes") if k not in fed]
    if missing:
        raise FederatedError(
            f'federation spec {source}: [federation] lacks {missing}; e.g. model = "signs", '
            'nodes = ["vehicle-1", "vehicle-2"], data_root = "/var/lib/edgeray/signs", '
            "num_classes = 43"
        )
    rounds = RoundConfig(**{k: v for k, v in fed.items() if k in _ROUND_FIELDS} | {
        "rounds": int(fed.get("rounds", 10))})  # fmt: skip
    return FederationSpec(
        model=str(fed["model"]),
        nodes=tuple(fed["nodes"]),
        data_root=str(fed["data_root"]),
        num_classes=int(fed["num_classes"]),
        rounds=rounds,
        strategy=str(fed.get("strategy", "fedavg")),
        strategy_options=dict(body.get("strategy") or {}),
        backend=str(fed.get("backend", "mlp")),
        hidden=tuple(int(h) for h in fed.get("hidden", (128,))),
        central_test=fed.get("central_test"),
        checkpoint_dir=fed.get("checkpoint_dir"),
        rollout=dict(body.get("rollout") or {}),
        source=source,
    )


def load_spec(path: str | pathlib.Path) -> FederationSpec:
    """The spec in a TOML file, or in a pipeline file's ``FEDERATION`` dict."""
    p = pathlib.Path(path)
    if p.suffix == ".py":
        from pipelines._pipeline_file import load_pipeline_module

        module = load_pipeline_module(p)
        body = getattr(module, "FEDERATION", None)
        if not isinstance(body, Mapping):
            raise FederatedError(
                f"pipeline file {p} defines no FEDERATION dict; add one shaped like a federation "
                "spec ({'federation': {...}, 'rollout': {...}}), or pass a .toml spec"
            )
        body = {**body, "rollout": {"pipeline": module.build().name, **body.get("rollout", {})}}
        return spec_from_dict(body, source=str(p))
    if not p.is_file():
        raise FederatedError(f"federation spec {p}: no such file")
    with p.open("rb") as f:
        return spec_from_dict(tomllib.load(f), source=str(p))


def write_node_partitions(
    dataset: str | pathlib.Path,
    nodes: Sequence[str],
    data_root: str | pathlib.Path,
    *,
    alpha: float = 0.5,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, int]:
    """Give each node a Dirichlet(``alpha``) share of ``dataset``'s train split (local fleet).

    On a real fleet each node already holds its own data; on one machine this
    stands in for it. Each share is cut into the node's train and held-out test
    data. Returns ``{node: train samples}``.
    """
    from models.datasets import read_image_dataset

    X, y = read_image_dataset(dataset, split="train")
    sizes = {}
    for i, idx in enumerate(dirichlet_partition(y, num_clients=len(nodes), alpha=alpha, seed=seed)):
        train, test = train_test_split(len(idx), test_fraction=test_fraction, seed=seed + i)
        write_partition(
            pathlib.Path(data_root) / nodes[i],
            (X[idx[train]], y[idx[train]]),
            (X[idx[test]], y[idx[test]]),
        )
        sizes[nodes[i]] = len(train)
    return sizes


@dataclass(frozen=True)
class FederationResult:
    """What ``federate`` did: the rounds, the versions registered, the best, the rollout."""

    history: list[RoundMetrics]
    versions: list[Manifest]
    best: Manifest | None
    rollout: dict[str, Any] | None


#: The delta of the (epsilon, delta) a DP-FedAvg federation reports for each round.
DP_DELTA = 1e-5


def round_metrics(m: RoundMetrics, *, noise_multiplier: float | None = None) -> dict[str, float]:
    """A round's evaluation as registry metrics (numbers only); with DP, its privacy cost.

    >>> from cluster.federated import RoundMetrics
    >>> m = RoundMetrics(3, ("a",), ("a",), {}, 0.9, 0.3, {"a": 0.8}, 0.4, 100, 1.0, epsilon=2.5)
    >>> r = round_metrics(m, noise_multiplier=1.1)
    >>> r["epsilon"], r["delta"], r["noise_multiplier"]
    (2.5, 1e-05, 1.1)
    """
    out = {
        "round": float(m.server_round),
        "central_accuracy": m.central_accuracy,
        "central_loss": m.central_loss,
        "client_accuracy": m.mean_client_accuracy,
        "clients": float(len(m.completed)),
        "bytes_moved": float(m.bytes_moved),
    }
    if m.epsilon is not None:
        out |= {"epsilon": m.epsilon, "delta": DP_DELTA}
    if noise_multiplier is not None:
        out["noise_multiplier"] = noise_multiplier
    return {k: v for k, v in out.items() if not np.isnan(v)}


def federate(
    spec: FederationSpec,
    *,
    registry: Registry,
    then: str | None = None,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> FederationResult:
    """Run ``spec``'s rounds on the connected fleet, register each, optionally canary the best."""
    from pipelines._runtime import connect

    if then not in (None, "canary"):
        raise FederatedError(f"--then {then!r}: the only follow-up is 'canary'")
    connect(address)
    trainer = spec.trainer_spec()
    strategy = make_strategy(spec.strategy, **spec.strategy_options)
    central = _central_eval(spec)
    existing = registry.versions(spec.model)
    parent = [existing[-1].version if existing else None]
    new_versions: list[Manifest] = []
    noise = getattr(strategy, "noise_multiplier", None)  # DP-FedAvg's, reported with epsilon

    def register(metrics: RoundMetrics, weights: Weights) -> None:
        manifest = registry.register(
            spec.model,
            trainer.model().to_onnx(weights),
            metrics=round_metrics(metrics, noise_multiplier=noise),
            parent=parent[0],
            produced_by=(
                f"federated round {metrics.server_round}/{spec.rounds.rounds}, {strategy.name}, "
                f"clients {', '.join(metrics.completed)} ({spec.source})"
            ),
        )
        parent[0] = manifest.version
        new_versions.append(manifest)
        log(
            f"round {metrics.server_round}: {manifest.ref} central acc "
            f"{metrics.central_accuracy:.3f}, clients {len(metrics.completed)}/"
            f"{len(metrics.sampled)}, {metrics.bytes_moved / 1e6:.1f} MB moved"
            + (f", failures {sorted(metrics.failures)}" if metrics.failures else "")
            + (
                f", (epsilon, delta) = ({metrics.epsilon:.2f}, {DP_DELTA})"
                if metrics.epsilon
                else ""
            )
        )

    pool = RayTrainerPool(trainer, spec.nodes, share=CpuShare())
    log(
        "trainers' CPU share: "
        + ", ".join(f"{n} {p['policy']} (nice {p['niceness']})" for n, p in pool.placement.items())
    )
    try:
        coordinator = Coordinator(
            pool,
            strategy,
            initial_weights=trainer.model().get_weights(),
            config=spec.rounds,
            central_eval=central,
            checkpoint_dir=spec.checkpoint_dir,
            on_round=register,
            dp_delta=DP_DELTA,
        )
        history = call_bounded(CpuShare(), coordinator.run)  # gives way to live pipelines too
    finally:
        pool.shutdown()
    best = _best(new_versions)
    record = None
    if then == "canary" and best is not None:
        record = canary(spec, best, log=log)
    return FederationResult(history, new_versions, best, record)


def _best(versions: Sequence[Manifest]) -> Manifest | None:
    def key(m: Manifest) -> float:
        return m.metrics.get("central_accuracy", m.metrics.get("client_accuracy", -1.0))

    return max(versions, key=key, default=None)


def _central_eval(spec: FederationSpec) -> Callable[[Weights], Any] | None:
    if spec.central_test is None:
        return None
    from models.datasets import read_image_dataset

    X, y = read_image_dataset(spec.central_test, split="test")
    if spec.backend == "mlp":
        fx = features(X)
        return lambda w: score(w, fx, y)
    evaluator = spec.trainer_spec().model(None, (X, y))
    return lambda w: evaluator.evaluate(w, {})


def canary(spec: FederationSpec, best: Manifest, *, log: Callable[[str], None] = print) -> dict:
    """A canary rollout of ``best``: to the spec's pipeline operator, else fleet-wide."""
    from pipelines import _rollout

    options = {k: v for k, v in spec.rollout.items() if k not in ("pipeline", "operator")}
    request = _rollout.RolloutRequest(operator=spec.rollout.get("operator", ""),
                                      model=best.ref, strategy="canary", **options)  # fmt: skip
    pipeline = spec.rollout.get("pipeline")
    if pipeline and request.operator:
        log(f"canary of {best.ref} to {pipeline}/{request.operator}")
        return _rollout.rollout(pipeline, request)
    log(f"canary of {best.ref} to every running operator that uses {best.name!r}")
    records = _rollout.fleet_update(best.ref, request)
    return {"model": best.ref, "rollouts": records}
