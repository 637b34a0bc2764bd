"""Exceptions of the cluster layer (tree in ``models._errors``)."""

from __future__ import annotations

from models import EdgerayError


class FleetError(EdgerayError):
    """A fleet on this machine could not be started, found, reached or stopped."""


class FleetSpecError(FleetError):
    """A fleet spec file rejected before anything starts.

    ``path``, ``node`` and ``field`` say where; the message says what and how to fix it.
    """

    def __init__(
        self, path: str, problem: str, *, node: str | None = None, field: str | None = None
    ) -> None:
        self.path = path
        self.node = node
        self.field = field
        where = [f"fleet spec {path}"]
        if node is not None:
            where.append(f"node {node!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


class RolloutError(FleetError):
    """A rollout could not be started or carried out; names the pipeline and operator."""

    def __init__(self, message: str, *, pipeline: str | None = None, operator: str | None = None):
        self.pipeline = pipeline
        self.operator = operator
        where = "/".join(x for x in (pipeline, operator) if x)
        super().__init__(f"rollout of {where}: {message}" if where else message)


class RolloutRefused(RolloutError):
    """The new version was refused before any replica switched: the old one keeps serving."""
