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
