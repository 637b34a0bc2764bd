"""The root of every exception edgeray raises.

It lives in ``models``, the bottom layer, so every layer can derive from it.
The whole tree::

    EdgerayError                      models          any error edgeray raises
    ├── OperatorError                 operators       an operator or its messages
    │   ├── PayloadConversionError    operators       a payload field Arrow cannot hold
    │   └── MalformedMessage          operators       a message that breaks the contract
    ├── PipelineError                 pipelines       a pipeline definition
    │   ├── ValidationError           pipelines       a graph rejected before it runs
    │   └── PipelineFileError         pipelines       a pipeline file without build()
    ├── RuntimeFailure                pipelines       the Ray runtime could not run it
    └── FleetError                    cluster         a fleet spec or a fleet on this machine
        └── FleetSpecError            cluster         a spec file rejected before anything starts

Every message says what was wrong, where, and how to fix it.
"""

from __future__ import annotations


class EdgerayError(Exception):
    """Base class of all edgeray errors."""
