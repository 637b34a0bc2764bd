"""Exceptions of rollouts (the tree is drawn in ``models._errors``).

``RolloutError`` is under ``FleetError`` (the cluster layer's root)::

    FleetError
    └── RolloutError          a rollout could not be started or carried out
        └── RolloutRefused    refused before any replica switched (the fleet stays as it was)
"""

from __future__ import annotations

from cluster._errors import FleetError


class RolloutError(FleetError):
    """A rollout could not be started or carried out; names the pipeline and operator."""

    def __init__(self, message: str, *, pipeline: str | None = None, operator: str | None = None):
        self.pipeline = pipeline
        self.operator = operator
        where = "/".join(x for x in (pipeline, operator) if x)
        super().__init__(f"rollout of {where}: {message}" if where else message)


class RolloutRefused(RolloutError):
    """The new version was refused before any replica switched: the old one keeps serving."""
