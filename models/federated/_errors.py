"""Exceptions of federated training (the tree is in ``models._errors``)::

EdgerayError
└── FederatedError              a federated round, strategy or trainer refused its input
    ├── BadUpdate               a client's weights do not fit the global model
    └── NotEnoughClients        fewer clients answered (or exist) than a round needs
"""

from __future__ import annotations

from models._errors import EdgerayError


class FederatedError(EdgerayError):
    """A federated round, strategy or trainer refused its input; names the client when known."""

    def __init__(self, message: str, *, client: str | None = None) -> None:
        self.client = client
        super().__init__(message)


class BadUpdate(FederatedError):
    """A client's weights do not match the global model's layer count, shapes or dtypes."""


class NotEnoughClients(FederatedError):
    """Fewer clients are available, or answered in time, than the round's minimum."""
