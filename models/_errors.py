"""The root of every exception edgeray raises.

It lives in ``models``, the bottom layer, so every layer can derive from it.
The whole tree::

    EdgerayError                      models          any error edgeray raises
    ├── ModelError                    models          a model file or session could not be used
    │   ├── NotAnOnnxModel            models          the file is missing or not an ONNX model
    │   └── SignatureMismatch         models          the model's input/output does not fit
    ├── RegistryError                 models          the model registry or a node's model cache
    │   ├── BadModelRef               models          a reference that is not NAME@VERSION|ALIAS
    │   ├── ModelNotFound             models          no such model, version or alias
    │   ├── AliasInUse                models          a version an alias still points at
    │   └── CorruptArtifact           models          bytes whose sha256 is not the manifest's
    ├── DatasetError                  models          a training / evaluation dataset unreadable
    ├── FederatedError                models          a federated round, strategy or trainer
    │   ├── BadUpdate                 models          a client's weights do not fit the model
    │   └── NotEnoughClients          models          fewer clients answered than a round needs
    ├── OperatorError                 operators       an operator or its messages
    │   ├── PayloadConversionError    operators       a payload field Arrow cannot hold
    │   └── MalformedMessage          operators       a message that breaks the contract
    ├── PipelineError                 pipelines       a pipeline definition
    │   ├── ValidationError           pipelines       a graph rejected before it runs
    │   └── PipelineFileError         pipelines       a pipeline file without build()
    ├── RuntimeFailure                pipelines       the Ray runtime could not run it
    └── FleetError                    cluster         a fleet spec or a fleet on this machine
        ├── FleetSpecError            cluster         a spec file rejected before anything starts
        └── RolloutError              cluster         a rollout could not start or carry on
            └── RolloutRefused        cluster         refused before any replica switched

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


class DatasetError(EdgerayError):
    """A dataset (e.g. a Parquet image dataset) is missing, or its columns do not fit."""


class RegistryError(EdgerayError):
    """The model registry (or a node's model cache) refused a request; names the reference."""

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        self.ref = ref
        super().__init__(message)


class BadModelRef(RegistryError, ValueError):
    """A model reference that is not ``NAME@VERSION`` or ``NAME@ALIAS`` (or a bad name)."""


class ModelNotFound(RegistryError):
    """The registry has no such model, version or alias."""


class AliasInUse(RegistryError):
    """A version cannot be removed while an alias points at it."""


class CorruptArtifact(RegistryError):
    """Stored (or fetched) model bytes whose sha256 is not the one in the manifest."""


class FederatedError(EdgerayError):
    """A federated round, strategy or trainer refused its input; names the client when known."""

    def __init__(self, message: str, *, client: str | None = None) -> None:
        self.client = client
        super().__init__(message)


class BadUpdate(FederatedError):
    """A client's weights do not match the global model's layer count, shapes or dtypes."""


class NotEnoughClients(FederatedError):
    """Fewer clients are available, or answered in time, than the round's minimum."""
