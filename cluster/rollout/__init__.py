"""Rollout strategies: pure planners (observed replicas and metrics in, next actions out).

``Rolling``, ``BlueGreen``, ``Canary`` and ``ABTest`` decide; ``Gate`` judges a
candidate version's metrics against the baseline's; the runtime carries the
actions out through ``Executor`` (``pipelines._rollout``), and ``drive`` runs
the loop between them. A replica's version is ``ReplicaVersion``.
"""

from cluster._errors import RolloutError, RolloutRefused
from cluster.rollout._ab import ABTest
from cluster.rollout._actions import Action, Executor, Finish, Planner, Start, Stop, Switch, Wait
from cluster.rollout._blue_green import BlueGreen
from cluster.rollout._canary import Canary
from cluster.rollout._drive import drive
from cluster.rollout._gate import Gate, Promote, Rollback
from cluster.rollout._rolling import Rolling
from cluster.rollout._state import Observed, Slot, VersionMetrics
from cluster.rollout._version import ReplicaVersion

__all__ = [
    "ABTest",
    "Action",
    "BlueGreen",
    "Canary",
    "Executor",
    "Finish",
    "Gate",
    "Observed",
    "Planner",
    "Promote",
    "ReplicaVersion",
    "Rollback",
    "Rolling",
    "RolloutError",
    "RolloutRefused",
    "Slot",
    "Start",
    "Stop",
    "Switch",
    "VersionMetrics",
    "Wait",
    "drive",
]
