"""The root of every exception edgeray raises.

It lives in ``models``, the bottom layer, so every layer can derive from it.
The whole tree::

    EdgerayError                      models          any error edgeray raises
    ├── ModelError                    models          a model file or session could not be used
    │   ├── NotAnOnnxModel            models          the file is missing or not an ONNX model
    │   └── SignatureMismatch         models          the model's input/output does not fit
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

import os


class EdgerayError(Exception):
    """Base class of all edgeray errors."""


class ModelError(EdgerayError):
    """A model file or inference session could not be used; names the file when known."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(message)


class NotAnOnnxModel(ModelError):
    """The model file is missing, unreadable or not an ONNX model."""


class SignatureMismatch(ModelError):
    """The model's input (or output) does not fit the signature an operator declares."""
