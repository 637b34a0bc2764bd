"""``edgeray federate``: federated training rounds on the fleet, then (optionally) a canary.

::

    edgeray federate SPEC.toml|PIPELINE.py --rounds 10 --strategy fedavg --then canary

SPEC names the model, the trainer nodes, where each node keeps its data, and
how rounds run (``pipelines.federate`` documents the shape); a pipeline file
carries the same as its ``FEDERATION`` dict and is also the canary's target.
Flags override the spec. Every round's global model becomes a new version in
the registry (``--registry``, else ``$EDGERAY_MODELS``) with its evaluation;
``--then canary`` hands the best one to a canary rollout. ``--partition-from
DATASET`` first writes a Dirichlet split of an image dataset under the spec's
``data_root`` for each node (a local fleet's stand-in for data the nodes hold).
A run that was killed resumes from its checkpoint (``checkpoint_dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from models.federated import STRATEGIES


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``federate`` to the ``edgeray`` command's subparsers ``sub``."""
    p = sub.add_parser(
        "federate", help="federated training rounds on the fleet; register each; canary the best",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("spec", help="a federation spec (.toml) or a pipeline file with FEDERATION")
    p.add_argument("--rounds", type=int, help="rounds to run in all (a resumed run counts its own)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), help="aggregation strategy")
    p.add_argument("--then", choices=["canary"], help="after training, canary the best version")
    p.add_argument("--secure", action="store_true", help="masked updates: the coordinator "
                   "sees only their sum (linear strategies)")  # fmt: skip
    p.add_argument("--deadline", type=float, help="seconds a round waits for its clients")
    p.add_argument("--registry", help="model registry root (default: $EDGERAY_MODELS)")
    p.add_argument("--address", help="the cluster's GCS address (default: $RAY_ADDRESS)")
    p.add_argument("--partition-from", metavar="DATASET",
                   help="first split this image dataset over the spec's nodes")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of that split")
    p.add_argument("--json", action="store_true", help="print the rounds as JSON lines")
    p.set_defaults(func=cmd_federate)
    return p


def spec_from_args(args: argparse.Namespace):
    """The spec file's ``FederationSpec`` with the command line's overrides."""
    from pipelines.federate import load_spec

    spec = load_spec(args.spec)
    overrides = {
        k: v for k, v in (("rounds", args.rounds), ("deadline_s", args.deadline)) if v is not None
    }
    if args.secure:
        overrides["secure"] = True
    rounds = dataclasses.replace(spec.rounds, **overrides)
    strategy = args.strategy or spec.strategy
    options = spec.strategy_options if strategy == spec.strategy else {}
    return dataclasses.replace(spec, rounds=rounds, strategy=strategy, strategy_options=options)


def cmd_federate(args: argparse.Namespace) -> int:
    from models import Registry
    from models.registry import default_root
    from pipelines.federate import federate, write_node_partitions

    spec = spec_from_args(args)
    if args.partition_from:
        sizes = write_node_partitions(
            args.partition_from, spec.nodes, spec.data_root, alpha=args.alpha, seed=spec.rounds.seed
        )
        print(f"partitions under {spec.data_root}: {sizes}")
    result = federate(
        spec, registry=Registry(args.registry or default_root()), then=args.then,
        address=args.address, log=(lambda _: None) if args.json else print,
    )  # fmt: skip
    if args.json:
        for m in result.history:
            print(json.dumps(m.to_dict()))
    if result.best is not None:
        print(f"best: {result.best.ref} {dict(result.best.metrics)}")
    if result.rollout is not None:
        print(json.dumps(result.rollout, default=str))
    return 0
