"""Exceptions about operators and the messages they exchange (tree in ``models._errors``)."""

from __future__ import annotations

from models import EdgerayError


class OperatorError(EdgerayError):
    """An operator misbehaved or was misused; carries the operator's name when known."""

    def __init__(self, message: str, *, operator: str | None = None) -> None:
        self.operator = operator
        super().__init__(f"operator {operator!r}: {message}" if operator else message)


class PayloadConversionError(OperatorError):
    """A payload field holds a value that has no lossless Arrow form."""

    def __init__(self, field: str, value: object, *, hint: str) -> None:
        self.field = field
        super().__init__(
            f"payload field {field!r} holds a {type(value).__name__}, which cannot be "
            f"converted to Arrow; {hint}"
        )


class MalformedMessage(OperatorError):
    """A message that breaks the contract (wrong type, missing field); dead-lettered."""
