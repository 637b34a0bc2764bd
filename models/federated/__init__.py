"""Federated training math: the trainer protocol, backends, strategies, privacy and masking.

Never imports Ray: the rounds on the fleet live in ``cluster.federated``.

* ``Trainer`` (protocol), ``FitResult``, ``EvalResult``: what a client does and returns.
* ``MLPTrainer`` (numpy, exports ONNX with ``onnx``); ``TorchCNNTrainer`` (the ``[train]`` extra).
* Strategies: ``FedAvg``, ``FedProx``, ``FedAdam``, ``FedYogi``, ``DPFedAvg``, ``Median``,
  ``TrimmedMean``, ``Krum`` (and Multi-Krum); ``make_strategy(name, **options)``.
* ``robust``: what the robust strategies do to the updates first (``pre="nnm"``:
  nearest-neighbour mixing, which non-IID clients need; bucketing; norm bounding).
* ``privacy``: clipping and the (epsilon, delta) of DP-FedAvg rounds (Google's dp_accounting).
* ``secagg``: pairwise additive masks (``MaskingClient``, ``SecureSum``).
* ``dirichlet_partition``: class-skewed non-IID splits.
"""

from models._errors import BadUpdate, FederatedError, NotEnoughClients
from models.federated.attacks import PoisonedTrainer
from models.federated.numpy_mlp import MLPTrainer, export_onnx
from models.federated.partition import (
    dirichlet_partition,
    read_partition,
    train_test_split,
    write_partition,
)
from models.federated.privacy import epsilon, noise_multiplier_for
from models.federated.secagg import MaskingClient, SecureSum
from models.federated.strategies import (
    STRATEGIES,
    DPFedAvg,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    Krum,
    LinearEncoding,
    Median,
    Strategy,
    TrimmedMean,
    make_strategy,
)
from models.federated.torch_cnn import TorchCNNTrainer
from models.federated.trainer import EvalResult, FitResult, Trainer, Weights, check_weights

__all__ = [
    "STRATEGIES",
    "BadUpdate",
    "DPFedAvg",
    "EvalResult",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "FederatedError",
    "FitResult",
    "Krum",
    "LinearEncoding",
    "MLPTrainer",
    "MaskingClient",
    "Median",
    "NotEnoughClients",
    "PoisonedTrainer",
    "SecureSum",
    "Strategy",
    "TorchCNNTrainer",
    "Trainer",
    "TrimmedMean",
    "Weights",
    "check_weights",
    "dirichlet_partition",
    "epsilon",
    "export_onnx",
    "make_strategy",
    "noise_multiplier_for",
    "read_partition",
    "train_test_split",
    "write_partition",
]
