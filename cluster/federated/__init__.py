"""Federated rounds on the fleet: a trainer actor per node, deadlines, checkpoints, metrics.

``RayTrainerPool`` starts one ``TrainerActor`` per node (pinned by its
``edge.node`` label, reading that node's own data partition, with a bounded CPU
share); ``Coordinator`` runs rounds of a ``models.federated`` strategy over it.
``LocalTrainerPool`` runs the same protocol in one process.
"""

from cluster.federated._checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cluster.federated._coordinator import Coordinator, RoundCallback
from cluster.federated._cpu import (
    CpuShare,
    bound_cpu_share,
    bound_thread,
    call_bounded,
    trainer_env,
)
from cluster.federated._host import TrainerActor, TrainerHost, TrainerSpec
from cluster.federated._pool import (
    LocalTrainerPool,
    RayTrainerPool,
    SecureOutcome,
    Traffic,
    TrainerPool,
)
from cluster.federated._rounds import RoundConfig, RoundMetrics, sample_clients

__all__ = [
    "Checkpoint",
    "Coordinator",
    "CpuShare",
    "LocalTrainerPool",
    "RayTrainerPool",
    "RoundCallback",
    "RoundConfig",
    "RoundMetrics",
    "SecureOutcome",
    "Traffic",
    "TrainerActor",
    "TrainerHost",
    "TrainerPool",
    "TrainerSpec",
    "bound_cpu_share",
    "bound_thread",
    "call_bounded",
    "load_checkpoint",
    "sample_clients",
    "save_checkpoint",
    "trainer_env",
]
