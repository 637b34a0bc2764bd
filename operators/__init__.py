"""The operator contract and the operator library. Never imports Ray.

The contract: ``Message`` (what flows), ``Operator`` / ``Source`` / ``Sink``
(what runs), ``Context`` (what ``setup`` gets), ``QoS`` (message classes).
"""

from operators._arrow import messages_to_table, table_to_messages
from operators._errors import MalformedMessage, OperatorError, PayloadConversionError
from operators._message import PART_SPAN, EndOfStream, Lineage, Message, Meta
from operators._operator import (
    Context,
    Field,
    Metrics,
    NullMetrics,
    Operator,
    Outputs,
    Port,
    Resources,
    Sink,
    Source,
)
from operators._qos import QoS

__all__ = [
    "PART_SPAN",
    "Context",
    "EndOfStream",
    "Field",
    "Lineage",
    "MalformedMessage",
    "Message",
    "Meta",
    "Metrics",
    "NullMetrics",
    "Operator",
    "OperatorError",
    "Outputs",
    "PayloadConversionError",
    "Port",
    "QoS",
    "Resources",
    "Sink",
    "Source",
    "messages_to_table",
    "table_to_messages",
]
